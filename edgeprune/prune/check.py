"""Is the pruned model the original with the removed channels taken out? (the surgery check)

Removing a channel is meant to equal zeroing it: its conv rows and
BatchNorm scale and shift set to 0, so it carries 0 to every consumer
(ReLU, ReLU6, SiLU, GELU, hardswish, max-pool, upsample, add, concat and a
squeeze-excite gate ``x * gate`` all keep 0 at 0). :func:`check_surgery`
zeroes the channels a pruning removed in an unpruned copy of the model and
compares both models' outputs. A mismatch means the surgery cut something
other than those channels: a concat offset, a split, a grouped conv or a
Linear after flatten was sliced wrongly. That is the failure plain
torch-pruning meets silently on unfamiliar blocks, and this check turns it
into an error naming the groups.

Normalisation over channels breaks that equivalence, and not because the
surgery is wrong. A LayerNorm over C (ConvNeXt's channels-last
``nn.LayerNorm``, its hand-written channels-first one, a ViT's) computes
its mean and variance over every channel it sees: a zeroed channel still
counts (the mean is divided by C, not by the kept count, and 0 is not the
mean), while a removed one does not exist. So zeroing gives a *different*
function from removing, and comparing against it would refuse every correct
ConvNeXt pruning (it did: relative difference 0.34).

The check therefore compares such layers differently: in the reference,
each normalisation whose channels a group removed (``normalised``: layer
name -> removed indices) is replaced by a copy sliced to its kept channels,
applied to the kept channels of its input, with 0 scattered back into the
removed positions (:class:`_KeptChannels`). That is exactly what removal
means for that one layer, built independently of torch-pruning (it slices
only the layer's own per-channel parameters, on the indices the group
removed at its source), while everything around it is still checked by
zeroing: which channels reach the LayerNorm, every concat offset, the
Linear pointwise convs after it, the layer scale. A wrong cut in the
LayerNorm itself or anywhere else still shows up (tests/test_zoo.py swaps
two kept LayerNorm channels and the check fails). Per-channel layers that
do not mix channels (BatchNorm, a layer scale ``x * gamma``) are
equivalent either way, so the same treatment is safe for any leaf layer
that owns per-channel parameters.

What remains unverifiable this way: an op outside a layer that does not
keep 0 at 0 on the group's own channels (``x + 1``, a bare sigmoid) or
that mixes channels without parameters (``x - x.mean(1)`` written inline).
The check reports a difference there; ``prune_(..., verify=False)``
skips it when you know the op.

When such an op is known and fine, ``prune_(..., verify=False)`` (CLI
``--no-verify``) skips the check, or ``protect=[group id]`` (CLI ``--protect``)
keeps the group whole. The error lists every group in ``details["groups"]``
(the JSON error).

Example::

    removed = {"features.2.conv.0.0": [("features.2.conv.0.0", [3, 7]), ("features.2.conv.0.1", [3, 7])]}
    err = check_surgery(unpruned_copy, pruned, removed, x, normalised={"stages.1.0.norm": [3, 7]})
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.checks.outputs import compared
from edgeprune.errors import PruneError

TOL = 1e-4  # relative to max(1, max |output|)


def _outs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return compared(model, x)


def _outs_exact(reference: nn.Module, pruned: nn.Module, x: torch.Tensor) -> tuple[list, list]:
    """Both models' outputs, computed in float64 where the models run in it (copies; ``pruned`` is left as
    it is): in float32 a deep model's rounding alone, summing over fewer channels in another order, reached
    1.2e-4 of the output range (YOLO26n at 320 px, its boxes in pixels), over ``TOL``, while a wrong cut is
    off by whole units. In float64 rounding is near 1e-12. A model that does not run in float64 (a cast
    inside its forward) is compared in float32."""
    if x.is_floating_point():
        try:
            return _outs(reference.double(), x.double()), _outs(copy.deepcopy(pruned).double(), x.double())
        except (RuntimeError, TypeError):  # a dtype fixed inside the model's forward
            reference.float()
    return _outs(reference, x), _outs(pruned, x)


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


class _KeptChannels(nn.Module):
    """A per-channel layer applied to its kept channels only; removed positions output 0.

    Which dimension of its input holds the channels is read from what the
    layer does, not from its class: timm's ``LayerNorm2d`` is an
    ``nn.LayerNorm`` subclass that normalises dim 1 of an NCHW input (it
    permutes inside), ``nn.LayerNorm`` itself the last dim of a channels-last
    one (slicing the last dim of an NCHW input cut its width: ``index out of
    range``). One dim of the channel count: that one. Several (a 40-channel
    map 40 wide): the layer is run once with one input value changed, and
    the dim along which the outputs change is the one it normalises; a layer
    that mixes nothing (BatchNorm, a layer scale) takes dim 1 of a 4-D input,
    else the last.
    """

    def __init__(self, layer: nn.Module, channels: int, kept: list[int]) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long))
        self.full = layer  # the unpruned layer: probed for its channel dim
        self.layer = _sliced(layer, channels, kept)
        self._dims: dict[tuple[int, ...], int] = {}

    def _dim(self, x: torch.Tensor) -> int:
        shape = tuple(x.shape)
        if shape not in self._dims:
            dims = [d for d in range(1, x.ndim) if x.shape[d] == self.channels]
            if not dims:
                raise PruneError(f"no dimension of size {self.channels} in an input of shape {shape}")
            self._dims[shape] = dims[0] if len(dims) == 1 else self._probe(x, dims)
        return self._dims[shape]

    def _probe(self, x: torch.Tensor, dims: list[int]) -> int:
        with torch.no_grad():
            nudged = x.clone()
            nudged[(0,) * x.ndim] += 1.0
            changed = (self.full(nudged) - self.full(x)).abs() > 0
        where = changed.nonzero()
        moving = [d for d in dims if where.shape[0] and len(torch.unique(where[:, d])) > 1]
        if len(moving) == 1:
            return moving[0]
        return 1 if 1 in dims and x.ndim == 4 else dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self._dim(x)
        y = self.layer(x.index_select(dim, self.kept))
        out = x.new_zeros(x.shape)
        return out.index_copy(dim, self.kept, y)


def _sliced(layer: nn.Module, channels: int, kept: list[int]) -> nn.Module:
    """A copy of ``layer`` whose per-channel parameters, buffers and sizes hold ``kept`` only."""
    new = copy.deepcopy(layer)
    idx = torch.tensor(kept, dtype=torch.long)
    for name, t in list(new.named_parameters(recurse=False)) + list(new.named_buffers(recurse=False)):
        if t is None or channels not in t.shape:
            continue
        d = list(t.shape).index(channels)
        sliced = t.detach().index_select(d, idx).clone()
        if isinstance(t, nn.Parameter):
            setattr(new, name, nn.Parameter(sliced, requires_grad=t.requires_grad))
        else:
            setattr(new, name, sliced)
    for attr, value in list(vars(new).items()):
        if value == (channels,):
            setattr(new, attr, (len(kept),))
        elif attr in ("num_features", "num_channels", "dim") and value == channels:
            setattr(new, attr, len(kept))
    return new


def _keep_only(model: nn.Module, name: str, removed: list[int]) -> None:
    layer = model.get_submodule(name)
    sizes = {t.shape[0] for t in layer.parameters(recurse=False) if t.ndim == 1}
    if not sizes or max(removed, default=-1) >= max(sizes):
        raise PruneError(f"{name}: cannot tell its channel count from its parameters")
    channels = max(sizes)  # per-channel parameters; a scalar one beside them is left as it is
    gone = set(removed)
    parent, _, child = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, child, _KeptChannels(layer, channels, [i for i in range(channels) if i not in gone]))


def check_surgery(
    reference: nn.Module,
    pruned: nn.Module,
    removed: dict[str, list[tuple[str, list[int]]]],
    x: torch.Tensor,
    *,
    normalised: dict[str, list[int]] | None = None,
) -> float:
    """Raise :class:`PruneError` unless ``pruned`` equals ``reference`` with ``removed`` taken out.

    ``reference`` (an unpruned copy, already rewritten) is modified: the
    removed channels are zeroed, and each layer in ``normalised`` (name ->
    removed channel indices) is applied to its kept channels only. Returns
    the relative difference found.
    """
    zero_removed(reference, removed)
    for name, idxs in (normalised or {}).items():
        _keep_only(reference, name, idxs)
    want, got = _outs_exact(reference, pruned, x)
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
