"""``finetune_model``: load, measure, recalibrate, distil, measure, write (see :mod:`edgeprune.finetune`)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgeprune._paths import atomic_write_text, output_dir
from edgeprune.checks.accuracy import (
    AccuracyDropError,
    check_drop,
    drop_points,
    label_order_warning,
)
from edgeprune.errors import EdgePruneError, ModelError
from edgeprune.export.pipeline import model_sha256
from edgeprune.finetune import distributed
from edgeprune.finetune.loop import Recipe, load_checkpoint, recalibrate_batchnorm, train
from edgeprune.finetune.objectives import objective_for
from edgeprune.finetune.report import write_finetune_report
from edgeprune.prune.io import save_pruned
from edgeprune.validate import check, check_all

BN_BATCHES = 50


def _device(device: str) -> str:
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EdgePruneError(f"--device {device}: use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EdgePruneError(f"--device {device}: no CUDA GPU here (torch.cuda.is_available() is False); "
                             "use --device cpu")
    return device


def _student(lm):
    if getattr(lm, "plan", None) is None:
        raise ModelError(f"{getattr(lm, 'source', lm)}: not a pruned model; finetune takes the model.ept "
                         "that edgeprune prune wrote")
    return lm


def check_teacher(teacher, lm, name: str | None = None) -> None:
    """One line unless ``teacher`` (a LoadedModel; ``name``: as the user gave it) takes the pruned model's input."""
    shape = tuple(lm.input_shape)
    try:
        with torch.no_grad():
            teacher.module.eval()(torch.zeros(*shape))
    except Exception:
        raise ModelError(f"--teacher {name or teacher.source}: it takes input {tuple(teacher.input_shape)}, the pruned "
                         f"model {shape}; give the original the model was pruned from") from None


def _num_classes(module, input_shape) -> int | None:
    with torch.no_grad():
        out = module.eval()(torch.zeros(1, *tuple(input_shape)[1:]))
    first = out[0] if isinstance(out, (tuple, list)) else out
    return int(first.shape[1]) if first.ndim == 2 else None


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune (the CLI's ``finetune`` options; see :mod:`edgeprune.finetune` for the recipe).

    ``time_budget`` is in minutes. ``augment`` None: the data's own
    (no flips for digits). ``max_accuracy_drop``: points; the fine-tuned
    model further below the original fails the run after writing everything.
    """

    epochs: int | None = None
    steps: int | None = None
    time_budget: float | None = None
    device: str = "cpu"
    lr: float | None = None
    optimizer: str = "sgd"
    batch_size: int = 64
    temperature: float = 4.0
    alpha: float = 0.9
    patience: int = 3
    augment: str | None = None
    seed: int = 0
    max_accuracy_drop: float | None = None
    threads: int | None = None
    amp: str | None = None
    sync_bn: bool = False

    def __post_init__(self) -> None:
        check_all(epochs=self.epochs, steps=self.steps, time_budget=self.time_budget, lr=self.lr,
                  batch_size=self.batch_size, temperature=self.temperature, alpha=self.alpha,
                  patience=self.patience, seed=self.seed, max_accuracy_drop=self.max_accuracy_drop)
        check("cpu_threads", self.threads, option="--threads")

    def recipe(self, default_augment: str) -> Recipe:
        return Recipe(epochs=self.epochs, steps=self.steps,
                      time_budget_s=self.time_budget * 60 if self.time_budget else None,
                      optimizer=self.optimizer, lr=self.lr, batch_size=self.batch_size,
                      temperature=self.temperature, alpha=self.alpha, patience=self.patience,
                      augment=self.augment or default_augment, seed=self.seed, amp=self.amp,
                      sync_bn=self.sync_bn).resolved()


@dataclass
class FinetuneResult:
    """The fine-tuned model in memory (same plan, new weights) and ``finetune.json``'s figures."""

    model: Any
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.report)


def finetune_model(
    model: Any,
    *,
    split: Any,
    output: str | os.PathLike[str],
    options: FinetuneOptions = FinetuneOptions(),
    teacher: Any = None,
    on_event: Callable[[str, dict], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the pruned ``model`` (a LoadedModel) on ``split`` (a DataSplit); see :mod:`edgeprune.finetune`.

    The teacher is ``teacher`` (a LoadedModel) or the model's own unpruned
    ``original`` (with the user's weights). Raises
    :class:`~edgeprune.checks.accuracy.AccuracyDropError` (after writing everything)
    when the fine-tuned model is more than ``options.max_accuracy_drop``
    points below the original. ``model`` itself is not changed.

    Under torchrun (``RANK``/``WORLD_SIZE`` in the environment) it trains in
    DistributedDataParallel (:mod:`edgeprune.finetune.distributed`); rank 0
    returns the result, the other ranks ``{"rank": r, "world_size": n}``.
    """
    device = _device(options.device)
    world = distributed.world_from_env()
    emit = (on_event if world.main else None) or (lambda kind, info: None)  # rank 0 speaks for the run
    distributed.check_options(world, device=device, time_budget=options.time_budget, sync_bn=options.sync_bn,
                              amp=options.amp)
    output_dir(output, create=False)  # a bad --output is refused before any work
    before = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        lm = _student(model)
        from edgeprune.models import data_info

        recipe = options.recipe(data_info(lm).augment)
        if world.active:
            device = distributed.start(world, device)
        with torch.random.fork_rng(devices=[]):  # seeded training leaves the caller's RNG as it was
            return _run(lm, split=split, output=Path(output), teacher=teacher, recipe=recipe, device=device,
                        max_accuracy_drop=options.max_accuracy_drop, emit=emit, world=world)
    finally:
        distributed.stop(world)
        torch.set_num_threads(before)


def _run(lm, *, split, output: Path, teacher, recipe, device, max_accuracy_drop, emit, world) -> FinetuneResult:
    t_start = time.perf_counter()
    teach = teacher if teacher is not None else lm.original
    if teacher is not None:
        check_teacher(teacher, lm)
    if teacher is not None:
        teacher_name = str(teach.source)
    else:
        teacher_name = f"{teach.source} ({teach.weights})" if teach is not None and teach.weights else \
            str(getattr(teach, "source", ""))
    classes = lm.num_classes or _num_classes(lm.module, lm.input_shape)
    source = str(lm.source)
    lm = lm.derive(copy.deepcopy(lm.module), plan=lm.plan, source=str(output / "model.ept"))
    if teach is None and not split.train.labelled:
        raise EdgePruneError(f"{source}: its unpruned original with trained weights is not known here (to distil "
                             "from) and the data has no labels; give --teacher (the unpruned model with its weights)")
    student, tmod = lm.module.to(device), (teach.module.to(device) if teach is not None else None)
    held = split.heldout
    objective = objective_for(lm, teacher=tmod, labelled=held.labelled)
    key = _key({"student": model_sha256(student), "teacher": model_sha256(tmod) if tmod is not None else None,
                "data": split.to_dict(), "recipe": recipe.to_dict()})
    out = output_dir(output) if world.main else Path(output)
    ckpt = out / "checkpoints"
    prelude_path = ckpt / "prelude.json"
    prelude = _read_json(prelude_path)
    last = load_checkpoint(ckpt / "last.pt") if world.main else None
    # rank 0 alone measures and recalibrates; DDP hands its weights and statistics to the other ranks
    if world.main and (prelude.get("key") != key or last is None or last.get("key") != key):
        emit("phase", {"message": f"measuring the original and the pruned model on {len(held):,} held-out images"})
        orig = objective.measure(tmod, held, device=device) if tmod is not None else {}
        pruned = objective.measure(student, held, device=device)
        emit("phase", {"message": "recalibrating BatchNorm statistics on training images"})
        seen = recalibrate_batchnorm(student, split.train, batches=BN_BATCHES, batch_size=recipe.batch_size,
                                     device=device)
        recal = objective.measure(student, held, device=device)
        prelude = {"key": key, "original": orig, "pruned": pruned, "bn_recalibrated": recal, "bn_images": seen}

        ckpt.mkdir(parents=True, exist_ok=True)
        atomic_write_text(prelude_path, json.dumps(prelude) + "\n")
        # the recalibrated statistics are where training starts; a resumed run loads its checkpoint instead
    distributed.barrier(world)  # the other ranks read last.pt only once rank 0 has decided what it holds
    emit("phase", {"message": "fine-tuning" + (f" in {world.size} processes ({distributed.backend()})"
                                               if world.active else "")})
    result = train(student, split, recipe=recipe, teacher=tmod, device=device, ckpt_dir=ckpt, key=key,
                   on_event=emit, objective=objective, world=world)
    if not world.main:
        distributed.barrier(world)  # rank 0 measures and writes; nothing here to write
        return FinetuneResult(model=lm, report={"rank": world.rank, "world_size": world.size})
    try:
        return _finish(lm, split=split, out=out, teach=teach, tmod=tmod, teacher_name=teacher_name, source=source,
                       classes=classes, objective=objective, prelude=prelude, result=result, device=device,
                       max_accuracy_drop=max_accuracy_drop, emit=emit, t_start=t_start)
    finally:
        distributed.barrier(world)


def _finish(lm, *, split, out: Path, teach, tmod, teacher_name, source, classes, objective, prelude, result, device,
            max_accuracy_drop, emit, t_start) -> FinetuneResult:
    held, student = split.heldout, lm.module
    emit("phase", {"message": f"measuring the fine-tuned model on {len(held):,} held-out images"})
    final = objective.measure(student, held, device=device)
    metric = objective.metric
    acc = {"original": prelude["original"].get(metric) if tmod is not None else None,
           "pruned": prelude["pruned"].get(metric), "bn_recalibrated": prelude["bn_recalibrated"].get(metric),
           "finetuned": final.get(metric)}
    agree = {k: v.get("agreement") for k, v in (("pruned", prelude["pruned"]),
                                                 ("bn_recalibrated", prelude["bn_recalibrated"]),
                                                 ("finetuned", final))} if tmod is not None else None
    report: dict[str, Any] = {
        "model": str(out / "model.ept"),
        "source": source,
        "base": lm.base,
        "teacher": teacher_name or None,
        "data": split.to_dict(),
        "heldout": {"split": split.heldout_name, "samples": len(held),
                    "note": ("never trained on nor used for early stopping" if split.test is not None else
                             "never trained on; early stopping read it (no separate test split in this data)")},
        "metric": metric,
        "metric_name": objective.name,
        "task": lm.task,
        "accuracy": {k: (round(v, 4) if v is not None else None) for k, v in acc.items()},
        "agreement_with_original": ({k: round(v, 4) for k, v in agree.items() if v is not None} if agree else None),
        "drop_points": (drop_points(acc["original"], acc["finetuned"]) if acc["original"] is not None else None),
        "max_accuracy_drop": max_accuracy_drop,
        "passed": True,
        "bn_recalibration_images": prelude["bn_images"],
        **{k: result[k] for k in ("epochs", "steps", "steps_per_epoch", "best", "stopped", "images_per_s",
                                  "train_seconds", "images_seen", "resumed_from_step", "device", "threads",
                                  "recipe", "history", "amp")},
        "distributed": {"world_size": result["world_size"], "backend": distributed.backend(),
                        "images_per_s_total": result["images_per_s"],
                        "images_per_s_per_rank": result["images_per_s_per_rank"],
                        "resumed_from_world_size": result["resumed_world_size"],
                        "effective_batch": result["recipe"]["batch_size"]},
        "best_epoch": (result["best"] or {}).get("epoch"),
        "seconds": round(time.perf_counter() - t_start, 1),
    }

    where = f"{split.to_dict()['source']} {split.heldout_name} split ({len(held):,} images)"
    order = label_order_warning(acc["original"], classes, where) if metric == "top1" else None
    if order:
        report.setdefault("notes", []).append(order)
    if acc["original"] is None:
        report.setdefault("notes", []).append(f"no teacher: the unpruned original of '{lm.base}' with trained "
                                              "weights is not known here; trained on labels alone (give --teacher "
                                              "to distil, and to measure the drop)")
    try:
        check_drop(original=acc["original"], candidate=acc["finetuned"], max_drop=max_accuracy_drop,
                   what=str(out / "model.ept"), where=where, metric=objective.name,
                   report=report)
    except AccuracyDropError:
        report["passed"] = False
        write_outputs(out, lm, report)
        raise
    write_outputs(out, lm, report)
    return FinetuneResult(model=lm, report=report)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_outputs(out: Path, lm, report: dict[str, Any]) -> None:
    """Every file a fine-tune leaves: ``model.ept``, ``finetune.json``, ``report.md`` (one place, to stage it)."""
    save_pruned(lm.module.to("cpu"), lm.plan, out / "model.ept", name=lm.name, task=lm.task,
                earlier=lm.earlier_plans, original=lm.original, normalize=lm.normalize)
    atomic_write_text(out / "finetune.json", json.dumps(report, indent=2, default=str) + "\n")
    write_finetune_report(report, out)
