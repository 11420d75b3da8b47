#!/usr/bin/env bash
# The GPU path, measured: random-weight ViT-B/16 and ViT-L/14 CLIPs (exact configs, no download), the
# cuda-marked tests, and every figure as a ratio against the plain transformers loop in the same run.
# Needs no network. Writes device_check.json + device_check.md to --out (default results/device_check).
#
#   bash scripts/device_check.sh                         # on the GPU machine, ~5 min on one GPU
#   bash scripts/device_check.sh --device cuda:1 --out /tmp/dc
#   bash scripts/device_check.sh --device cpu --small    # the seconds-long CPU mode the test suite runs
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# device_check.py puts src/ first on its sys.path and on the PYTHONPATH of the cuda-test subprocess
exec python3 benchmarks/device_check.py "$@"
