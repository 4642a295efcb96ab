#!/usr/bin/env bash
# Fetch the wheels that benchmarks/gpu_check.sh installs on the GPU machine, which has no network and no
# librosa/soundfile: Python 3.12, manylinux x86_64, no dependencies resolved (the machine already has numpy,
# scipy, numba, scikit-learn, joblib, msgpack, lazy-loader, requests, packaging and typing-extensions, and
# torch/torchvision/torch-geometric must stay as they are there).
#
#   bash benchmarks/fetch_gpu_wheels.sh [DEST]        # default DEST: build/wheels (git-ignored)
#
# DEST/runtime: librosa and soundfile (versions from requirements.txt) and what they need that the machine
# lacks; DEST/pytest: pytest and its dependencies, installed there only when `import pytest` fails.
# The folder is emptied first: two versions of one package would stop the install.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-build/wheels}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in .venv/bin/python python3; do
    if "$candidate" -m pip --version >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "no python with pip found; set PYTHON" >&2; exit 1; }

pinned() {  # the version requirements.txt pins for package $1
  sed -n "s/^$1==\([^ ]*\).*/\1/p" requirements.txt
}

# Dependencies absent from the GPU machine's image (see /work/.library/device/KINDS.md), pinned to the
# versions this project's venv resolves.
RUNTIME=(
  "librosa==$(pinned librosa)"
  "soundfile==$(pinned soundfile)"
  audioread==3.1.0
  cffi==2.1.1
  pycparser==3.12
  decorator==5.3.1
  pooch==1.9.0
  platformdirs==4.14.8
  soxr==1.1.0
)
PYTEST=(pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 packaging==26.4)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64)

download() {  # download DIR PACKAGE...
  local dir=$1
  shift
  rm -rf "$dir"
  mkdir -p "$dir"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]/#/--platform=}" -d "$dir" "$@"
}

download "$DEST/runtime" "${RUNTIME[@]}"
download "$DEST/pytest" "${PYTEST[@]}"
ls -l "$DEST/runtime" "$DEST/pytest"
du -sh "$DEST"
