#!/usr/bin/env bash
# Install calibclip with everything its tests and demo use, on a fresh machine, offline-safe:
# torch 2.13.0 CPU comes from the local wheel cache of this machine kind (pip finds it by version).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check torch==2.13.0
python3 -m pip install --quiet --disable-pip-version-check -e ".[serve,test]"
