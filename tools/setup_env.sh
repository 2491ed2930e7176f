#!/usr/bin/env bash
# Idempotent set-up into a project-local virtual environment.
#   bash tools/setup_env.sh [VENV_DIR]        (default: .venv)
# Installs the registry's torch 2.13.0 + torchvision 0.28.0 pair (the wheels a GPU user gets; they
# run on CPU too, and torchvision makes mmpretrain and `torchvision://` checkpoints work), then
# mmcv 2.1.0 built with its ops against exactly that torch, then the OpenMMLab stack and every extra
# at the versions requirements/constraints.txt pins (the tested set).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
# `===` selects the registry's build of 2.13.0; `==2.13.0` would resolve to a local CPU-only
# `+cpu` wheel beside which torchvision's extension cannot load.
TORCH_SPEC=${TORCH_SPEC:-torch===2.13.0 torchvision==0.28.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip"
$PIP install -q --upgrade pip
# shellcheck disable=SC2086
$PIP install -q $TORCH_SPEC -r requirements/build.txt

# mmcv's compiled ops must match the torch they run with. pip caches a source-built wheel under
# the sdist's name whatever torch it was built for, so we build our own wheel into a folder keyed
# by the torch build and install from there.
TORCH_KEY=$("$PY" -c "import torch; print(f'{torch.__version__}-cuda{torch.version.cuda}')")
WHEELS=${MSLORA_WHEEL_CACHE:-$HOME/.cache/mslora-mm/wheels}/mmcv-2.1.0-torch-$TORCH_KEY
MARKER="$VENV/.mmcv-built-for"
if [ "$(cat "$MARKER" 2>/dev/null)" != "$TORCH_KEY" ] || ! "$PY" -c "import mmcv.ops" 2>/dev/null; then
  if ! ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    echo "Building mmcv 2.1.0 with ops against torch $TORCH_KEY (about 12 minutes on 2 cores, once)"
    mkdir -p "$WHEELS"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP wheel -q --no-cache-dir --no-build-isolation \
      --no-deps -w "$WHEELS" mmcv==2.1.0
  fi
  $PIP install -q --force-reinstall --no-deps "$WHEELS"/mmcv-2.1.0-*.whl
  $PIP install -q mmcv==2.1.0 --find-links "$WHEELS"   # its pure-Python dependencies
  echo "$TORCH_KEY" > "$MARKER"
fi
# the package's requirements and every extra's (setup.py reads the same files), at exactly the
# tested versions (requirements/constraints.txt)
$PIP install -q -c requirements/constraints.txt -r requirements/runtime.txt \
  -r requirements/seg.txt -r requirements/cls.txt -r requirements/peers.txt \
  -r requirements/demo.txt -r requirements/tests.txt --find-links "$WHEELS"
# OpenMMLab's `mim` CLI without its dataset downloader (opendatalab pins
# setuptools 60, which torch >= 2.6 refuses); its other dependencies are in
# requirements/tests.txt
$PIP install -q --no-deps openmim==0.3.9
$PIP install -q --no-build-isolation --no-deps -e .
# the native CPU kernel, built once here (cached under ~/.cache/torch_extensions)
# instead of in the first process of every test worker
"$PY" -c "from mslora_mm.core.ops.native import kernel_available; print('MSLoRA CPU kernel:', 'built' if kernel_available() else 'not available (PyTorch layers are used)')"
"$PY" -c "import torch, torchvision, mmcv, mmcv.ops, mmdet, mmpretrain.models, mmseg.models, peft, mslora_mm; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmpretrain', mmpretrain.__version__, '| mmseg', __import__('mmseg').__version__, '| mslora_mm', mslora_mm.__version__)"
