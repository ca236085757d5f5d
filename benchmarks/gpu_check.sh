#!/usr/bin/env bash
# GPU check: CUDA labels == CPU labels on the bundled sample, and images/s for batches 1-512.
#
# Usage: benchmarks/gpu_check.sh [OUT_DIR]     (default OUT_DIR: benchmarks/results)
# Needs a CUDA GPU and a CUDA build of torch. Installs the project (without touching an existing
# torch) when echo_batch's runtime needs are missing. Takes about 2-4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${1:-benchmarks/results}"

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
    || { echo "gpu_check: torch with CUDA is required" >&2; exit 2; }
if ! "$PY" -c "import cv2, numpy, scipy, skimage" 2>/dev/null; then
    "$PY" -m pip install --quiet opencv-python-headless numpy scipy scikit-image
fi
# The check imports only the reader, the engine and the metrics: no Prefect or Dask needed.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout 480 "$PY" benchmarks/gpu_check.py --out "$OUT_DIR"
