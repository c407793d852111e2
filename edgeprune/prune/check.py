"""Is the pruned model the original with the removed channels zeroed? (the surgery check)

Removing a channel is meant to equal zeroing it: its conv rows and
BatchNorm scale and shift set to 0, so it carries 0 to every consumer
(ReLU, ReLU6, SiLU, hardswish, max-pool, upsample, add and concat all keep
0 at 0). :func:`check_surgery` zeroes the channels a pruning removed in an
unpruned copy of the model and compares both models' outputs. A mismatch
means the surgery cut something other than those channels: a concat offset,
a split, a grouped conv or a Linear after flatten was sliced wrongly. That is
the failure plain torch-pruning meets silently on unfamiliar blocks, and this
check turns it into an error naming the groups.

Where a group's channels pass through an op that does not keep 0 at 0
(``x + 1``, a sigmoid gate on the group's own channels) or a normalisation across
channels (GroupNorm, LayerNorm over C), the check reports a
difference that is not a bug: ``prune_(..., verify=False)`` (CLI ``--no-verify``)
skips it, or ``protect=[group id]`` (CLI ``--protect``) keeps the group whole.
The error lists every group in ``details["groups"]`` (the JSON error).

Example::

    removed = {"features.2.conv.0.0": [("features.2.conv.0.0", [3, 7]), ("features.2.conv.0.1", [3, 7])]}
    err = check_surgery(unpruned_copy, pruned, removed, x)
"""

from __future__ import annotations

import torch
from torch import nn

from edgeprune.errors import PruneError

TOL = 1e-4  # relative to max(1, max |output|)


def _outs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def zero_removed(model: nn.Module, removed: dict[str, list[tuple[str, list[int]]]]) -> None:
    """Zero, in place, the output channels ``removed`` names in an unpruned ``model``.

    ``removed``: group id -> ``[(layer name, channel indices), ...]`` for every
    layer whose outputs the group removed (conv and Linear rows, BatchNorm).
    """
    layers = dict(model.named_modules())
    with torch.no_grad():
        for entries in removed.values():
            for name, idxs in entries:
                for attr in ("weight", "bias"):
                    p = getattr(layers[name], attr, None)
                    if isinstance(p, torch.Tensor) and p.ndim >= 1:
                        p[idxs] = 0


def check_surgery(
    reference: nn.Module,
    pruned: nn.Module,
    removed: dict[str, list[tuple[str, list[int]]]],
    x: torch.Tensor,
) -> float:
    """Raise :class:`PruneError` unless ``pruned`` equals ``reference`` with ``removed`` zeroed.

    ``reference`` (an unpruned copy, already rewritten) is modified. Returns
    the relative difference found.
    """
    zero_removed(reference, removed)
    want, got = _outs(reference, x), _outs(pruned, x)
    scale = max(1.0, max(float(w.abs().max()) for w in want))
    err = max(float((w - g).abs().max()) for w, g in zip(want, got, strict=True)) / scale
    if err > TOL:
        ids = list(removed)
        shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more (--json lists all)" if len(ids) > 4 else "")
        raise PruneError(
            f"the pruned model differs from the original with the removed channels zeroed "
            f"(relative {err:.2g} > {TOL:g}) in {len(ids)} pruned groups ({shown}): an op on their "
            "channels does not keep 0 at 0 (e.g. + a constant, a norm across channels), or the surgery "
            "is wrong; keep a group whole with --protect LAYER (its id), or skip this check with "
            "--no-verify if you know the op (Python: protect=[...], verify=False)",
            details={"groups": ids},
        )
    return err
