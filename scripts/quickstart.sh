#!/usr/bin/env bash
# Set up edgeprune on this machine, then run the main job with this machine as the board:
#
#   edgeprune deploy --target local --model MODEL --speedup S ...
#
# which measures the unpruned model on the board (the on-device agent), prunes it to a latency
# budget measured there (closed loop), fine-tunes it by distillation from the original on real
# labelled data, quantizes and exports it, gates it on accuracy measured on held-out images the
# fine-tuning never saw (at most 1 point of top-1 below the original), measures the result on the
# board beside the unpruned one, ships it as a release (sha256, on-board check, atomic switch),
# and writes a report (edgeprune-out/report/report.html, deploy.json, report.md).
#
# The model: fmnist-cnn, a small CNN for Fashion-MNIST (28 px, 11 M MACs) that trains on first use in
# about a minute (87 % top-1 on the 10,000 held-out test images), deployed as full-INT8 TFLite (LiteRT,
# one thread), what a Raspberry Pi or a phone runs.
# EDGEPRUNE_MODEL (e.g. mobilenetv2-fmnist once python benchmarks/train_reference.py has trained it,
# ~30 min on 2 cores) / EDGEPRUNE_DATA / EDGEPRUNE_OUT choose others.
# Run it again: every completed stage is reused (run.json), nothing is measured twice.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT="${EDGEPRUNE_OUT:-edgeprune-out}"
if [ -n "${EDGEPRUNE_MODEL:-}" ]; then
  MODEL="$EDGEPRUNE_MODEL"; ARGS=(--speedup 1.5)
  [ -z "${EDGEPRUNE_DATA:-}" ] || ARGS+=(--data "$EDGEPRUNE_DATA")
else
  MODEL=fmnist-cnn; ARGS=(--speedup 1.5 --format tflite --precision int8 --threads 1 --time-budget 2)
fi

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "The board: this machine, its figures measured and cached" \
  edgeprune targets show local
step "Deploy: measure, prune to a budget measured on the board, fine-tune, quantize, gate, ship, report" \
  edgeprune deploy --target local --model "$MODEL" "${ARGS[@]}" --output "$OUT"
step "The releases on the board (the previous ones are kept for rollback)" \
  edgeprune releases --target local
printf '\nDone. Open %s/report/report.html; the stages are in %s/<stage>/, their record in %s/run.json.\n' "$OUT" "$OUT" "$OUT"
