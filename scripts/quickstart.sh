#!/usr/bin/env bash
# Set up edgeprune on this machine, then run the whole job with this machine as the board
# (--target local), on real labelled data, with accuracy measured at every stage on images
# that fine-tuning never saw:
#   1. export the original model, with its accuracy on the held-out test split;
#   2. prune 30 % of its channels, aligned to the board (accuracy before and after);
#   3. fine-tune the pruned model by distillation from the original (edgeprune finetune);
#   4. export the fine-tuned model, failing if it is more than 1.5 points below the original;
#   5. measure the original and the final model on the board with the on-device agent.
# The model: mobilenetv2-fmnist (Fashion-MNIST, 64 px) when its trained weights are cached
# (python benchmarks/train_reference.py), else digits-cnn on scikit-learn's digits (seconds).
# EDGEPRUNE_MODEL / EDGEPRUNE_DATA choose others. Results land in edgeprune-out/.
#
# `edgeprune deploy` (all of this in one command) is not built yet: until it is, this runs the
# stages one by one, as you would by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT="${EDGEPRUNE_OUT:-edgeprune-out}"
if [ -z "${EDGEPRUNE_MODEL:-}" ] && python -c "import sys; from edgeprune.models import pretrained_available; from edgeprune.data import available; sys.exit(0 if pretrained_available('mobilenetv2-fmnist') and available('fashion-mnist') else 1)"; then
  MODEL=mobilenetv2-fmnist; DATA=fashion-mnist; TUNE=(--time-budget 5)
else
  MODEL="${EDGEPRUNE_MODEL:-digits-cnn}"; DATA="${EDGEPRUNE_DATA:-digits}"; TUNE=(--epochs 3)
  [ -n "${EDGEPRUNE_MODEL:-}" ] || echo "quickstart: mobilenetv2-fmnist is not trained here (python benchmarks/train_reference.py, ~30 min): using digits-cnn"
fi
rm -rf "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "The board: this machine, figures measured and cached" \
  edgeprune targets show local
step "Export the original model for the board (ONNX fp32), with its accuracy on held-out data" \
  edgeprune export --target local --model "$MODEL" --data "$DATA" --output "$OUT/original"
step "Prune 30 % of the channels, counts aligned to the board (accuracy before and after)" \
  edgeprune prune --target local --model "$MODEL" --data "$DATA" --ratio 0.3 --output "$OUT/pruned"
step "Fine-tune the pruned model: distillation from the original, early stopping, checkpoints" \
  edgeprune finetune --model "$OUT/pruned/model.ept" --data "$DATA" "${TUNE[@]}" --output "$OUT/finetuned"
step "Export the fine-tuned model, checked against PyTorch and the original; fail beyond 1.5 points" \
  edgeprune export --target local --model "$OUT/finetuned/model.ept" --data "$DATA" --max-accuracy-drop 1.5 --output "$OUT/export"
step "Measure the original on the board" \
  edgeprune bench --target local "$OUT/original/$MODEL.fp32.onnx"
step "Measure the pruned, fine-tuned model on the board" \
  edgeprune bench --target local "$OUT/export/$MODEL.fp32.onnx"
printf '\nDone. Artifacts, reports (report.md) and JSON (export.json, finetune.json, summary.json) are in %s/.\n' "$OUT"
