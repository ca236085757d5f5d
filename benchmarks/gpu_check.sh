#!/usr/bin/env bash
# GPU check, two parts, under 8 minutes on one GPU node:
#   1. benchmarks/gpu_check.py: CUDA labels == CPU labels on the bundled sample, and model-only
#      images/s (G) for batches 1-512 (bf16 only unless GPU_CHECK_PRECISIONS says otherwise).
#   2. benchmarks/gpu_check_e2e.py (issue 16): CPU cost per image on one core, the CPU-side
#      ceiling with a zero-latency device on the CPU workers (C), `echo-batch run --device cuda`
#      on 10,000 synthetic patients and on the bundled sample repeated to 2,000 (E), the
#      processes holding a CUDA context, and the flow's labels against the fused `--serial` run.
#
# Usage: benchmarks/gpu_check.sh [OUT_DIR]     (default OUT_DIR: benchmarks/results)
#        GPU_CHECK_PART=1|2 runs one part; GPU_CHECK_E2E_ARGS adds arguments to part 2
#        (e.g. "--synthetic 2000 --synth-base 200" for a shorter run).
# Needs a CUDA GPU and a CUDA build of torch. Part 1 installs only OpenCV, SciPy and
# scikit-image when missing; part 2 needs echo-batch installed with its dependencies (Prefect,
# Dask, SimpleITK...): it runs `pip install -e .` (an existing torch in range is kept) when they
# are missing, and is skipped with a message when that fails (e.g. no package index reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${1:-benchmarks/results}"
PART="${GPU_CHECK_PART:-all}"
PRECISIONS="${GPU_CHECK_PRECISIONS:-bf16}"

# Never create a CUDA context here (nvidia-smi, not torch): part 2 counts the processes holding one.
nvidia-smi --query-gpu=name --format=csv,noheader \
    || { echo "gpu_check: no NVIDIA GPU visible (nvidia-smi)" >&2; exit 2; }
"$PY" -c "import torch; assert torch.version.cuda and torch.cuda.device_count(), 'no CUDA torch'" \
    || { echo "gpu_check: torch with CUDA is required" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT_DIR"
started=$SECONDS

if [[ "$PART" == all || "$PART" == 1 ]]; then
    if ! "$PY" -c "import cv2, numpy, scipy, skimage" 2>/dev/null; then
        "$PY" -m pip install --quiet opencv-python-headless numpy scipy scikit-image
    fi
    # Part 1 imports only the reader, the engine and the metrics: no Prefect or Dask needed.
    timeout 150 "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --precisions "$PRECISIONS" \
        --seconds 1.0
    echo "gpu_check: part 1 took $((SECONDS - started)) s"
fi

if [[ "$PART" == all || "$PART" == 2 ]]; then
    if ! "$PY" -c "import echo_batch.cli, flows.cohort_ef, distributed, prefect, SimpleITK" \
        2>/dev/null; then
        "$PY" -m pip install --quiet -e . \
            || { echo "gpu_check: part 2 skipped: cannot install echo-batch's dependencies" >&2
                 exit 0; }
    fi
    left=$((470 - (SECONDS - started)))
    # shellcheck disable=SC2086  # GPU_CHECK_E2E_ARGS is a list of arguments
    timeout "$left" "$PY" benchmarks/gpu_check_e2e.py --out "$OUT_DIR" --device cuda \
        --work "${GPU_CHECK_WORK:-build/gpu-e2e}" ${GPU_CHECK_E2E_ARGS:-}
    echo "gpu_check: both parts took $((SECONDS - started)) s"
fi
