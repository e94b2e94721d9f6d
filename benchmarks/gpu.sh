#!/usr/bin/env bash
# The real-shape benchmark of issue 12 on a CUDA machine: full depth (whisper-large-v3 + Q-Former /
# conv adapter + LLaDA-8B, and the Llama-3-8B-shaped AR baseline), bf16, random weights; one LoRA
# training step at batch 4, decode RTF per mode at batch 1 and 16. Writes docs/gpu_benchmark.md.
#   bash benchmarks/gpu.sh [more flags of benchmarks/gpu.py, e.g. --repeats 3]
# It needs a CUDA build of torch==2.13.0 (requirements.txt pins the CPU one):
#   PYTHON=/path/to/cuda/venv/bin/python bash benchmarks/gpu.sh
# On an H200 the default run is estimated at 6-8 minutes (two repeats and a warm-up per row).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to this torch: see the header of benchmarks/gpu.sh")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" benchmarks/gpu.py --device cuda --repeats 2 --out docs/gpu_benchmark.md "$@"
