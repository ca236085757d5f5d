"""Measurement: LV landmarks, method-of-disks volumes, EF, the CAMUS-compatible method.

Pure functions on label arrays and spacings: nothing here reads files or imports torch.
"""
