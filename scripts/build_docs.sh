#!/usr/bin/env bash
# Build the Python API reference (pdoc, from the docstrings) into ${1:-build/api}; fails if an entry point is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/build_docs.py "$@"
