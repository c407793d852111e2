"""Train the reference detector on ``fmnist-det`` with Ultralytics' own loss; called by train_reference.py.

    python benchmarks/train_reference.py --model yolov8n-fmnist-det          # about 30 min on 2 idle CPU cores
    python benchmarks/train_reference.py --model yolov8n-fmnist-det --quick  # a smoke run, nothing cached

Recipe (deterministic: fixed seeds, fixed batch order):

- architecture: Ultralytics' ``yolov8n.yaml`` with 10 classes, from a seeded random init (no pretrained
  weights install offline), input 160x160 (letterboxed, RGB / 255);
- data: the built-in ``fmnist-det`` (semi-synthetic, see edgeprune/data/fmnist_det.py): train 4,000 images,
  val 500 (checkpoint choice), test 1,000 (reported; backgrounds and garments never seen in training);
- loss: the model's own ``v8DetectionLoss`` (via :func:`edgeprune.tasks.detect_loss.train_step`, gains
  box 7.5, cls 0.5, dfl 1.5); augmentation: horizontal flips and shifts (boxes moved with the pixels);
- optimiser: AdamW lr 0.002 (Ultralytics' choice for short runs is AdamW too), betas (0.9, 0.999), weight
  decay 5e-4 on weights only, batch 32, one epoch of linear warm-up, then cosine to 1 % of lr;
- Ultralytics' ``ModelEMA`` of the weights (tau 500 steps: a short run); the EMA is what is evaluated,
  kept and cached; mAP50-95 by pycocotools on val after each epoch of the second half (the first
  half's are never the best, and an untrained model's 300 boxes per image make COCOeval slow), the best kept.

Checkpoints go to ``<cache>/train-NAME/last.pt`` after each epoch: the same command resumes.
"""

from __future__ import annotations

import io
import json
import math
import time

INPUT_SIZE = 160
RECIPE = {"epochs": 6, "batch_size": 32, "lr": 0.002, "weight_decay": 5e-4, "warmup_epochs": 1.0,
          "final_lr_fraction": 0.01, "augment": "flip+shift", "ema_tau": 500, "seed": 0}


def _param_groups(model, weight_decay: float):
    import torch

    decay, no_decay = [], []
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if (name == "bias" or isinstance(m, torch.nn.modules.batchnorm._BatchNorm)) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _save(ckpt_dir, last, key, epoch, model, ev, ema, opt, history, best) -> None:
    import torch

    from edgeprune._paths import atomic_write_bytes

    if ckpt_dir is None:
        return
    buf = io.BytesIO()
    torch.save({"key": key, "epoch": epoch + 1, "model": model.state_dict(), "ema": ev.state_dict(),
                "ema_updates": int(ema.updates), "opt": opt.state_dict(), "history": json.dumps(history),
                "best_map": best["map50_95"], "best_epoch": best["epoch"], "best_state": best["state"]}, buf)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(last, buf.getvalue())


def train_detector(name: str, *, epochs: int | None, limit: int | None, threads: int | None, cache: bool) -> dict:
    import torch

    from edgeprune._paths import cache_dir
    from edgeprune.models import build, model_info
    from edgeprune.models.reference import save_trained
    from edgeprune.models.ultra import import_ultralytics
    from edgeprune.tasks.detect_data import open_detection
    from edgeprune.tasks.detect_eval import evaluate
    from edgeprune.tasks.detect_loss import end_epoch, prepare_supervised, train_step

    if threads:
        torch.set_num_threads(threads)
    info = model_info(name)
    r = dict(RECIPE, epochs=epochs or RECIPE["epochs"])
    split = open_detection(info.data.dataset, input_shape=info.input_shape, num_classes=10, limit=limit)
    torch.manual_seed(r["seed"])
    model = build(name, pretrained=False)
    prepare_supervised(model, epochs=r["epochs"])
    ema_mod = import_ultralytics("ultralytics.utils.torch_utils")  # heavy: ultralytics
    ema = ema_mod.ModelEMA(model, tau=r["ema_tau"])
    opt = torch.optim.AdamW(_param_groups(model, r["weight_decay"]), lr=r["lr"], betas=(0.9, 0.999))
    steps_per_epoch = math.ceil(len(split.train) / r["batch_size"])
    total = steps_per_epoch * r["epochs"]
    warm = max(1, int(r["warmup_epochs"] * steps_per_epoch))

    def lr_at(step: int) -> float:
        if step < warm:
            return r["lr"] * (step + 1) / warm
        p = (step - warm) / max(1, total - warm)
        f = r["final_lr_fraction"]
        return r["lr"] * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * p)))

    ckpt_dir = None if limit else cache_dir() / f"train-{name}"
    key = json.dumps({"name": name, "recipe": r}, sort_keys=True)
    start_epoch, history, best = 0, [], {"map50_95": -1.0, "epoch": 0, "state": None}
    last = ckpt_dir / "last.pt" if ckpt_dir else None
    if last is not None and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        if ck.get("key") == key:
            model.load_state_dict(ck["model"])
            ema.ema.load_state_dict(ck["ema"])
            ema.updates = int(ck["ema_updates"])
            opt.load_state_dict(ck["opt"])
            start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
            best = {"map50_95": float(ck["best_map"]), "epoch": int(ck["best_epoch"]), "state": ck["best_state"]}
            print(f"  {name}: resumed after epoch {start_epoch} from {last}", flush=True)
    t_train, images = 0.0, 0
    for epoch in range(start_epoch, r["epochs"]):
        model.train()
        t0 = time.time()
        for b, (x, t) in enumerate(split.train.batches(r["batch_size"], shuffle=True, seed=r["seed"] * 1000 + epoch,
                                                       augment=r["augment"])):
            step = epoch * steps_per_epoch + b
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss, items = train_step(model, (x, t), num_classes=10)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)  # Ultralytics clips at 10 too
            opt.step()
            ema.update(model)
            images += x.shape[0]
            if b % 25 == 0:
                el = t_train + time.time() - t0
                print(f"  {name}: epoch {epoch + 1} step {b}/{steps_per_epoch} loss {items['loss']:.3f} "
                      f"({', '.join(f'{k} {v:.2f}' for k, v in items.items() if k != 'loss')}) "
                      f"{images / max(el, 1e-9):.1f} img/s", flush=True)
        t_train += time.time() - t0
        end_epoch(model)
        ev = ema.ema.eval()
        if epoch + 1 <= r["epochs"] // 2 and not limit:  # early epochs are never the best: skip their (slow) val
            history.append({"epoch": epoch + 1, "train_s": round(time.time() - t0, 1)})
            print(f"  {name}: epoch {epoch + 1} done ({time.time() - t0:.0f} s)", flush=True)
            _save(ckpt_dir, last, key, epoch, model, ev, ema, opt, history, best)
            continue
        val = evaluate(lambda x, m=ev: m(x), split.val)
        history.append({"epoch": epoch + 1, "val_map50_95": round(val["map50_95"], 4), "val_map50": round(val["map50"], 4),
                        "train_s": round(time.time() - t0, 1)})
        print(f"  {name}: epoch {epoch + 1}: val mAP50-95 {val['map50_95']:.4f} mAP50 {val['map50']:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
        if val["map50_95"] >= best["map50_95"]:
            best = {"map50_95": val["map50_95"], "epoch": epoch + 1,
                    "state": {k: v.detach().clone() for k, v in ev.state_dict().items()}}
        _save(ckpt_dir, last, key, epoch, model, ev, ema, opt, history, best)
    final = build(name, pretrained=False)
    final.load_state_dict(best["state"])
    final.eval()
    test = evaluate(lambda x: final(x), split.test)
    record = {
        "model": name, "dataset": info.data.dataset, "input_shape": list(info.input_shape),
        "test_map50_95": round(test["map50_95"], 4), "test_map50": round(test["map50"], 4),
        "test_samples": test["images"], "test_boxes": test["boxes"],
        "val_map50_95_best": round(best["map50_95"], 4), "best_epoch": best["epoch"], "epochs": r["epochs"],
        "history": history, "split": split.to_dict(), "recipe": r, "metric": test["library"], "nms": test["nms"],
        "train_images_per_s": round(images / t_train, 1) if t_train else None,
        "start": "seeded random init (Ultralytics yolov8n.yaml, nc=10)",
        "command": "python benchmarks/train_reference.py --model " + name + (f" --epochs {epochs}" if epochs else ""),
        "trained": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    print(f"{name}: test mAP50-95 {test['map50_95']:.4f}, mAP50 {test['map50']:.4f} on {test['images']} held-out "
          f"images ({record['train_images_per_s']} img/s training)", flush=True)
    if cache:
        print(f"  cached: {save_trained(final, name, record)}")
    return record


def write_results(names) -> None:
    """RESULTS.md#reference-detector: the cached records of the trained detectors."""
    from benchmarks._results import machine_line, write_section
    from edgeprune.models.reference import record

    rows = [r for r in (record(n) for n in names) if r]
    if not rows:
        return
    lines = ["## Reference detector trained on fmnist-det (semi-synthetic)", "",
             "Command beside each row (weights cached in edgeprune's cache folder; `edgeprune models` lists the "
             "test mAP50-95). mAP by pycocotools' COCOeval on the fixed held-out test split (1,000 images whose "
             "backgrounds and garments were never trained on nor used to choose the checkpoint); NMS as "
             "Ultralytics' validator (conf 0.001, IoU 0.7, 300 per image). fmnist-det is semi-synthetic "
             "(Fashion-MNIST garments composited on real photographs, see edgeprune/data/fmnist_det.py): these "
             "figures say the detector works, not how it would do on camera images.", "",
             f"Machine: {machine_line()} (shared with other jobs while training: the load average was 5-10 on "
             "2 cores, so wall time is not this recipe's cost on an idle machine)", "",
             "| model | input | recipe | epochs (best) | val mAP50-95 | **test mAP50-95** | test mAP50 | "
             "train img/s | command |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        shape = "x".join(map(str, r["input_shape"]))
        rec = r["recipe"]
        lines.append(f"| {r['model']} | {shape} | AdamW {rec['lr']}, batch {rec['batch_size']}, {rec['augment']}, "
                     f"EMA; Ultralytics' v8DetectionLoss | {r['epochs']} ({r['best_epoch']}) | "
                     f"{r['val_map50_95_best']:.4f} | **{r['test_map50_95']:.4f}** | {r['test_map50']:.4f} | "
                     f"{r['train_images_per_s']} | `{r['command']}` |")
    for r in rows:
        if r.get("test_map50_95_opencv_nms") is not None:
            lines += ["", f"{r['model']}: with OpenCV's NMS instead of Ultralytics' the test mAP50-95 is "
                          f"{r['test_map50_95_opencv_nms']:.4f} (the same detections up to ties)."]
        if r.get("note"):
            lines += ["", f"{r['model']}: {r['note']}."]
    from edgeprune.data.fmnist_det import folder

    try:
        info = json.loads((folder() / "info.json").read_text())
        lines += ["", f"Data: fmnist-det {info['version']} (seed {info['seed']}): {info['counts']} images, "
                      f"{info['boxes']} boxes; content sha256 `{info['content_sha256']}` "
                      "(`python -m edgeprune.data.fmnist_det generate` rebuilds it; `check` verifies every file)."]
    except (OSError, ValueError, KeyError):
        pass
    write_section("reference-detector", "\n".join(lines))
