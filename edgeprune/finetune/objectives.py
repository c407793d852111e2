"""What fine-tuning optimises and how it is scored, for each task: the loop asks an objective, not a string.

:func:`objective_for` gives the model's task's :class:`Objective`:

- ``classify``: the loss is KL distillation from the teacher's logits (plus
  cross-entropy with labels; :func:`edgeprune.finetune.loop.distill_loss`);
  the figure is top-1 on labelled data, else top-1 agreement with the
  teacher;
- ``detect``: the loss is distillation of the head's raw outputs (box
  distributions and class logits) plus, with labels, the detector's own loss
  where its library gives one (Ultralytics': :mod:`edgeprune.tasks.detect_loss`);
  the figure is mAP50-95 on labelled data (pycocotools through
  :mod:`edgeprune.tasks.detect_eval`), else the share of the teacher's
  confident detections the model still finds at IoU 0.5.

Both score a model with :meth:`Objective.measure` (``{metric: value, ...}``,
higher is better), the same call for the original, the pruned model, every
evaluation during training and the result.

Example::

    obj = objective_for(lm, teacher=original.module, labelled=split.heldout.labelled)
    obj.measure(student, split.val)["map50_95"]

(:class:`Objective` and the classifier's :class:`ClassifyObjective` live in
:mod:`edgeprune.finetune.loop` beside the loss and metric they use.)
"""

from __future__ import annotations

from typing import Any

import torch

from edgeprune.finetune.loop import ClassifyObjective, Objective
from edgeprune.tasks import detector_classes
from edgeprune.tasks.detect_eval import agreement_of, evaluate
from edgeprune.tasks.detect_loss import (
    end_epoch,
    prepare_supervised,
    supports_supervised,
    train_step,
)


class DetectObjective(Objective):
    # Ultralytics' trainer clips the gradient's norm at 10 before every step. Without it, YOLO26n's first
    # step from trained-like weights (its E2E class loss 6211, gradient norm 2186) sent its boxes to 1e9 px.
    clip_grad_norm = 10.0

    def __init__(self, *, teacher=None, labelled: bool, num_classes: int | None, supervised: bool = True) -> None:
        self.teacher = teacher
        self.labelled = labelled
        self.num_classes = num_classes
        self.supervised = supervised
        self.metric = "map50_95" if labelled else "recall"
        self.name = ("mAP50-95" if labelled else
                     "share of the original's confident detections found at IoU 0.5")

    def loss(self, student, teacher, x, y, recipe) -> torch.Tensor:
        loss, _ = train_step(student, (x, y) if y is not None else x, teacher=teacher, num_classes=self.num_classes,
                             supervised=self.supervised)
        return loss

    def measure(self, model, ds, *, device: str = "cpu", limit: int | None = None) -> dict[str, Any]:
        was = model.training
        model.eval()
        try:
            def run(x):
                with torch.no_grad():
                    return model(x.to(device))

            if self.labelled:
                got = evaluate(run, ds, num_classes=self.num_classes, limit=limit)
                out = {"map50_95": got["map50_95"], "map50": got["map50"], "samples": got.get("images")}
            elif self.teacher is None or model is self.teacher:
                out = {"recall": 1.0, "samples": len(ds)}
            else:
                def ref(x):
                    with torch.no_grad():
                        return self.teacher.eval()(x.to(device))

                got = agreement_of(ref, run, ds, num_classes=self.num_classes, limit=limit)
                out = {"recall": got["recall"], "samples": len(ds), "detections": got.get("detections")}
        finally:
            model.train(was)
        return out

    def end_epoch(self, student) -> None:
        end_epoch(student)


def objective_for(lm, *, teacher=None, labelled: bool, training: bool = True) -> Objective:
    """The objective of ``lm``'s task (a LoadedModel; ``teacher``: the original's module, or None).

    ``training=False``: for measuring only (the detector's own loss is not set up)."""
    if lm.task == "detect":
        supervised = labelled and training and supports_supervised(lm.module)
        if supervised:
            prepare_supervised(lm.module)
        return DetectObjective(teacher=teacher, labelled=labelled, num_classes=detector_classes(lm.module) or lm.num_classes,
                               supervised=supervised)
    return ClassifyObjective(teacher=teacher, labelled=labelled)
