"""The ``classify`` entry: thin, it names what exists today where it lives (nothing is moved here).

- data: :func:`edgeprune.data.load_data` (class folders, image folders, arrays, factories, built-ins);
- preprocessing: :class:`edgeprune.data.preprocess.Preprocess` (resize, channels, normalisation);
- metric: top-1 by :func:`edgeprune.finetune.loop.score` on :func:`edgeprune.finetune.loop.predict`'s logits,
  and top-1 agreement with the original's logits (``score(..., reference=...)``) without labels;
- distillation: :func:`edgeprune.finetune.loop.distill_loss` (KL at temperature T, Hinton et al.),
  cross-entropy with labels (``teacher=None``); the training step is inline in the loop.
"""

from __future__ import annotations

from edgeprune.tasks.base import Ref, Task

CLASSIFY = Task(
    name="classify",
    data_formats=("class folders", "image folder (unlabelled)", ".npy/.npz", "pkg.module:factory",
                  "built-in: fashion-mnist, digits"),
    preprocessing="resize to the input, grey/RGB, normalise (imagenet | unit | MEAN/STD)",
    metric="top1",
    metric_name="top-1 accuracy",
    agreement_name="top-1 agreement with the original",
    open_data=Ref("edgeprune.data:load_data"),  # open_data(spec, input_shape=..., ...)
    evaluate=Ref("edgeprune.finetune.loop:score"),  # score(predict(model, ds), ds)
    agreement=Ref("edgeprune.finetune.loop:score"),  # score(logits, ds, reference=original's logits)
    distill_loss=Ref("edgeprune.finetune.loop:distill_loss"),  # KL at temperature T (+ cross-entropy with labels)
    supervised_loss=Ref("edgeprune.finetune.loop:distill_loss"),  # teacher=None: cross-entropy
    notes=("the classify functions live where they always have; this entry only names them",),
)
