#!/usr/bin/env bash
# One command to set up betterdepth in ./.venv and run the main job offline:
#   ./install.sh            # install, then refine examples/ with the embedded default model into out/
#   ./install.sh --no-demo  # install only
# torch is installed first as the CPU build (torch==2.13.0; on a GPU machine
# install your CUDA build of torch>=2.3 first and this script keeps it).
set -euo pipefail
cd "$(dirname "$0")"
demo=1
[ "${1:-}" = "--no-demo" ] && demo=0

# open3d (export-ply, synth) needs the system library libusb-1.0: install it when we can, else stop and say how
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "install: installing libusb-1.0 (needed by open3d) with apt-get" >&2
    (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) >/dev/null
  elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then
    echo "install: installing libusb-1.0 (needed by open3d): sudo apt-get install -y libusb-1.0-0" >&2
    sudo apt-get install -y -qq libusb-1.0-0 >/dev/null
  fi
  if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    echo "install: open3d needs the system library libusb-1.0; install it, then run ./install.sh again:" >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y libusb-1.0-0   Fedora: sudo dnf install -y libusb1   macOS: brew install libusb" >&2
    exit 1
  fi
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
echo "install: betterdepth $(python -c 'import betterdepth_cli; print(betterdepth_cli.__version__)') in $(pwd)/.venv"

if [ "$demo" = 1 ]; then
  HF_HUB_OFFLINE=1 betterdepth refine examples/ -o out/ --format png16,preview
  echo "install: refined depth maps are in out/ (16-bit PNG + JSON sidecar + preview)"
fi
