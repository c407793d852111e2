#!/usr/bin/env bash
# Set up edgeprune on this machine, then run the pipeline with this machine as the board
# (--target local): export the original MobileNetV2 (real ImageNet weights), prune 30 % of
# its channels aligned to the board, export the pruned model with accuracy checks, and
# measure both on the board with the on-device agent. Results land in edgeprune-out/.
#
# `edgeprune deploy` (fine-tuning, quantization and shipping in one command) is not built
# yet: until it is, this runs the stages one by one, as you would by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT="${EDGEPRUNE_OUT:-edgeprune-out}"
MODEL="${EDGEPRUNE_MODEL:-mobilenetv2}"
rm -rf "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "The board: this machine, figures measured and cached" \
  edgeprune targets show local
step "Export the original model for the board (ONNX fp32), checked against PyTorch" \
  edgeprune export --target local --model "$MODEL" --output "$OUT/original"
step "Prune 30 % of the channels, counts aligned to the board" \
  edgeprune prune --target local --model "$MODEL" --ratio 0.3 --output "$OUT/pruned"
step "Export the pruned model, checked against PyTorch and against the original" \
  edgeprune export --target local --model "$OUT/pruned/model.ept" --output "$OUT/export"
step "Measure the original on the board" \
  edgeprune bench --target local "$OUT/original/$MODEL.fp32.onnx"
step "Measure the pruned model on the board" \
  edgeprune bench --target local "$OUT/export/$MODEL.fp32.onnx"
printf '\nDone. Artifacts, reports (report.md) and JSON (export.json, summary.json) are in %s/.\n' "$OUT"
