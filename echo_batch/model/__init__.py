"""U-Net segmentation: architecture, bundle, training and inference."""
