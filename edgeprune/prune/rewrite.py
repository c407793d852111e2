"""Automatic rewrites that make blocks prunable, with outputs unchanged.

torch-pruning 1.6.1 cannot prune a YOLOv8 ``C2f`` block (or YOLO11's
``C3k2``, a C2f subclass): ``cv1``'s output is cut in two with
``chunk(2, 1)``, and its dependency graph maps the removed indices of ``cv1``
onto both halves as if they were one tensor (importance estimation then
indexes past the end of the bottleneck convs; see tests/test_prune_c2f.py).
A split half cannot shrink on its own, either: ``chunk`` always cuts in the
middle, and ``split((c, c))`` has its sizes written in the model's code.

The fix is the one Torch-Pruning's own YOLOv8 example applies by hand, done
here automatically: the conv whose output is split (Conv-BN-act, ``2c``
outputs) becomes two modules (``cv1a``, ``cv1b``) with ``c`` outputs each,
holding the two halves of its weights, and the block's forward concatenates
their outputs instead of chunking one. Each half is then an ordinary layer
whose channels can shrink independently.

Which blocks, by structure rather than by name: the block is traced once on
its real input, and it is a C2f when one child's output goes into a
``chunk``/``split`` into two equal halves along channels, a ``ModuleList``
child runs on the last piece, and another child takes the ``torch.cat`` of
the pieces. The rewrite is then checked on that input (outputs equal to
``1e-5`` relative) and undone if it changes anything: such a block keeps its
split, and :mod:`edgeprune.prune.groups` protects its channels with a reason.

The block object itself is kept, only its class is swapped for a subclass
of its own class (:class:`SplitChunkBlock` first in the MRO, so its forward
wins): every attribute the parent model reads survives. Ultralytics'
``DetectionModel`` walks its layers reading ``m.f``, ``m.i``, ``m.type`` and
``m.np``; a replacement object without them broke the model
(``AttributeError``), and ``isinstance(block, C2f)`` checks elsewhere keep
holding.

Example::

    names = make_prunable(model, example_input)    # ['model.2', 'model.4', ...]
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeprune.checks.outputs import flatten
from edgeprune.errors import PruneError

REWRITE_KIND = "split-chunk"
TOL = 1e-5  # relative to max(1, max |block output|)


class SplitChunkBlock(nn.Module):
    """Mixed into a rewritten C2f-like block: ``cv1 + chunk`` became two convs.

    ``_ep_split = (source, chain, sink)`` names the block's children: the
    split conv (now ``source + 'a'`` and ``source + 'b'``), the ModuleList run
    on the last piece, and the conv taking the concat.
    """

    _ep_split: tuple[str, str, str]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source, chain, sink = self._ep_split
        y = [getattr(self, source + "a")(x), getattr(self, source + "b")(x)]
        y.extend(m(y[-1]) for m in getattr(self, chain))
        return getattr(self, sink)(torch.cat(y, 1))


_CLASSES: dict[type, type] = {}


def _rewritten_class(cls: type) -> type:
    """``cls`` with :class:`SplitChunkBlock`'s forward; same name, so printing and type checks agree."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(
            cls.__name__,
            (SplitChunkBlock, cls),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "_ep_original": cls},
        )
    return _CLASSES[cls]


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


def _halves(fn) -> bool:
    """Is autograd node ``fn`` a split of dim 1 into two equal pieces?"""
    name = fn.name()
    if "Split" not in name or getattr(fn, "_saved_dim", None) not in (1, -3):
        return False
    sizes = getattr(fn, "_saved_self_sym_sizes", None)
    if sizes is None or len(sizes) < 2 or sizes[1] % 2:
        return False
    if hasattr(fn, "_saved_split_sizes"):
        return tuple(fn._saved_split_sizes) == (sizes[1] // 2, sizes[1] // 2)
    return getattr(fn, "_saved_split_size", None) == sizes[1] // 2


def _roles(block: nn.Module, x: torch.Tensor) -> tuple[str, str, str] | None:
    """Trace ``block`` on ``x``: ``(split conv, chain, concat sink)`` child names if it is C2f-shaped."""
    children = dict(block.named_children())
    chains = [n for n, m in children.items() if isinstance(m, nn.ModuleList) and len(m)]
    if len(chains) != 1:
        return None
    outs, ins, hooks = {}, {}, []
    for name, child in children.items():
        if name == chains[0]:
            continue

        def hook(_mod, args, out, name=name):
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                outs.setdefault(out.grad_fn, name)
            if args and isinstance(args[0], torch.Tensor) and args[0].grad_fn is not None:
                ins.setdefault(name, args[0].grad_fn)

        hooks.append(child.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            out = block(x.detach().requires_grad_(True))
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        return None
    source = None
    stack, seen = [out.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if _halves(fn) and fn.next_functions and fn.next_functions[0][0] in outs:
            source = outs[fn.next_functions[0][0]]
        stack.extend(nxt for nxt, _ in fn.next_functions)
    sinks = [n for n, fn in ins.items() if "Cat" in fn.name()]
    if source is None or len(sinks) != 1 or sinks[0] == source:
        return None
    return source, chains[0], sinks[0]


def _block_inputs(model: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """The input each named block gets in a forward of ``model`` (blocks called once, one tensor)."""
    got: dict[str, list] = {n: [] for n in names}
    hooks = []
    for n in names:

        def pre(_mod, args, n=n):
            got[n].append(args[0].detach().clone() if len(args) == 1 and isinstance(args[0], torch.Tensor) else None)

        hooks.append(model.get_submodule(n).register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: v[0] for n, v in got.items() if len(v) == 1 and v[0] is not None}


def _rewrite(block: nn.Module, roles: tuple[str, str, str]) -> nn.Module | None:
    """Rewrite ``block`` in place; returns the split conv it replaced (for :func:`_undo`), or None."""
    source = roles[0]
    conv = getattr(block, source)
    layers = _param_layers(conv)
    c2 = layers[0].out_channels if layers and isinstance(layers[0], nn.Conv2d) else None
    if c2 is None or c2 % 2:
        return None
    a, b = _slice_out(conv, slice(0, c2 // 2)), _slice_out(conv, slice(c2 // 2, c2))
    if a is None or b is None:
        return None
    block.__class__ = _rewritten_class(type(block))
    block._ep_split = roles
    _swap_children(block, {source: {source + "a": a, source + "b": b}})
    return conv


def _swap_children(block: nn.Module, swaps: dict[str, dict[str, nn.Module]]) -> None:
    """Replace children in place, keeping their order (group ids follow module order)."""
    new = {}
    for name, child in block._modules.items():
        new.update(swaps.get(name, {name: child}))
    block._modules.clear()
    block._modules.update(new)


def _undo(block: nn.Module, conv: nn.Module) -> None:
    source = block._ep_split[0]
    _swap_children(block, {source + "a": {source: conv}, source + "b": {}})
    block.__class__ = type(block)._ep_original
    del block._ep_split


def _same(ref: list[torch.Tensor], new: list[torch.Tensor]) -> bool:
    if len(ref) != len(new) or any(r.shape != n.shape for r, n in zip(ref, new, strict=True)):
        return False
    scale = max([1.0] + [float(r.abs().max()) for r in ref if r.numel()])
    err = max([0.0] + [float((r - n).abs().max()) for r, n in zip(ref, new, strict=True) if r.numel()])
    return err <= TOL * scale


def _outputs(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.clone() for t in flatten(module(x))]


def make_prunable(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    only: list[str] | None = None,
    check: bool = True,
) -> list[str]:
    """Rewrite every C2f-like block of ``model`` in place; returns the rewritten names.

    ``only`` restricts the rewrite to those module names (used when loading a
    saved model, which records them; a name that is not a C2f-like block
    there raises :class:`PruneError`). With ``check``, each block's output
    on its real input is compared before and after; a rewrite that changes
    it is undone and the block is left as it was.
    """
    model.eval()
    candidates = [
        n
        for n, m in model.named_modules()
        if n
        and not isinstance(m, SplitChunkBlock)
        and any(isinstance(c, nn.ModuleList) for c in m.children())
    ]
    inputs = _block_inputs(model, example_input, candidates) if candidates else {}
    found = {n: r for n in inputs if (r := _roles(model.get_submodule(n), inputs[n])) is not None}
    if only is not None:
        missing = [n for n in only if n not in found]
        if missing:
            raise PruneError(
                f"cannot rewrite {', '.join(missing)}: no C2f-like block of that name "
                "(the saved model was made from a different architecture)"
            )
        found = {n: found[n] for n in only}
    done = []
    for name, roles in found.items():
        block = model.get_submodule(name)
        ref = _outputs(block, inputs[name]) if check else None
        conv = _rewrite(block, roles)
        if conv is None:
            continue
        if check:
            try:
                ok = _same(ref, _outputs(block, inputs[name]))
            except RuntimeError:  # the rewritten block does not even run
                ok = False
            if not ok:
                _undo(block, conv)
                continue
        done.append(name)
    return done


def rewritten_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks :func:`make_prunable` has rewritten in ``model``."""
    return [n for n, m in model.named_modules() if isinstance(m, SplitChunkBlock)]
