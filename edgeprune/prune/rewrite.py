"""Automatic rewrites that make blocks prunable, with outputs unchanged.

torch-pruning 1.6.1 cannot prune a YOLOv8 ``C2f`` block: ``cv1``'s output is
cut in two with ``chunk(2, 1)``, and its dependency graph maps the removed
indices of ``cv1`` onto both halves as if they were one tensor (importance
estimation then indexes past the end of the bottleneck convs; see
tests/test_prune_c2f.py). A split half cannot shrink on its own, either:
``chunk`` always cuts in the middle.

The fix is the one Torch-Pruning's own YOLOv8 example applies by hand, done
here automatically: ``cv1`` (Conv-BN-act, ``2c`` outputs) becomes two
modules ``cv1a`` and ``cv1b`` with ``c`` outputs each, holding the two halves
of its weights, and the block's forward concatenates their outputs instead of
chunking one. Each half is then an ordinary layer whose channels can shrink
independently. A block is rewritten when it looks like a C2f (children
``cv1``, ``cv2``, a ``ModuleList`` ``m``, and ``chunk(``/``split(`` in its
class's forward); the model's outputs before and after are compared on a
random input, and a rewrite that changes them is undone and reported.

Example::

    names = make_prunable(model, example_input)    # ['model.2', 'model.4', ...]
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from edgeprune.errors import PruneError

REWRITE_KIND = "split-chunk"


class SplitChunkBlock(nn.Module):
    """A C2f whose ``cv1`` + ``chunk`` is two convs; same outputs as the original."""

    def __init__(self, cv1a: nn.Module, cv1b: nn.Module, cv2: nn.Module, m: nn.ModuleList) -> None:
        super().__init__()
        self.cv1a, self.cv1b, self.cv2, self.m = cv1a, cv1b, cv2, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1a(x), self.cv1b(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def _param_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def _slice_out(module: nn.Module, keep: slice) -> nn.Module | None:
    """A copy of a Conv2d[-BN][-act] keeping output channels ``keep``; None if not that shape."""
    layers = _param_layers(module)
    if not layers or not isinstance(layers[0], nn.Conv2d) or layers[0].groups != 1:
        return None
    if any(not isinstance(m, nn.BatchNorm2d) for m in layers[1:]):
        return None
    new = copy.deepcopy(module)
    for m in _param_layers(new):
        if isinstance(m, nn.Conv2d):
            m.weight = nn.Parameter(m.weight.data[keep].clone())
            if m.bias is not None:
                m.bias = nn.Parameter(m.bias.data[keep].clone())
            m.out_channels = m.weight.shape[0]
        else:
            m.weight = nn.Parameter(m.weight.data[keep].clone())
            m.bias = nn.Parameter(m.bias.data[keep].clone())
            m.running_mean = m.running_mean[keep].clone()
            m.running_var = m.running_var[keep].clone()
            m.num_features = m.weight.shape[0]
    return new


def _looks_like_c2f(module: nn.Module) -> bool:
    if not all(hasattr(module, a) for a in ("cv1", "cv2", "m")) or not isinstance(
        module.m, nn.ModuleList
    ):
        return False
    try:
        src = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return ".chunk(" in src or ".split(" in src


def _out_channels(module: nn.Module) -> int | None:
    layers = _param_layers(module)
    return layers[0].out_channels if layers and isinstance(layers[0], nn.Conv2d) else None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def make_prunable(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    only: list[str] | None = None,
    check: bool = True,
) -> list[str]:
    """Rewrite every C2f-like block of ``model`` in place; returns the rewritten names.

    ``only`` restricts the rewrite to those module names (used when loading a
    saved model, which records them). With ``check``, outputs are compared
    before and after (``max_abs <= 1e-5 * max(1, max|out|)``); a mismatch
    undoes the rewrite and raises :class:`PruneError` naming the block.
    """
    model.eval()
    candidates = [
        (n, m)
        for n, m in model.named_modules()
        if n and not isinstance(m, SplitChunkBlock) and _looks_like_c2f(m)
    ]
    if only is not None:
        found = {n for n, _ in candidates}
        missing = [n for n in only if n not in found]
        if missing:
            raise PruneError(
                f"cannot rewrite {', '.join(missing)}: no C2f-like block of that name "
                "(the saved model was made from a different architecture)"
            )
        candidates = [(n, m) for n, m in candidates if n in only]
    if not candidates:
        return []
    ref = _outputs(model, example_input) if check else None
    done: list[tuple[str, nn.Module]] = []
    for name, block in candidates:
        c2 = _out_channels(block.cv1)
        if c2 is None or c2 % 2:
            continue
        half = c2 // 2
        a, b = _slice_out(block.cv1, slice(0, half)), _slice_out(block.cv1, slice(half, c2))
        if a is None or b is None:
            continue
        _replace(model, name, SplitChunkBlock(a, b, block.cv2, block.m))
        done.append((name, block))
    if check and done:
        try:
            new = _outputs(model, example_input)
            scale = max(1.0, max(float(r.abs().max()) for r in ref))
            err = max(float((r - n).abs().max()) for r, n in zip(ref, new, strict=True))
        except RuntimeError:  # the rewritten block does not even run
            err, scale = float("inf"), 1.0
        if err > 1e-5 * scale:
            for name, block in done:
                _replace(model, name, block)
            raise PruneError(
                f"rewriting {', '.join(n for n, _ in done)} (cv1 + chunk -> two convs) changed the "
                f"outputs by {err:.3g}: its forward is not C2f's; protect these layers or rewrite by hand"
            )
    return [n for n, _ in done]


def rewritten_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks :func:`make_prunable` has rewritten in ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, SplitChunkBlock)]
