"""Which channels a group keeps: importance criteria over a whole coupled group.

=========  ==============================================================
criterion  score of a channel (summed over every layer of its group)
=========  ==============================================================
l1         L1 norm of its weights (torch-pruning GroupMagnitudeImportance p=1)
l2         L2 norm of its weights (p=2)
bn         |gamma| of its BatchNorms (BNScaleImportance); groups with no
           BatchNorm fall back to l1
taylor     the loss change from removing the channel, first-order Taylor
           on its gate, summed over batches as squares (Molchanov et al.
           2019, "Importance Estimation for Neural Network Pruning"; the
           squared form is the Fisher pruning of Theis et al. 2018): per
           batch, ``s_c = sum over the channel's parameters of w * dL/dw``
           at each BatchNorm the group removes outputs from (gamma, beta;
           the layer's own conv/Linear rows where it has no BatchNorm),
           then ``score_c = sum over batches of s_c ** 2``. Needs data.
first      keep the first channels (no scoring): used to rebuild a saved
           pruned model's shapes before its weights are loaded
=========  ==============================================================

Example::

    scores = group_scores("l1", group)      # a tensor, one score per channel
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from edgeprune.checks.outputs import flatten
from edgeprune.errors import PruneError, require

CRITERIA = ("l1", "l2", "bn", "taylor", "first")


def make_importance(criterion: str):
    """The torch-pruning importance object for ``criterion`` (None for 'first')."""
    if criterion not in CRITERIA:
        raise PruneError(f"unknown importance '{criterion}': choose one of {', '.join(CRITERIA)}")
    tp = require("torch_pruning", "torch", "structured pruning")
    return {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: None,  # scored from the per-batch sums accumulate_taylor_grads leaves
        "first": lambda: None,
    }[criterion]()


def group_scores(criterion: str, group, channels: int, importance=None) -> torch.Tensor:
    """One score per channel of ``group`` (a torch-pruning Group over all its channels)."""
    if criterion == "first":
        return torch.arange(channels, 0, -1, dtype=torch.float32)
    if criterion == "taylor":
        return _taylor_scores(group, channels)
    imp = importance if importance is not None else make_importance(criterion)
    with torch.no_grad():
        scores = imp(group)
    if scores is None and criterion == "bn":  # no BatchNorm in this group
        scores = make_importance("l1")(group)
    if scores is None or scores.numel() != channels:
        raise PruneError(
            f"importance '{criterion}' gave no score for group {group[0].dep.target.name}"
        )
    return scores.detach().float()


TAYLOR_ATTR = "_edgeprune_taylor"  # per-module buffer: sum over batches of (per-channel w * dL/dw) ** 2
_GATES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def _channel_taylor(module: nn.Module) -> torch.Tensor | None:
    """Per output channel, ``sum of w * dL/dw`` over the channel's parameters (this batch's gradients)."""
    total = None
    for name in ("weight", "bias"):
        p = getattr(module, name, None)
        if not isinstance(p, torch.Tensor) or p.grad is None or p.ndim == 0:
            continue
        if isinstance(module, nn.modules.conv._ConvTransposeNd) and name == "weight":
            t = (p * p.grad).transpose(0, 1).flatten(1).sum(1)
        else:
            t = (p * p.grad).flatten(1).sum(1) if p.ndim > 1 else p * p.grad
        total = t if total is None else total + t
    return None if total is None else total.detach().double()


def accumulate_taylor_grads(
    model: nn.Module, data: Iterable, *, loss_fn: Callable | None = None
) -> int:
    """Backpropagate over ``data`` and leave, on every layer, per-channel Taylor sums for scoring.

    ``data`` yields inputs or ``(inputs, targets)``; with targets the loss is
    cross-entropy (or ``loss_fn(outputs, targets)``), or, when ``data`` has a
    ``loss(model, outputs, x, targets)`` method, that (a detector's own loss on
    its boxes: :class:`edgeprune.tasks.detect_loss.DetectionTaylorBatches`). Without targets, a
    classifier's loss is cross-entropy against its own top-1 (the empirical
    Fisher: how much removing a channel would change what the model says),
    any other model's the mean of its squared outputs. After each batch every
    conv, Linear and normalisation layer adds ``(sum of w * dL/dw per output
    channel) ** 2`` to a buffer that ``group_scores("taylor", ...)`` reads.

    Why not torch-pruning's GroupTaylorImportance (``|w * dL/dw|`` of the
    gradient summed over all batches): on a trained network the per-batch
    gradients point every way and cancel in the sum; squaring per batch keeps
    their magnitude, and the score is in one unit (loss change) across groups,
    which is what the latency allocation compares. Measured on digits-cnn
    without fine-tuning (top-1 at 50 % / 75 % of channels removed): the summed
    form 0.53 / 0.16, this form 0.57 / 0.21, L1 0.75 / 0.50, removing the
    channels whose single ablation raised the loss least 0.78 / 0.46. So a
    first-order estimate picks channels no better than magnitude on a converged
    network before fine-tuning; its use is comparing groups. Returns the number
    of samples seen.
    """
    model.eval()  # BatchNorm statistics must not move
    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, *_GATES))]
    for m in layers:
        if hasattr(m, TAYLOR_ATTR):
            delattr(m, TAYLOR_ATTR)
    model_loss = getattr(data, "loss", None)
    # a checkpoint as Ultralytics' trainer writes it (strip_optimizer) has requires_grad False everywhere:
    # no gradient would reach a weight. Turned on here and back as it was at the end.
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        seen = _backward_batches(model, data, layers, loss_fn=loss_fn, model_loss=model_loss)
    finally:
        for p in frozen:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    if not seen:
        raise PruneError("importance 'taylor' needs data: no batches were given")
    return seen


def _backward_batches(model: nn.Module, data: Iterable, layers: list, *, loss_fn, model_loss) -> int:
    seen = 0
    with torch.enable_grad():
        for batch in data:
            model.zero_grad(set_to_none=True)
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            out = model(x)
            outs = flatten(out)  # nested outputs (a detector's), edgeprune.checks.outputs
            if y is not None and model_loss is not None:
                loss = model_loss(model, out, x, y)
            elif y is not None:
                loss = (loss_fn or nn.functional.cross_entropy)(outs[0], y)
            elif outs[0].ndim == 2 and outs[0].shape[1] > 1:
                loss = nn.functional.cross_entropy(outs[0], outs[0].detach().argmax(1))
            else:
                loss = sum((o.float() ** 2).mean() for o in outs)
            loss.backward()
            for m in layers:
                t = _channel_taylor(m)
                if t is not None:
                    prev = getattr(m, TAYLOR_ATTR, None)
                    setattr(m, TAYLOR_ATTR, t * t if prev is None else prev + t * t)
            seen += int(x.shape[0])
    return seen


def _taylor_scores(group, channels: int) -> torch.Tensor:
    """Per channel of a torch-pruning group: the Taylor sums of the layers whose outputs it removes.

    The normalisation layers (the channel's gate) are used where the group
    has them, else its conv/Linear layers. Each layer's local indices map to
    the group's channels through ``root_idxs`` (a layer after a concat sees
    only part of the group). A group that no gradient reached is an error
    rather than a silent zero.
    """
    found = []
    for i, (dep, idxs) in enumerate(group):
        mod = dep.target.module
        buf = getattr(mod, TAYLOR_ATTR, None)
        if buf is None or getattr(dep.handler, "__name__", "") != "prune_out_channels":
            continue
        found.append((isinstance(mod, _GATES), buf, list(idxs), list(group[i].root_idxs)))
    chosen = [f for f in found if f[0]] or found
    if not chosen:
        raise PruneError(
            f"importance 'taylor': no gradient reached group {group[0].dep.target.name}; "
            "is it used by the model's outputs?"
        )
    score = torch.zeros(channels, dtype=torch.float64)
    for _, buf, idxs, roots in chosen:
        for local, root in zip(idxs, roots, strict=False):
            if local < buf.numel() and root < channels:
                score[root] += buf[local]
    return score.float()


def choose_removed(scores: torch.Tensor, keep: int, slices: int = 1) -> list[int]:
    """Indices of the ``len(scores) - keep`` least important channels.

    With ``slices > 1`` (grouped convs) the same positions go from every slice.
    """
    c = scores.numel()
    if slices == 1:
        return sorted(torch.argsort(scores)[: c - keep].tolist())
    per = c // slices
    pos = scores.view(slices, per).sum(0)
    drop = torch.argsort(pos)[: per - keep // slices].tolist()
    return sorted(j * per + p for j in range(slices) for p in drop)
