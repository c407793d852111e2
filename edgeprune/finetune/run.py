"""``finetune_model``: load, measure, recalibrate, distil, measure, write (see :mod:`edgeprune.finetune`)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeprune.errors import EdgePruneError, ModelError

BN_BATCHES = 50


def _device(device: str) -> str:
    import torch

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EdgePruneError(f"--device {device}: use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EdgePruneError(f"--device {device}: no CUDA GPU here (torch.cuda.is_available() is False); "
                             "use --device cpu")
    return device


def _student(model):
    from edgeprune.load import load_model

    lm = load_model(str(model)) if isinstance(model, (str, os.PathLike)) else model
    if getattr(lm, "plan", None) is None:
        raise ModelError(f"{getattr(lm, 'source', model)}: not a pruned model; finetune takes the model.ept "
                         "that edgeprune prune wrote")
    return lm


def _teacher(lm, teacher) -> tuple[Any, str]:
    """The unpruned original: ``teacher`` if given, else the base with its built-in trained weights."""
    import torch

    from edgeprune.load import load_model
    from edgeprune.models import _REGISTRY, pretrained_available
    from edgeprune.models.loading import build_base

    shape = tuple(lm.input_shape)
    if teacher is not None:
        if isinstance(teacher, (str, os.PathLike)):
            spec = str(teacher)
            t = load_model(spec, input_shape=None if spec in _REGISTRY else shape)
        else:
            t, spec = teacher, str(getattr(teacher, "source", teacher))
        try:
            with torch.no_grad():
                t.module.eval()(torch.zeros(*shape))
        except Exception:
            raise ModelError(f"--teacher {spec}: it takes input {tuple(t.input_shape)}, the pruned model "
                             f"{shape}; give the original the model was pruned from") from None
        return t, str(getattr(t, "source", spec))
    base = str(lm.base)
    if ":" not in base and pretrained_available(base):
        return build_base(base, pretrained=True, input_shape=shape), f"builtin:{base} (trained weights)"
    return None, ""


def _num_classes(module, input_shape) -> int | None:
    import torch

    with torch.no_grad():
        out = module.eval()(torch.zeros(1, *tuple(input_shape)[1:]))
    first = out[0] if isinstance(out, (tuple, list)) else out
    return int(first.shape[1]) if first.ndim == 2 else None


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def finetune_model(
    model: Any,
    *,
    data: Any,
    output: str | os.PathLike[str],
    teacher: Any = None,
    epochs: int | None = None,
    steps: int | None = None,
    time_budget: float | None = None,
    device: str = "cpu",
    lr: float | None = None,
    optimizer: str = "sgd",
    batch_size: int = 64,
    temperature: float = 4.0,
    alpha: float = 0.9,
    patience: int = 3,
    augment: str | None = None,
    val_data: Any = None,
    val_fraction: float = 0.1,
    normalize: Any = None,
    seed: int = 0,
    limit: int | None = None,
    max_accuracy_drop: float | None = None,
    threads: int | None = None,
    on_event: Callable[[str, dict], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the pruned ``model`` (an ``.ept`` path or LoadedModel) on ``data``; returns finetune.json's dict.

    ``time_budget`` is in minutes. Raises :class:`~edgeprune.accuracy.AccuracyDropError`
    (after writing everything) when the fine-tuned model is more than
    ``max_accuracy_drop`` points below the original.
    """
    import torch

    from edgeprune._paths import output_dir
    from edgeprune.finetune.loop import Recipe

    emit = on_event or (lambda kind, info: None)
    device = _device(device)
    output_dir(output, create=False)  # a bad --output is refused before any work
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        recipe = Recipe(epochs=epochs, steps=steps, time_budget_s=time_budget * 60 if time_budget else None,
                        optimizer=optimizer, lr=lr, batch_size=batch_size, temperature=temperature, alpha=alpha,
                        patience=patience, augment=augment or "", seed=seed).resolved()
        with torch.random.fork_rng(devices=[]):  # seeded training leaves the caller's RNG as it was
            return _run(model, data=data, output=Path(output), teacher=teacher, recipe=recipe, device=device,
                        val_data=val_data, val_fraction=val_fraction, normalize=normalize, limit=limit,
                        max_accuracy_drop=max_accuracy_drop, emit=emit)
    finally:
        torch.set_num_threads(before)


def _run(model, *, data, output: Path, teacher, recipe, device, val_data, val_fraction, normalize, limit,
         max_accuracy_drop, emit) -> dict[str, Any]:
    from edgeprune._paths import output_dir
    from edgeprune.accuracy import check_drop, drop_points
    from edgeprune.data import load_data
    from edgeprune.export.pipeline import model_sha256
    from edgeprune.finetune.loop import (
        load_checkpoint,
        predict,
        recalibrate_batchnorm,
        score,
        train,
    )
    from edgeprune.models import data_info

    t_start = time.perf_counter()
    emit("phase", {"message": "loading the pruned model and its original"})
    lm = _student(model)
    teach, teacher_name = _teacher(lm, teacher)
    info = data_info(lm)
    recipe.augment = recipe.augment or info.augment
    classes = _num_classes(lm.module, lm.input_shape)
    emit("phase", {"message": f"loading data {data}"})
    split = load_data(data, input_shape=tuple(lm.input_shape), task=lm.task, normalize=normalize or info.normalize,
                      num_classes=classes, val_data=val_data, val_fraction=val_fraction, seed=recipe.seed,
                      limit=limit)
    if teach is None and not split.train.labelled:
        raise EdgePruneError(f"{lm.source}: its base '{lm.base}' has no built-in trained weights to distil from "
                             "and the data has no labels; give --teacher (the unpruned model with its weights)")
    student, tmod = lm.module.to(device), (teach.module.to(device) if teach is not None else None)
    key = _key({"student": model_sha256(student), "teacher": model_sha256(tmod) if tmod is not None else None,
                "data": split.to_dict(), "recipe": recipe.to_dict()})
    out = output_dir(output)
    ckpt = out / "checkpoints"
    prelude_path = ckpt / "prelude.json"
    prelude = _read_json(prelude_path)
    held = split.heldout
    last = load_checkpoint(ckpt / "last.pt")
    if prelude.get("key") != key or last is None or last.get("key") != key:
        emit("phase", {"message": f"measuring the original and the pruned model on {len(held):,} held-out images"})
        t_logits = predict(tmod, held, device=device) if tmod is not None else None
        orig = score(t_logits, held, reference=t_logits) if t_logits is not None else {}
        pruned = score(predict(student, held, device=device), held, reference=t_logits)
        emit("phase", {"message": "recalibrating BatchNorm statistics on training images"})
        seen = recalibrate_batchnorm(student, split.train, batches=BN_BATCHES, batch_size=recipe.batch_size,
                                     device=device)
        recal = score(predict(student, held, device=device), held, reference=t_logits)
        prelude = {"key": key, "original": orig, "pruned": pruned, "bn_recalibrated": recal, "bn_images": seen}
        from edgeprune._paths import atomic_write_text

        ckpt.mkdir(parents=True, exist_ok=True)
        atomic_write_text(prelude_path, json.dumps(prelude) + "\n")
        # the recalibrated statistics are where training starts; a resumed run loads its checkpoint instead
    else:
        t_logits = predict(tmod, held, device=device) if tmod is not None else None
    emit("phase", {"message": "fine-tuning"})
    result = train(student, split, recipe=recipe, teacher=tmod, device=device, ckpt_dir=ckpt, key=key,
                   on_event=emit)
    emit("phase", {"message": f"measuring the fine-tuned model on {len(held):,} held-out images"})
    final = score(predict(student, held, device=device), held, reference=t_logits)
    metric = "top1" if held.labelled else "agreement"
    acc = {"original": prelude["original"].get(metric) if tmod is not None else None,
           "pruned": prelude["pruned"].get(metric), "bn_recalibrated": prelude["bn_recalibrated"].get(metric),
           "finetuned": final.get(metric)}
    agree = {k: v.get("agreement") for k, v in (("pruned", prelude["pruned"]),
                                                 ("bn_recalibrated", prelude["bn_recalibrated"]),
                                                 ("finetuned", final))} if tmod is not None else None
    report: dict[str, Any] = {
        "model": str(out / "model.ept"),
        "source": str(lm.source),
        "base": lm.base,
        "teacher": teacher_name or None,
        "data": split.to_dict(),
        "heldout": {"split": split.heldout_name, "samples": len(held),
                    "note": ("never trained on nor used for early stopping" if split.test is not None else
                             "never trained on; early stopping read it (no separate test split in this data)")},
        "metric": metric,
        "accuracy": {k: (round(v, 4) if v is not None else None) for k, v in acc.items()},
        "agreement_with_original": ({k: round(v, 4) for k, v in agree.items() if v is not None} if agree else None),
        "drop_points": (drop_points(acc["original"], acc["finetuned"]) if acc["original"] is not None else None),
        "max_accuracy_drop": max_accuracy_drop,
        "passed": True,
        "bn_recalibration_images": prelude["bn_images"],
        **{k: result[k] for k in ("epochs", "steps", "steps_per_epoch", "best", "stopped", "images_per_s",
                                  "train_seconds", "images_seen", "resumed_from_step", "device", "threads",
                                  "recipe", "history")},
        "best_epoch": (result["best"] or {}).get("epoch"),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    from edgeprune.accuracy import AccuracyDropError, label_order_warning

    where = f"{split.to_dict()['source']} {split.heldout_name} split ({len(held):,} images)"
    order = label_order_warning(acc["original"], classes, where) if metric == "top1" else None
    if order:
        report.setdefault("notes", []).append(order)
    if acc["original"] is None:
        report.setdefault("notes", []).append(f"no teacher: '{lm.base}' has no built-in trained weights; trained "
                                              "on labels alone (give --teacher to distil, and to measure the drop)")
    try:
        check_drop(original=acc["original"], candidate=acc["finetuned"], max_drop=max_accuracy_drop,
                   what=str(out / "model.ept"), where=where, metric="top-1" if metric == "top1" else "agreement",
                   report=report)
    except AccuracyDropError:
        report["passed"] = False
        write_outputs(out, lm, report)
        raise
    write_outputs(out, lm, report)
    return report


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_outputs(out: Path, lm, report: dict[str, Any]) -> None:
    """Every file a fine-tune leaves: ``model.ept``, ``finetune.json``, ``report.md`` (one place, to stage it)."""
    from edgeprune._paths import atomic_write_text
    from edgeprune.prune.io import save_pruned
    from edgeprune.report import write_finetune_report

    save_pruned(lm.module.to("cpu"), lm.plan, out / "model.ept", name=lm.name, task=lm.task,
                earlier=lm.earlier_plans)
    atomic_write_text(out / "finetune.json", json.dumps(report, indent=2, default=str) + "\n")
    write_finetune_report(report, out)
