"""Which channels a group keeps: importance criteria over a whole coupled group.

=========  ==============================================================
criterion  score of a channel (summed over every layer of its group)
=========  ==============================================================
l1         L1 norm of its weights (torch-pruning GroupMagnitudeImportance p=1)
l2         L2 norm of its weights (p=2)
bn         |gamma| of its BatchNorms (BNScaleImportance); groups with no
           BatchNorm fall back to l1
taylor     first-order Taylor |w * dL/dw| (GroupTaylorImportance); needs
           data: gradients are accumulated over the batches given
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
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "first": lambda: None,
    }[criterion]()


def group_scores(criterion: str, group, channels: int, importance=None) -> torch.Tensor:
    """One score per channel of ``group`` (a torch-pruning Group over all its channels)."""
    if criterion == "first":
        return torch.arange(channels, 0, -1, dtype=torch.float32)
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


def accumulate_taylor_grads(
    model: nn.Module, data: Iterable, *, loss_fn: Callable | None = None
) -> int:
    """Backpropagate over ``data`` so parameters carry gradients for Taylor scores.

    ``data`` yields inputs or ``(inputs, targets)``; with targets the loss is
    cross-entropy (or ``loss_fn(outputs, targets)``), without it the sum of
    squared outputs. Returns the number of samples seen.
    """
    model.eval()  # BatchNorm statistics must not move
    model.zero_grad(set_to_none=True)
    seen = 0
    with torch.enable_grad():
        for batch in data:
            x, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
            out = model(x)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            if y is not None:
                loss = (loss_fn or nn.functional.cross_entropy)(outs[0], y)
            else:
                loss = sum((o.float() ** 2).mean() for o in outs)
            loss.backward()
            seen += int(x.shape[0])
    if not seen:
        raise PruneError("importance 'taylor' needs data: no batches were given")
    return seen


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
