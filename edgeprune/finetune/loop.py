"""The training loop behind ``edgeprune finetune`` (and the reference models' training).

One loop, plain values in and out: a student module, a :class:`DataSplit`, a
:class:`Recipe`, optionally a teacher. It

- measures progress in steps (``epochs`` or ``steps``) or in seconds
  (``time_budget_s``), and drives a cosine learning-rate schedule with a
  short linear warm-up from that progress, so a time budget still ends at a
  learning rate of zero;
- evaluates on ``split.val`` after every epoch (or every ``eval_every``
  steps): top-1 accuracy when val is labelled, else top-1 agreement with the
  teacher; keeps the best weights (a tie goes to the later one); stops early after ``patience``
  evaluations without improvement (in the second half of the schedule only);
- writes checkpoints atomically into ``ckpt_dir``: ``last.pt`` (weights,
  optimiser, position in the epoch, RNG state, history; at every
  evaluation, every ``checkpoint_every_s`` seconds and on Ctrl-C) and
  ``best.pt`` (the best weights). Every file holds only tensors and plain
  values, so it reloads with ``torch.load(weights_only=True)``;
- resumes from ``last.pt`` when its ``key`` (a hash of the arguments that
  matter) is the same: same batches in the same order, same augmentation,
  same optimiser state, so an interrupted run ends where an uninterrupted
  one would;
- reports progress through ``on_event(kind, info)`` (the CLI draws a bar);
- under torchrun (``world``), trains in DistributedDataParallel on each
  rank's share of every batch, rank 0 alone evaluating and writing
  (:mod:`edgeprune.finetune.distributed`); ``recipe.amp`` runs the forward
  passes under ``torch.autocast``.

Example::

    result = train(student, split, recipe=Recipe(epochs=3), teacher=teacher, ckpt_dir=Path("out/checkpoints"))
    result["best"]["metric"], result["images_per_s"]
"""

from __future__ import annotations

import copy
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeprune._paths import atomic_write_bytes
from edgeprune.data.dataset import shard_bounds
from edgeprune.errors import DistributedError, EdgePruneError, Interrupted
from edgeprune.finetune import distributed
from edgeprune.finetune.distributed import World
from edgeprune.safeload import torch_load

CKPT_FORMAT = "edgeprune.finetune-checkpoint"


@dataclass
class Recipe:
    """How to train. Defaults are for fine-tuning a pruned, already trained network (see edgeprune.finetune)."""

    epochs: int | None = None
    steps: int | None = None
    time_budget_s: float | None = None
    optimizer: str = "sgd"  # 'sgd' (momentum 0.9, Nesterov) | 'adamw'
    lr: float | None = None  # None: 0.01 (sgd) / 0.001 (adamw)
    weight_decay: float | None = None  # None: 5e-5 (sgd) / 0.01 (adamw); never on BatchNorm or biases
    batch_size: int = 64
    warmup: float = 0.03  # fraction of the run spent warming the learning rate up linearly
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the distillation term when labels exist (1 - alpha: cross-entropy)
    label_smoothing: float = 0.0
    patience: int = 3
    augment: str = "shift"
    eval_every: int | None = None  # steps; None: once per epoch (at most 10 times a run for --steps)
    val_limit: int | None = 5000  # evaluate on at most this many val images (fast early stopping)
    checkpoint_every_s: float = 300.0
    seed: int = 0
    channels_last: bool = True  # NHWC activations: ~30 % faster convolutions on this CPU, and on tensor cores
    amp: str | None = None  # 'bf16' | 'fp16': torch.autocast for the forward passes (fp16 with a GradScaler)
    sync_bn: bool = False  # several processes: SyncBatchNorm (GPUs only; edgeprune.finetune.distributed)

    def resolved(self) -> Recipe:
        r = copy.copy(self)
        if r.optimizer not in ("sgd", "adamw"):
            raise EdgePruneError(f"optimizer '{r.optimizer}': choose sgd or adamw")
        r.lr = r.lr if r.lr is not None else (0.01 if r.optimizer == "sgd" else 1e-3)
        r.weight_decay = r.weight_decay if r.weight_decay is not None else (5e-5 if r.optimizer == "sgd" else 0.01)
        if sum(v is not None for v in (r.epochs, r.steps, r.time_budget_s)) > 1:
            raise EdgePruneError("give one of --epochs, --steps or --time-budget")
        if r.epochs is None and r.steps is None and r.time_budget_s is None:
            r.epochs = 3
        for name in ("epochs", "steps", "time_budget_s", "batch_size"):
            v = getattr(r, name)
            if v is not None and v <= 0:
                raise EdgePruneError(f"{name.replace('_s', '')} must be positive, got {v}")
        return r

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor | None, y: torch.Tensor | None, *,
                 temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)`` (Hinton et al., 2015).

    Without labels only the distillation term; without a teacher only cross-entropy.
    The T^2 keeps the soft term's gradients on the scale of the hard one's.
    """
    ce = None if y is None else nn.functional.cross_entropy(student, y, label_smoothing=label_smoothing)
    if teacher is None:
        return ce
    t = temperature
    kd = nn.functional.kl_div(nn.functional.log_softmax(student / t, 1), nn.functional.log_softmax(teacher / t, 1),
                              reduction="batchmean", log_target=True) * (t * t)
    return kd if ce is None else alpha * kd + (1.0 - alpha) * ce


def _logits(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)


def lr_at(progress: float, recipe: Recipe) -> float:
    """Linear warm-up over ``recipe.warmup`` of the run, then cosine to zero."""
    p = min(max(progress, 0.0), 1.0)
    if recipe.warmup > 0 and p < recipe.warmup:
        return recipe.lr * (p / recipe.warmup)
    q = (p - recipe.warmup) / max(1e-9, 1.0 - recipe.warmup)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * q))


@torch.no_grad()
def predict(model: nn.Module, ds, *, device: str = "cpu", batch_size: int = 256, limit: int | None = None) -> torch.Tensor:
    """Logits of ``model`` over the first ``limit`` samples of ``ds`` (eval mode), on the CPU."""
    was = model.training
    model.eval()
    outs = []
    for batch in ds.batches(batch_size, limit=limit):
        x = batch[0] if isinstance(batch, tuple) else batch
        outs.append(_logits(model(x.to(device))).float().cpu())
    model.train(was)
    return torch.cat(outs) if outs else torch.zeros(0)


def score(logits: torch.Tensor, ds, *, reference: torch.Tensor | None = None) -> dict[str, Any]:
    """Top-1 accuracy against the labels (if any) and agreement with ``reference`` logits (if given)."""
    n = len(logits)
    out: dict[str, Any] = {"samples": n}
    if ds.labelled and n:
        out["top1"] = float((logits.argmax(1).numpy() == ds.y[:n]).mean())
    if reference is not None and n:
        out["agreement"] = float((logits.argmax(1) == reference[:n].argmax(1)).float().mean())
    return out


def recalibrate_batchnorm(model: nn.Module, ds, *, batches: int = 50, batch_size: int = 64, device: str = "cpu") -> int:
    """Re-estimate every BatchNorm's running statistics on real data; weights untouched. Returns images seen.

    Pruning removes channels feeding each BatchNorm's input, so its stored
    mean and variance no longer describe what it sees; fresh statistics from
    a few thousand training images are the cheapest repair (and the start
    fine-tuning should get).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over all batches
    was = model.training
    model.train()
    seen = 0
    with torch.no_grad():
        for batch in ds.batches(batch_size, shuffle=True, seed=12345, limit=batches * batch_size):
            x = batch[0] if isinstance(batch, tuple) else batch
            model(x.to(device))
            seen += int(x.shape[0])
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    model.train(was)
    return seen


class Objective:
    """The loss of one batch and the figure of one model on one dataset (higher is better)."""

    metric: str = ""
    name: str = ""
    clip_grad_norm: float | None = None  # the gradient's norm is clipped to this before each step (None: not)

    def loss(self, student, teacher, x: torch.Tensor, y: Any, recipe) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def measure(self, model, ds, *, device: str = "cpu", limit: int | None = None) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    def end_epoch(self, student) -> None:
        """Whatever the task's own trainer does after an epoch (nothing for classifiers)."""


class ClassifyObjective(Objective):
    def __init__(self, *, teacher=None, labelled: bool) -> None:
        self.teacher = teacher
        self.metric = "top1" if labelled else "agreement"
        self.name = "top-1" if labelled else "top-1 agreement with the original"
        self._reference: dict[int, torch.Tensor] = {}

    def loss(self, student, teacher, x, y, recipe) -> torch.Tensor:
        with torch.no_grad():
            t_logits = _logits(teacher(x)) if teacher is not None else None
        return distill_loss(_logits(student(x)), t_logits, y, temperature=recipe.temperature, alpha=recipe.alpha,
                            label_smoothing=recipe.label_smoothing)

    def measure(self, model, ds, *, device: str = "cpu", limit: int | None = None) -> dict[str, Any]:
        ref = None
        if self.teacher is not None:
            if id(ds) not in self._reference:  # the teacher's logits, once per dataset
                self._reference[id(ds)] = predict(self.teacher, ds, device=device, limit=limit)
            ref = self._reference[id(ds)]
        return score(predict(model, ds, device=device, limit=limit), ds, reference=ref)


def _state_bytes(obj: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


def load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        blob = torch_load(path)
    except Exception:  # EdgePruneError included: a checkpoint asking for a global is not ours either  # a damaged checkpoint: start over rather than fail
        return None
    return blob if isinstance(blob, dict) and blob.get("format") == CKPT_FORMAT else None


def train(student: nn.Module, split, *, recipe: Recipe, teacher: nn.Module | None = None, device: str = "cpu",
          ckpt_dir: Path | None = None, key: str = "", on_event: Callable[[str, dict], None] | None = None,
          objective=None, world: World | None = None) -> dict[str, Any]:
    """Train ``student`` in place (left holding the best weights); returns what happened. See the module docstring.

    ``objective``: the task's loss and figure (:mod:`edgeprune.finetune.objectives`); default a
    classifier's (KL distillation, top-1 or agreement with the teacher). ``world``: this process's
    place in a torchrun run (default one process); the process group is already started.
    """
    recipe = recipe.resolved()
    world = world or World()
    emit = (on_event if world.main else None) or (lambda kind, info: None)
    train_ds, val_ds = split.train, split.val
    if recipe.val_limit and len(val_ds) > recipe.val_limit:  # evenly spread: a class-ordered split keeps every class

        val_ds = val_ds.subset(np.linspace(0, len(val_ds) - 1, recipe.val_limit).round().astype(np.int64))
    if not train_ds.labelled and teacher is None:
        raise EdgePruneError("unlabelled data needs a teacher to distil from (give --teacher)")
    if objective is None:
        objective = ClassifyObjective(teacher=teacher, labelled=val_ds.labelled)
    metric = objective.metric
    if not val_ds.labelled and teacher is None:
        raise EdgePruneError("unlabelled validation data needs a teacher to measure agreement with")
    per_epoch = math.ceil(len(train_ds) / recipe.batch_size)
    total = recipe.steps if recipe.steps else (recipe.epochs * per_epoch if recipe.epochs else None)
    # once per epoch; a --steps run shorter than ten epochs evaluates ten times
    eval_every = recipe.eval_every or (min(per_epoch, max(1, math.ceil(recipe.steps / 10))) if recipe.steps
                                       else per_epoch)

    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    student.to(device, memory_format=fmt)
    if teacher is not None:
        teacher.to(device, memory_format=fmt).eval()
    opt = make_optimizer(student, recipe)
    device_type = torch.device(device).type
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(recipe.amp or "")
    scaler = torch.amp.GradScaler(device_type, enabled=recipe.amp == "fp16")
    st: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "images": 0, "bad": 0,
                          "best": None, "history": [], "done": False, "stopped": None, "world_size": world.size}
    last = ckpt_dir / "last.pt" if ckpt_dir else None
    best_path = ckpt_dir / "best.pt" if ckpt_dir else None
    ck = load_checkpoint(last) if last else None
    resumed = ck is not None and ck.get("key") == key
    best_state: dict[str, torch.Tensor] | None = None
    if resumed:
        student.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng"])
        if ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        st.update(json.loads(ck["state"]))
        best_blob = load_checkpoint(best_path) if best_path else None
        best_state = best_blob["model"] if best_blob else None
    else:
        torch.manual_seed(recipe.seed)
    resumed_at = st["step"] if resumed else None
    resumed_world = st.pop("world_size", 1) if resumed else None
    st["world_size"] = world.size  # the world that writes the next checkpoint
    model, swapped = distributed.wrap(student, world, device=device, sync_bn=recipe.sync_bn)  # DDP: rank 0's state
    mine = {"images": 0, "seconds": 0.0}  # this rank's rows and time in this session (images/s per rank)

    def save(done: bool = False) -> None:
        st["done"] = done
        if last is None or not world.main:
            return
        extra = {"scaler": scaler.state_dict()} if scaler.is_enabled() else {}
        atomic_write_bytes(last, _state_bytes({"format": CKPT_FORMAT, "key": key, "model": _cpu_state(student),
                                               "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                                               "state": json.dumps(st), **extra}))

    def evaluate() -> bool:
        """One evaluation on val (rank 0; the others take its decision); True when training should stop early."""
        stop = measure_here() if world.main else None
        if world.active:
            shared = distributed.broadcast(world, {k: st[k] for k in ("history", "best", "bad")} | {"stop": stop})
            stop = shared.pop("stop")
            st.update(shared)
        return bool(stop)

    def measure_here() -> bool:
        nonlocal best_state
        value = objective.measure(student, val_ds, device=device)[metric]
        entry = {"step": st["step"], "epoch": round(st["step"] / per_epoch, 3), metric: value,
                 "elapsed_s": round(st["elapsed"], 1)}
        st["history"].append(entry)
        # A tie counts as better: later in the cosine schedule at a lower rate, and a small validation
        # split that saturates (100 % of 143 digits) must not freeze the first checkpoint that reached it.
        improved = st["best"] is None or value >= st["best"]["metric"]
        if improved:
            st["best"] = {"metric": value, "step": st["step"], "epoch": entry["epoch"]}
            st["bad"] = 0
            best_state = _cpu_state(student)
            if best_path:
                atomic_write_bytes(best_path, _state_bytes({"format": CKPT_FORMAT, "key": key, "model": best_state}))
        else:
            st["bad"] += 1
        emit("eval", {**entry, "metric": metric, "best": st["best"]["metric"], "improved": improved})
        # Not in the first half: a cosine schedule's early, high-rate evaluations say little about what later
        # steps at a low rate will reach.
        return st["bad"] >= recipe.patience and progress() >= 0.5

    def progress() -> float:
        if recipe.time_budget_s:
            return st["elapsed"] / recipe.time_budget_s
        return st["step"] / total

    emit("start", {"total_steps": total, "time_budget_s": recipe.time_budget_s, "per_epoch": per_epoch,
                   "resumed_at": resumed_at, "finished": bool(st["done"]), "metric": metric,
                   "checkpoints": str(ckpt_dir) if ckpt_dir else None})
    student.train()
    last_save = time.monotonic()
    finished = "time budget" if recipe.time_budget_s else ("steps" if recipe.steps else "epochs")
    try:
        while not st["done"] and not st["stopped"]:
            if progress() >= 1.0:
                st["stopped"] = finished
                break
            shard = {"part": world.part} if world.active else {}  # rank's rows of every global batch
            batches = train_ds.batches(recipe.batch_size, shuffle=True, seed=recipe.seed * 1000 + st["epoch"],
                                       augment=recipe.augment, start=st["batch"], **shard)
            for batch in batches:
                t0 = time.perf_counter()
                x, y = batch if isinstance(batch, tuple) else (batch, None)
                x = x.to(device, memory_format=fmt)
                y = y.to(device) if y is not None else None
                n_batch = min(recipe.batch_size, len(train_ds) - st["batch"] * recipe.batch_size)
                lo, hi = shard_bounds(n_batch, world.rank, world.size)
                for g in opt.param_groups:
                    g["lr"] = lr_at(progress(), recipe)
                with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss = objective.loss(model, teacher, x, y, recipe)
                if world.active:  # DDP averages over ranks: weight by the share so it is the global batch's mean
                    loss = loss * (world.size * (hi - lo) / n_batch)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if objective.clip_grad_norm:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), objective.clip_grad_norm)
                scaler.step(opt)
                scaler.update()
                st["step"] += 1
                st["batch"] += 1
                st["images"] += n_batch
                st["elapsed"] += time.perf_counter() - t0
                mine["images"] += hi - lo
                mine["seconds"] += time.perf_counter() - t0
                epoch_end = st["batch"] >= per_epoch
                if epoch_end:  # the checkpoint then points at the next epoch's first batch
                    st["epoch"] += 1
                    st["batch"] = 0
                    objective.end_epoch(student)
                emit("step", {"step": st["step"], "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                              "elapsed_s": st["elapsed"], "images": st["images"], "progress": progress()})
                end = progress() >= 1.0
                if st["step"] % eval_every == 0 or end or epoch_end:
                    if evaluate():
                        st["stopped"] = f"early stop (no better {metric} in {recipe.patience} evaluations)"
                    elif end:
                        st["stopped"] = finished
                    save()
                    last_save = time.monotonic()
                    if st["stopped"]:
                        break
                elif time.monotonic() - last_save > recipe.checkpoint_every_s:
                    save()
                    last_save = time.monotonic()
    except KeyboardInterrupt:
        distributed.shield(world)  # torchrun's SIGTERM to the remaining ranks must not cut this save short
        save()
        raise Interrupted(f"interrupted at step {st['step']}; checkpoint saved in {ckpt_dir}: "
                          "run the same command again to resume") from None
    except RuntimeError as exc:  # another rank stopped (killed, out of memory): keep what rank 0 has
        if not distributed.peer_failure(world, exc):
            raise
        distributed.shield(world)
        save()
        raise DistributedError(f"another process of the run stopped at step {st['step']}; checkpoint saved in "
                               f"{ckpt_dir}: run the same command again (any process count) to resume") from None
    if not st["history"] or st["history"][-1]["step"] != st["step"]:
        evaluate()
    save(done=True)
    distributed.unwrap(swapped)
    per_rank = distributed.gather(world, round(mine["images"] / mine["seconds"], 1) if mine["seconds"] else None)
    if best_state is not None:
        student.load_state_dict(best_state)
    student.to(memory_format=torch.contiguous_format).eval()
    if teacher is not None:
        teacher.to(memory_format=torch.contiguous_format)
    seconds = st["elapsed"]
    return {
        "metric": metric,
        "steps": st["step"],
        "epochs": round(st["step"] / per_epoch, 3),
        "steps_per_epoch": per_epoch,
        "best": st["best"],
        "stopped": st["stopped"],
        "history": st["history"],
        "train_seconds": round(seconds, 2),
        "images_seen": st["images"],
        "images_per_s": round(st["images"] / seconds, 1) if seconds else None,
        "resumed_from_step": resumed_at,
        "resumed_world_size": resumed_world,
        "world_size": world.size,
        "images_per_s_per_rank": per_rank,
        "amp": recipe.amp,
        "recipe": recipe.to_dict(),
        "device": device,
        "threads": torch.get_num_threads(),
    }
