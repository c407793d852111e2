"""Fine-tuning a pruned model back to its original's accuracy: ``edgeprune finetune``.

The stages (:func:`finetune_model`):

1. **measure** the original (the teacher) and the pruned model on the held-out
   split: top-1 on labelled data, else top-1 agreement with the original;
2. **BatchNorm recalibration** on training images: pruning leaves every
   BatchNorm with statistics of inputs it no longer sees; re-estimating them
   is free and is what fine-tuning should start from (measured and reported
   on its own);
3. **distillation from the unpruned original**: loss
   ``alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(labels)``
   (Hinton et al. 2015), T = 4, alpha = 0.9; without labels the KL term
   alone. The teacher is the ``.ept``'s base with its built-in trained
   weights, or ``--teacher``. Intermediate-feature losses are not used;
4. **optimiser and schedule**: SGD, momentum 0.9 (Nesterov), lr 0.01,
   weight decay 5e-5 (not on BatchNorm or biases), batch 64, 3 % linear
   warm-up then cosine to zero. Why: the network is already trained, so a
   tenth of a from-scratch learning rate moves it without undoing it
   (Torch-Pruning #296: recovery fails with too high a rate); cosine to zero
   ends in a flat minimum whatever the length. ``--optimizer adamw`` uses lr
   1e-3, weight decay 0.01. Length: ``--epochs`` (default 3), ``--steps`` or
   ``--time-budget`` minutes (the schedule then runs on elapsed time);
5. **early stopping** on val accuracy (agreement when unlabelled) after
   every epoch, patience 3; the best checkpoint is kept and is the result;
6. **checkpoints and resume**: ``OUTPUT/checkpoints/last.pt`` and
   ``best.pt``, written atomically; run the same command again and it resumes
   where it stopped (and says so); other arguments start over;
7. **measure** the fine-tuned model on the held-out split, write
   ``model.ept`` (same plan, new weights), ``finetune.json`` and
   ``report.md``; ``max_accuracy_drop`` (points) fails the run after writing
   them (:class:`~edgeprune.checks.accuracy.AccuracyDropError`, exit 2).

Under torchrun (``torchrun --nproc-per-node N -m edgeprune finetune ...``, or
``--nproc-per-node N``) the same recipe trains in DistributedDataParallel:
``batch_size`` stays the effective batch, shared out across the processes,
so the learning-rate rule and the result are one process's; rank 0 alone
measures and writes; ``last.pt`` resumes at any process count
(:mod:`edgeprune.finetune.distributed`). ``amp``: bf16/fp16 autocast.

Data (``--data``) is any :func:`edgeprune.data.load_data` spec; accuracy is
always measured on the split fine-tuning never trained on (``test`` for
built-in data sets, else ``val``, which early stopping also reads: the JSON
says which). CPU training uses torch's default thread count (unlike
pruning, which runs on one thread: edgeprune._threads); ``device="cuda"``
where a GPU exists.

Example::

    result = finetune_model("out/pruned/model.ept", data="fashion-mnist", output="out/finetuned", epochs=2)
    result["accuracy"]       # {'original': 0.93, 'pruned': 0.41, 'bn_recalibrated': 0.86, 'finetuned': 0.925}
"""

from __future__ import annotations

from edgeprune.finetune.loop import Interrupted, Recipe, distill_loss, recalibrate_batchnorm
from edgeprune.finetune.run import finetune_model

__all__ = ["Interrupted", "Recipe", "distill_loss", "finetune_model", "recalibrate_batchnorm"]
