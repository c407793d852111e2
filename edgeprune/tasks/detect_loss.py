"""Losses for fine-tuning a detector: distillation on the head's raw outputs, and the detector's own loss.

:func:`distill_loss` needs no labels. It compares the student's raw head
outputs with the original's (the teacher's), per anchor, on every branch
the head has (YOLO26's one-to-many and one-to-one both):

- class logits: binary KL between the teacher's and the student's
  sigmoid probabilities, summed over classes (zero when they agree);
- boxes: for a distribution head (``reg_max > 1``, YOLOv8/11 and
  ``yolo-small``), KL between the teacher's and the student's softmax over
  the ``reg_max`` bins of each side, at temperature ``T`` (times ``T^2``), as in
  localisation distillation; for a head that regresses distances directly
  (``reg_max == 1``, YOLO26), smooth L1 between them;
- each anchor weighted by the teacher's best class probability and the
  sum normalised by the total weight, so the few anchors where the teacher
  sees an object count, not the thousands of background ones (what
  Ultralytics' own loss does with ``target_scores_sum``).

:func:`supervised_loss` is the detector's own loss where the user's
library provides it: for an Ultralytics model, its ``init_criterion()``
(``v8DetectionLoss``, or ``E2ELoss`` for an end-to-end head) through
``model.loss(batch, preds)``, with Ultralytics' default gains (box 7.5,
cls 0.5, dfl 1.5) unless the model carries its own ``args``; divided by the
batch size (Ultralytics returns the sum over the batch). For other models
it is None: distillation only.

:func:`train_step` is one batch of either or both, what a fine-tuning loop
calls; the loop (optimiser, schedule, evaluation, checkpoints) is the
caller's.

Raw outputs, by structure: an Ultralytics head's dict ``{"boxes": [B,
4*reg_max, A], "scores": [B, nc, A], "feats"}`` (train mode; in eval mode the
second item of its tuple), ``{"one2many": {...}, "one2one": {...}}`` for
YOLO26, or per-level maps ``[B, 4*reg_max + nc, H, W]`` (``yolo-small``).

Example::

    student.train(); teacher.eval()
    for x, t in split.train.batches(16, shuffle=True, augment="flip+shift"):
        loss, items = train_step(student, (x, t), teacher=teacher, num_classes=10)
        opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgeprune.errors import EdgePruneError
from edgeprune.models.ultra import import_ultralytics, is_ultralytics_model

TEMPERATURE = 1.0


def raw_head(outputs, *, num_classes: int | None = None) -> list[dict[str, torch.Tensor]]:
    """The head's raw branches, each ``{"boxes": [B, 4*reg, A], "scores": [B, nc, A]}`` (see the module docstring)."""
    if isinstance(outputs, (tuple, list)) and len(outputs) == 2 and isinstance(outputs[1], dict):
        outputs = outputs[1]  # Ultralytics eval mode: (decoded, raw)
    if isinstance(outputs, dict):
        if "one2many" in outputs:
            return [b for k in ("one2many", "one2one") if k in outputs for b in raw_head(outputs[k])]
        if "boxes" in outputs and "scores" in outputs:
            return [{"boxes": outputs["boxes"], "scores": outputs["scores"]}]
    maps = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    if maps and all(isinstance(m, torch.Tensor) and m.ndim == 4 for m in maps) and num_classes:
        c = maps[0].shape[1]
        reg4 = c - num_classes
        if reg4 > 0 and reg4 % 4 == 0 and all(m.shape[1] == c for m in maps):
            flat = torch.cat([m.flatten(2) for m in maps], 2)
            return [{"boxes": flat[:, :reg4], "scores": flat[:, reg4:]}]
    raise EdgePruneError("cannot find the detector head's raw outputs (box distributions and class logits) "
                         "in what the model returned" + ("" if num_classes else "; say how many classes it detects"))


def _binary_kl(s_logit: torch.Tensor, t_logit: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(t_logit)
    bce = nn.functional.binary_cross_entropy_with_logits
    return bce(s_logit, p, reduction="none") - bce(t_logit, p, reduction="none")


def distill_loss(student_out, teacher_out, *, num_classes: int | None = None, temperature: float = TEMPERATURE,
                 box_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Distillation of the head's raw outputs (see the module docstring): ``(loss, {"distill_cls", "distill_box"})``."""
    s_br = raw_head(student_out, num_classes=num_classes)
    t_br = raw_head(teacher_out, num_classes=num_classes)
    if len(s_br) != len(t_br):
        raise EdgePruneError(f"the student's head has {len(s_br)} branches, the teacher's {len(t_br)}")
    cls_total = box_total = 0.0
    for s, t in zip(s_br, t_br, strict=True):
        ts, tb = t["scores"].detach().float(), t["boxes"].detach().float()
        ss, sb = s["scores"].float(), s["boxes"].float()
        if ss.shape != ts.shape or sb.shape != tb.shape:
            raise EdgePruneError(f"student and teacher heads differ: {tuple(ss.shape)} vs {tuple(ts.shape)} scores, "
                                 f"{tuple(sb.shape)} vs {tuple(tb.shape)} boxes (same input size and classes needed)")
        w = torch.sigmoid(ts).amax(1)  # (B, A): the teacher's confidence per anchor
        norm = w.sum().clamp(min=1.0)
        cls_total = cls_total + (_binary_kl(ss, ts).sum(1) * w).sum() / norm
        b, c, a = sb.shape
        if c > 4:  # a distribution over reg_max bins per side
            reg, tt = c // 4, temperature
            ls = torch.log_softmax(sb.view(b, 4, reg, a) / tt, 2)
            lt = torch.log_softmax(tb.view(b, 4, reg, a) / tt, 2)
            kl = (lt.exp() * (lt - ls)).sum(2).sum(1) * (tt * tt)  # (B, A)
        else:
            kl = nn.functional.smooth_l1_loss(sb, tb, reduction="none").sum(1)
        box_total = box_total + (kl * w).sum() / norm
    loss = cls_total + box_weight * box_total
    return loss, {"distill_cls": float(cls_total.detach()), "distill_box": float(box_total.detach())}


def supports_supervised(model) -> bool:
    """Does the model's library give its own detection loss (an Ultralytics model with ``init_criterion``)?"""
    return is_ultralytics_model(model) and hasattr(model, "init_criterion") and hasattr(model, "loss")


def prepare_supervised(model, *, epochs: int | None = None) -> None:
    """Give an Ultralytics model the ``args`` its loss reads (defaults, or the model's own) and a fresh criterion.

    Call again after pruning (the criterion reads the head's strides and
    class count). ``epochs`` sets the schedule of YOLO26's one-to-many weight.
    """
    cfg = import_ultralytics("ultralytics.cfg")  # heavy: ultralytics
    args = getattr(model, "args", None)
    base = dict(vars(cfg.get_cfg()))
    if isinstance(args, dict):
        base.update({k: v for k, v in args.items() if k in base})
    elif args is not None and hasattr(args, "box"):
        base.update({k: getattr(args, k) for k in base if hasattr(args, k)})
    if epochs is not None:
        base["epochs"] = int(epochs)
    model.args = cfg.IterableSimpleNamespace(**base)
    model.criterion = model.init_criterion()


def ultralytics_batch(x: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """``(M, 6)`` ``[i, class, cx, cy, w, h]`` targets -> Ultralytics' batch dict."""
    return {"img": x, "batch_idx": targets[:, 0], "cls": targets[:, 1:2], "bboxes": targets[:, 2:6]}


def supervised_loss(model, outputs, x: torch.Tensor, targets: torch.Tensor
                    ) -> tuple[torch.Tensor, dict[str, float]] | None:
    """The model's own detection loss per image, or None where its library has none (module docstring)."""
    if not supports_supervised(model):
        return None
    if getattr(model, "criterion", None) is None or not hasattr(getattr(model, "args", None), "box"):
        prepare_supervised(model)
    loss, items = model.loss(ultralytics_batch(x, targets), outputs)
    per_image = loss.sum() / max(1, x.shape[0])
    names = getattr(model.criterion, "loss_names", None) or getattr(getattr(model.criterion, "one2one", None),
                                                                    "loss_names", ("box", "cls", "dfl"))
    vals = list(items.values()) if isinstance(items, dict) else list(items)
    return per_image, {str(k): float(v) for k, v in zip(names, vals, strict=False)}


class DetectionTaylorBatches:
    """Labelled detection batches ``(x, targets)`` for Taylor channel scores, scored by the model's own loss.

    :func:`edgeprune.prune.importance.accumulate_taylor_grads` calls
    :meth:`loss` on each batch's eval-mode outputs (Ultralytics' loss reads
    them as it reads the training ones): box, class and DFL terms of the
    labels, so a channel's score is the loss change its removal would make
    to the boxes, in one unit across the backbone, the neck and the head.
    """

    def __init__(self, batches: list) -> None:
        self.batches = list(batches)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @staticmethod
    def loss(model, outputs, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        got = supervised_loss(model, outputs, x, targets)
        if got is None:
            raise EdgePruneError("Taylor scores of a detector need its library's loss (an Ultralytics model)")
        return got[0]


def end_epoch(model) -> None:
    """What Ultralytics' trainer does after each epoch to the loss (YOLO26: decay the one-to-many weight)."""
    crit = getattr(model, "criterion", None)
    if crit is not None and hasattr(crit, "update"):
        crit.update()


def train_step(student, batch, *, teacher=None, num_classes: int | None = None, supervised: bool = True,
               distill_weight: float = 1.0, temperature: float = TEMPERATURE) -> tuple[torch.Tensor, dict[str, Any]]:
    """One batch's loss: distillation from ``teacher`` (if given) plus the model's own loss (labels, if it has one).

    ``batch``: ``(x, targets)`` from a labelled DetectionDataset, or ``x``.
    The student should be in train mode and the teacher in eval mode; the
    caller calls ``loss.backward()``. Raises when there is nothing to
    learn from (no teacher, and no labels or no loss for this model).
    """
    x, targets = batch if isinstance(batch, (tuple, list)) else (batch, None)
    out = student(x)
    loss = None
    items: dict[str, Any] = {}
    if teacher is not None:
        with torch.no_grad():
            t_out = teacher(x)
        kd, kd_items = distill_loss(out, t_out, num_classes=num_classes, temperature=temperature)
        loss, items = distill_weight * kd, {**kd_items}
    if supervised and targets is not None:
        got = supervised_loss(student, out, x, targets)
        if got is not None:
            loss = got[0] if loss is None else loss + got[0]
            items.update(got[1])
    if loss is None:
        why = "no teacher and no labels" if targets is None else "no teacher, and this model's library has no loss here"
        raise EdgePruneError(f"nothing to train on: {why} (give the original model, or an Ultralytics model with labels)")
    items["loss"] = float(loss.detach())
    return loss, items


__all__ = ["DetectionTaylorBatches", "distill_loss", "end_epoch", "prepare_supervised", "raw_head", "supervised_loss", "supports_supervised",
           "train_step", "ultralytics_batch"]
