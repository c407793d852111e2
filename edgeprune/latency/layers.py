"""Which layers a channel plan changes, and each layer's shape under a plan.

A latency table prices *layers* (a conv or a Linear with given input and
output channels, kernel, stride, padding, groups and input size); a plan
sets *groups* (kept channels per coupled channel group). This module is the
bridge, derived from :func:`edgeprune.prune.prunable_groups`:

- a layer's **output** channels are its group's kept count when the layer is
  in a prunable group's ``layers``, else fixed;
- its **input** channels are the kept counts of the groups that list it in
  ``consumers`` (several for a concat, times a factor for a flatten before a
  Linear: 64 channels x 4x4 -> 1,024 features), plus any fixed part;
- a depthwise conv (groups == in == out) sits in its group's ``layers``: in,
  out and groups all follow the group;
- spatial input sizes (and how often a module runs) come from forward hooks
  on one traced input.

Candidates (:func:`candidate_counts`) are the kept counts a group may take:
multiples of ``lcm(align, slices)`` from ``min_keep`` of the group up to all
of it, thinned to at most ``max_steps`` (the ends are always kept). The
allocation chooses among exactly these, and the table measures exactly these
on each layer's output axis, so nothing the allocation can pick is a guess.

Example::

    inv = layer_inventory(model, x)
    [lay.shape_under({"features.3": 16}).cin for lay in inv.layers]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from edgeprune._threads import one_thread

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.

DEFAULT_MIN_KEEP = 0.25
DEFAULT_MAX_STEPS = 48


@dataclass(frozen=True)
class LayerShape:
    """A conv or Linear as the runtime sees it: what a micro-model is built from.

    ``hw``: input height and width for a conv; for a Linear ``(tokens, 1)``
    (the product of the input's leading dimensions: 1 for a classifier).
    ``padding``: symmetric pads (PyTorch's ``padding``).
    """

    kind: str  # "conv" | "linear"
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    hw: tuple[int, int] = (1, 1)
    bias: bool = True

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.cin == self.cout

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind == "linear":
            return self.hw
        return tuple(
            (self.hw[i] + 2 * self.padding[i] - self.dilation[i] * (self.kernel[i] - 1) - 1)
            // self.stride[i]
            + 1
            for i in (0, 1)
        )  # type: ignore[return-value]

    @property
    def macs(self) -> int:
        oh, ow = self.out_hw
        if self.kind == "linear":
            return self.hw[0] * self.cin * self.cout
        return oh * ow * self.cout * (self.cin // self.groups) * self.kernel[0] * self.kernel[1]

    def with_channels(self, cin: int, cout: int) -> LayerShape:
        """This layer with other channel counts (a depthwise conv's groups follow them)."""
        groups = cin if self.depthwise else self.groups
        return replace(self, cin=cin, cout=cout, groups=groups)

    def family(self) -> str:
        """Everything but the channel counts: entries of one family differ only in cin/cout."""
        if self.kind == "linear":
            return f"linear t{self.hw[0]} {'b' if self.bias else 'nb'}"
        g = "dw" if self.depthwise else f"g{self.groups}"
        return (
            f"conv k{self.kernel[0]}x{self.kernel[1]} s{self.stride[0]}x{self.stride[1]} "
            f"p{self.padding[0]}x{self.padding[1]} d{self.dilation[0]}x{self.dilation[1]} {g} "
            f"in{self.hw[0]}x{self.hw[1]} {'b' if self.bias else 'nb'}"
        )

    def key(self) -> str:
        """A stable text key: the table's index and the micro-model's name."""
        return f"{self.family()} c{self.cin}x{self.cout}"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "cin": self.cin, "cout": self.cout, "kernel": list(self.kernel),
            "stride": list(self.stride), "padding": list(self.padding),
            "dilation": list(self.dilation), "groups": self.groups, "hw": list(self.hw),
            "bias": self.bias,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> LayerShape:
        return cls(
            kind=str(d["kind"]), cin=int(d["cin"]), cout=int(d["cout"]),
            kernel=tuple(d["kernel"]), stride=tuple(d["stride"]), padding=tuple(d["padding"]),
            dilation=tuple(d["dilation"]), groups=int(d["groups"]), hw=tuple(d["hw"]),
            bias=bool(d["bias"]),
        )  # type: ignore[arg-type]


@dataclass(frozen=True)
class Layer:
    """One conv/Linear of the model and how its channels follow the plan.

    ``in_groups``: ``(group id, channels per kept channel, group's full count)``
    for each prunable group feeding the input; ``in_fixed``: input channels
    from no prunable group.
    """

    name: str
    shape: LayerShape  # unpruned
    out_group: str | None  # prunable group setting cout (None: fixed)
    in_groups: tuple[tuple[str, int, int], ...]
    in_fixed: int
    calls: int = 1  # times the module runs per inference

    def channels_under(self, keep: Mapping[str, int]) -> tuple[int, int]:
        """``(cin, cout)`` when the groups keep ``keep`` (a group not in it keeps everything)."""
        s = self.shape
        cout = keep.get(self.out_group, s.cout) if self.out_group else s.cout
        if s.depthwise:
            return cout, cout
        if not self.in_groups:
            return s.cin, cout
        return self.in_fixed + sum(keep.get(g, full) * m for g, m, full in self.in_groups), cout

    def shape_under(self, keep: Mapping[str, int]) -> LayerShape:
        """The layer's shape when the groups keep ``keep``."""
        return self.shape.with_channels(*self.channels_under(keep))

    @property
    def groups_used(self) -> tuple[str, ...]:
        gs = [g for g, _, _ in self.in_groups]
        if self.out_group:
            gs.append(self.out_group)
        return tuple(dict.fromkeys(gs))


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@dataclass
class Inventory:
    """A traced model: every channel group (protected ones too) and every priced layer."""

    groups: list  # PrunableGroup, model order
    layers: list[Layer]

    @property
    def prunable(self) -> list:
        return [g for g in self.groups if g.prunable]


def _consumer_channels(model, analysis) -> dict[str, dict[str, int]]:
    """{layer: {group: input channels of the layer that the group's channels reach}}.

    Read from torch-pruning's dependency graph: a group reaching a layer twice
    through a concat (a C2f block's split and its residual branch) counts twice,
    a flatten before a Linear counts its positions (64 channels x 4x4 -> 1,024).
    """
    names = {m: n for n, m in model.named_modules()}
    dg = analysis.dg
    out: dict[str, dict[str, set]] = {}
    for g in analysis.groups:
        if not g.prunable:
            continue
        root = analysis.roots[g.id]
        fn = dg.get_pruner_of_module(root).prune_out_channels
        for dep, idxs in dg.get_pruning_group(root, fn, list(range(g.channels))):
            name = names.get(dep.target.module)
            if name is not None and dg.is_in_channel_pruning_fn(dep.handler):
                out.setdefault(name, {}).setdefault(g.id, set()).update(int(i) for i in idxs)
    return {n: {g: len(ix) for g, ix in per.items()} for n, per in out.items()}


def layer_inventory(
    model, x, *, protect: Iterable[str] = (), protect_stem: bool = True
) -> Inventory:
    """Every Conv2d and Linear of ``model`` with its unpruned shape and the groups it follows.

    Traces the model like :func:`edgeprune.prune.prunable_groups` (C2f blocks
    are rewritten in place first; protected groups stay fixed). Other layers
    (pooling, adds, activations, 1-D/3-D or transposed convs) are not priced
    here: the whole-model calibration covers them.
    """
    import torch
    from torch import nn

    from edgeprune.prune.groups import analyse
    from edgeprune.prune.rewrite import make_prunable

    with one_thread():
        make_prunable(model, x)
        analysis = analyse(model, x, protect=tuple(protect), protect_stem=protect_stem)
        reach = _consumer_channels(model, analysis)
    prunable = {g.id: g for g in analysis.groups if g.prunable}
    seen: dict[str, list] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(mod, inp, _out):
        t = inp[0] if isinstance(inp, (tuple, list)) and inp else None
        rec = seen.setdefault(names[mod], [None, 0])
        rec[1] += 1
        if rec[0] is None and isinstance(t, torch.Tensor):
            rec[0] = tuple(t.shape)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)
    ]
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in handles:
            h.remove()
    out_of = {name: g.id for g in prunable.values() for name in g.layers}

    layers = []
    for name, mod in model.named_modules():
        if type(mod) not in (nn.Conv2d, nn.Linear) or name not in seen or seen[name][0] is None:
            continue
        in_shape, calls = seen[name]
        if isinstance(mod, nn.Conv2d):
            shape = LayerShape(
                kind="conv", cin=mod.in_channels, cout=mod.out_channels,
                kernel=_pair(mod.kernel_size), stride=_pair(mod.stride),
                padding=_pair(mod.padding) if not isinstance(mod.padding, str) else (0, 0),
                dilation=_pair(mod.dilation), groups=mod.groups,
                hw=(int(in_shape[-2]), int(in_shape[-1])), bias=mod.bias is not None,
            )
            if isinstance(mod.padding, str):  # 'same': the symmetric pads that give it
                k, d = shape.kernel, shape.dilation
                shape = replace(shape, padding=tuple(d[i] * (k[i] - 1) // 2 for i in (0, 1)))
        else:
            tokens = math.prod(int(s) for s in in_shape[:-1]) if len(in_shape) > 1 else 1
            shape = LayerShape(
                kind="linear", cin=mod.in_features, cout=mod.out_features,
                hw=(tokens, 1), bias=mod.bias is not None,
            )
        in_groups: tuple[tuple[str, int, int], ...] = ()
        in_fixed = shape.cin
        if not shape.depthwise:
            for gid, n in reach.get(name, {}).items():
                c = prunable[gid].channels
                if n % c:  # not a whole number of copies: price the input as fixed
                    in_groups, in_fixed = (), shape.cin
                    break
                in_groups += ((gid, n // c, c),)
                in_fixed -= n
        if in_fixed < 0:
            in_groups, in_fixed = (), shape.cin
        layers.append(Layer(name, shape, out_of.get(name), in_groups, in_fixed, calls))
    return Inventory(groups=analysis.groups, layers=layers)


def candidate_counts(
    channels: int,
    *,
    multiple: int = 1,
    min_keep: float = DEFAULT_MIN_KEEP,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> list[int]:
    """Kept counts a group may take, ascending: multiples of ``multiple`` from ``min_keep`` up, and all.

    A group smaller than ``multiple`` keeps everything. With more than
    ``max_steps`` multiples, every k-th is taken (always the smallest and the
    full count): the step the table measures and the allocation chooses.
    """
    if channels <= multiple:
        return [channels]
    lo = max(multiple, math.ceil(min_keep * channels / multiple) * multiple)
    steps = list(range(lo, channels, multiple))
    if len(steps) + 1 > max_steps:
        k = math.ceil(len(steps) / (max_steps - 1))
        steps = steps[::k]
    return sorted(set(steps) | {channels})
