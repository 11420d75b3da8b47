#!/usr/bin/env bash
# Install calibclip with everything its tests and demo use, on a fresh machine, offline-safe:
# torch 2.13.0 CPU comes from the local wheel cache of this machine kind (pip finds it by version).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check torch==2.13.0
python3 -m pip install --quiet --disable-pip-version-check -e ".[serve,ray,test]"
# The browser tests drive Debian's chromium through playwright (never `playwright install`: no download).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
    || echo "note: could not apt-get install chromium; the browser tests will be skipped" >&2
fi
