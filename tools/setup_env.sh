#!/usr/bin/env bash
# Idempotent CPU set-up into a project-local virtual environment.
#   bash tools/setup_env.sh [VENV_DIR]        (default: .venv)
# GPU users: see README.md "Install" (CUDA torch + mmcv with CUDA ops).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q torch==2.13.0 -r requirements/build.txt
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  echo "Building mmcv 2.1.0 with ops (about 12 minutes on 2 cores; pip caches the wheel)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation mmcv==2.1.0
fi
$PIP install -q -r requirements/runtime.txt -r requirements/tests.txt
$PIP install -q --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import torch, mmcv, mmdet, mslora_mm; print('torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mslora_mm', mslora_mm.__version__)"
