"""Coupled channel groups: which layers must shrink together.

Built on torch-pruning's ``DependencyGraph`` (it traces autograd and follows
residual adds, concats, splits, depthwise convs, pooling, upsampling and
flatten-before-Linear). edgeprune adds what it lacks:

- C2f blocks (``chunk`` after a conv) are rewritten first
  (:mod:`edgeprune.prune.rewrite`), outputs unchanged;
- grouped convs (``1 < groups < channels``): torch-pruning slices their
  weights as if the same local channels went from every conv group. edgeprune
  makes that true: a group feeding or leaving a grouped conv keeps a multiple
  of ``groups`` channels and removes the same positions from every slice
  (``PrunableGroup.slices``). A grouped conv reached through a concat is not
  handled: its group is protected (``reason``);
- protection: a group whose channels reach a model output (classifier,
  detection head convs) is never prunable, nor is the stem (the first conv
  run on the input) unless ``protect_stem=False``, nor a group touching a
  layer the user names.

A group's ``id`` is the name of the first (in ``named_modules`` order) conv or
Linear whose output channels it removes: stable across runs for the same
architecture, so a plan applies to a freshly built model.

Example::

    groups = prunable_groups(model, torch.zeros(1, 3, 224, 224), protect=["features.18"])
    [(g.id, g.channels) for g in groups][:2]   # [('features.1.conv.1', 16), ('features.2.conv.0.0', 96)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from edgeprune.errors import PruneError, did_you_mean, require


@dataclass(frozen=True)
class PrunableGroup:
    """One set of coupled channels.

    ``layers``: modules whose output channels shrink (convs, Linear, BN);
    ``consumers``: modules whose input channels shrink; ``slices``: kept counts
    are multiples of it and the same positions go from each slice (grouped convs).
    """

    id: str
    channels: int
    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    slices: int = 1
    prunable: bool = True
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channels": self.channels,
            "layers": list(self.layers),
            "consumers": list(self.consumers),
            "slices": self.slices,
            "prunable": self.prunable,
            "reason": self.reason,
        }


@dataclass
class GroupAnalysis:
    """A traced model: its dependency graph and every group (prunable or not)."""

    dg: object
    groups: list[PrunableGroup]
    roots: dict[str, nn.Module] = field(repr=False)

    def prunable(self) -> list[PrunableGroup]:
        return [g for g in self.groups if g.prunable]


def _is_grouped(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and 1 < m.groups
        and not (m.groups == m.in_channels == m.out_channels)
    )


def _trace_ends(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module | None, set[nn.Module]]:
    """The first conv/Linear run on the input, and the layers whose outputs reach a model output.

    The second walks autograd back from every output and stops at the first
    layer with parameters on each path: those layers' channels are output
    channels (a detection head's last convs, a classifier, or a feature map
    that is both returned and consumed further).
    """
    order: list[nn.Module] = []
    made: dict = {}

    def hook(mod, _inp, out):
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            order.append(mod)
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            made[out.grad_fn] = mod

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.enable_grad():
            out = model(x)
    finally:
        for h in hooks:
            h.remove()
    outs = [
        o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, torch.Tensor)
    ]
    ends: set[nn.Module] = set()
    stack, seen = [o.grad_fn for o in outs if o.grad_fn is not None], set()
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if fn in made:
            ends.add(made[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return (order[0] if order else None), ends


def analyse(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    protect: list[str] | tuple[str, ...] = (),
    protect_stem: bool = True,
) -> GroupAnalysis:
    """Trace ``model`` (already made prunable) and describe every channel group."""
    tp = require("torch_pruning", "torch", "structured pruning")
    names = {m: n for n, m in model.named_modules()}
    by_name = dict(model.named_modules())
    for p in protect:
        if p not in by_name:
            hint = did_you_mean(p, by_name, n=3, cutoff=0.5) or "see the layer names in the plan JSON"
            raise PruneError(f"--protect {p}: no layer of that name in the model; {hint}")
    protected = {by_name[p] for p in protect}
    protected |= {m for p in protect for m in by_name[p].modules()}
    model.eval()
    with torch.enable_grad():
        dg = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input, verbose=False
        )
    stem, ends = _trace_ends(model, example_input)
    stem = stem if protect_stem else None
    order = {m: i for i, m in enumerate(model.modules())}
    groups, roots = [], {}
    for group in dg.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        outs, ins, grouped_in, grouped_out = [], [], [], []
        channels = len(group[0].idxs)
        for dep, idxs in group:
            mod = dep.target.module
            if not isinstance(mod, nn.Module) or mod not in names:
                continue
            if dg.is_out_channel_pruning_fn(dep.handler):
                outs.append(mod)
                if _is_grouped(mod):
                    grouped_out.append((mod, len(idxs)))
            elif dg.is_in_channel_pruning_fn(dep.handler):
                ins.append(mod)
                if _is_grouped(mod):
                    grouped_in.append((mod, len(idxs)))
        param_outs = sorted(
            {m for m in outs if isinstance(m, (nn.Conv2d, nn.Linear))}, key=order.get
        )
        if not param_outs:
            continue
        root = param_outs[0]
        gid = names[root]
        reason = ""
        if ends & set(outs) or not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in ins):
            reason = "its channels are a model output"
        elif stem is not None and stem in outs:
            reason = "input stem"
        elif protected & (set(outs) | set(ins)):
            hit = sorted(names[m] for m in protected & (set(outs) | set(ins)))
            reason = f"protected ({', '.join(hit)})"
        slices = 1
        for mod, n in grouped_in + grouped_out:
            full = mod.in_channels if (mod, n) in grouped_in else mod.out_channels
            if n != channels or full != channels:
                reason = reason or f"grouped conv {names[mod]} reached through a concat or split"
            slices = math.lcm(slices, mod.groups)
        if channels % slices:
            reason = reason or f"{channels} channels do not divide into {slices} conv groups"
        roots[gid] = root
        groups.append(
            PrunableGroup(
                id=gid,
                channels=channels,
                layers=tuple(names[m] for m in sorted(set(outs), key=order.get)),
                consumers=tuple(names[m] for m in sorted(set(ins), key=order.get)),
                slices=slices,
                prunable=not reason,
                reason=reason,
            )
        )
    groups.sort(key=lambda g: order[roots[g.id]])
    return GroupAnalysis(dg=dg, groups=groups, roots=roots)


def prunable_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    protect: list[str] | tuple[str, ...] = (),
    protect_stem: bool = True,
    include_protected: bool = False,
) -> list[PrunableGroup]:
    """The channel groups of ``model`` that a plan may shrink, in model order.

    C2f-like blocks are rewritten in place first (outputs unchanged), so call
    this on the model you will prune. ``include_protected`` also returns the
    groups that may not shrink (``prunable=False`` with a ``reason``).
    """
    from edgeprune.prune.rewrite import make_prunable
    from edgeprune.prune.threads import one_thread

    with one_thread():
        make_prunable(model, example_input)
        analysis = analyse(model, example_input, protect=protect, protect_stem=protect_stem)
    return analysis.groups if include_protected else analysis.prunable()
