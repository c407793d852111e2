"""Coupled channel groups: which layers must shrink together, and which must not shrink at all.

Built on torch-pruning's ``DependencyGraph`` (it traces autograd and follows
residual adds, concats, splits, depthwise convs, pooling, upsampling and
flatten-before-Linear). edgeprune adds what it lacks:

- C2f blocks (``chunk`` after a conv) are rewritten first
  (:mod:`edgeprune.prune.rewrite`), outputs unchanged;
- a group's unit is its smallest producing layer: in a Ghost module
  (``cat([x1, cheap(x1)])``) one primary channel carries its cheap twin, so
  the group counts the primary conv's channels, not the concat's;
- grouped convs (``1 < groups < channels``): torch-pruning slices their
  weights as if the same local channels went from every conv group. edgeprune
  makes that true: a group feeding or leaving a grouped conv keeps a multiple
  of ``groups`` channels and removes the same positions from every slice
  (``PrunableGroup.slices``). A grouped conv reached through a concat is not
  handled: its group is protected (``reason``);
- sizes written in the model's code: a group whose channels are split into
  pieces (``torch.split``/``chunk``/``unbind`` on channels), reshaped other
  than by squeezing or flattening trailing dims (attention's
  ``reshape(B, N, 3, heads, head_dim)``; ``view(B, heads, d, N)``), sliced
  to fewer channels (``x[:, :k]`` that cuts), or normalised in fixed groups
  (GroupNorm) cannot take fewer channels: it is protected, with the shapes in
  its reason. Pruning attention by whole heads would need the block's code
  to read its head count from the weights; timm's and Ultralytics' do not;
- sizes read back from a tensor: Ultralytics' attention views its heads
  back with ``.view(B, C, H, W)``, ``C`` read from its input's shape, which
  no autograd graph shows; a reshape that outputs exactly the shape of an
  input of a module it runs in protects that input's group
  (:func:`_sized_by_input`);
- layers whose result is dropped (a wrapper returning ``model(x)[0]`` of a
  YOLO26 leaves its one-to-one branch running but reaching no output) are
  traced too (:func:`_every_layer`), so their input channels shrink with
  the layers feeding them;
- protection: a group whose channels reach a model output (classifier,
  detection head convs) is never prunable, nor is the stem (the first conv
  run on the input) unless ``protect_stem=False``, nor a group touching a
  layer the user names. Outputs are those of
  :func:`edgeprune.checks.outputs.compared`: the maps an Ultralytics head
  returns of its own inputs (for its training loss) are not outputs, so the
  neck feeding the head prunes.

Every group that is kept whole says why: :func:`kept_whole` lists them
(protected, or left whole by a plan's rounding, e.g. a grouped conv whose
conv-group count and the board's alignment leave no smaller count), and
:func:`protected_note` turns that into the one line the CLI prints.

A group's ``id`` is the name of the first (in ``named_modules`` order) conv or
Linear with the fewest output channels among those it shrinks: stable across
runs for the same architecture, so a plan applies to a freshly built model.

Example::

    groups = prunable_groups(model, torch.zeros(1, 3, 224, 224), protect=["features.18"])
    [(g.id, g.channels) for g in groups][:2]   # [('features.1.conv.1', 16), ('features.2.conv.0.0', 96)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from edgeprune._threads import one_thread
from edgeprune.checks.outputs import compared, flatten
from edgeprune.errors import PruneError, did_you_mean, require
from edgeprune.prune.rewrite import make_prunable

OUTPUT_REASON = "its channels are a model output"


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


flat_tensors = flatten  # the one flatten (edgeprune.checks.outputs), under the name older callers import


class _Shapes(TorchFunctionMode):
    """Records the output shape of every op with an autograd node: reshapes' targets are not saved on it.

    With :meth:`watch` on a model it also records, for every reshape, the
    modules whose forward it runs in and their input tensors
    (``enclosing``), and which layer made each tensor (``made``): what
    :func:`_sized_by_input` needs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shapes: dict = {}
        self.enclosing: dict = {}
        self.made: dict = {}
        self._stack: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                self.shapes.setdefault(t.grad_fn, tuple(t.shape))
                if self._stack and getattr(func, "__name__", "") in ("view", "reshape"):
                    self.enclosing.setdefault(t.grad_fn, list(self._stack))
        return out

    def watch(self, model: nn.Module) -> list:
        """Hook every module of ``model``; returns the hook handles (remove them after the trace)."""

        def pre(mod, args):
            self._stack.append((mod, [a for a in args if isinstance(a, torch.Tensor)]))

        def post(mod, _args, out):
            if self._stack and self._stack[-1][0] is mod:
                self._stack.pop()
            if isinstance(out, torch.Tensor) and out.grad_fn is not None and any(
                True for _ in mod.parameters(recurse=False)
            ):
                self.made.setdefault(out.grad_fn, mod)

        hooks = []
        for m in model.modules():
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        return hooks


def _is_grouped(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and 1 < m.groups
        and not (m.groups == m.in_channels == m.out_channels)
    )


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features


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
            outs = compared(model, x)  # a detection head's own input maps are not outputs
    finally:
        for h in hooks:
            h.remove()
    ends: set[nn.Module] = set()
    stack = [o.grad_fn for o in outs if o.grad_fn is not None]
    seen = set()
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


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def _keeps_channels(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """Does a reshape ``src -> dst`` leave every channel a whole unit?

    Yes for adding or removing size-1 dims, for flattening trailing dims
    (``(N, C, H, W) -> (N, C*H*W)`` before a Linear, ``-> (N, C, H*W)``)
    and for merging leading dims; no when a dim is cut into several
    (``(N, L, 3C) -> (N, L, 3, heads, d)``) or several are merged into the
    channel dim (``(N, heads, d, L) -> (N, C, H, W)``).
    """
    a, b = [d for d in src if d != 1], [d for d in dst if d != 1]
    if a == b:
        return True
    for k in range(1, len(a)):
        if b == a[:k] + [math.prod(a[k:])] or b == [math.prod(a[: k + 1])] + a[k + 1 :]:
            return True
    # The reverse of a leading merge: nn.Linear on (N, H, W, C) computes on (N*H*W, C) and views its
    # result back to (N, H, W, C). Only when the first dim really holds the batch merged with others
    # (compared unsqueezed): (1, 64, A) -> (1, 4, 16, A) cuts channels (Ultralytics' DFL) and is not one.
    src, dst = list(src), list(dst)
    return len(dst) > len(src) > 1 and any(
        src[0] == math.prod(dst[: k + 1]) and src[1:] == dst[k + 1 :] for k in range(1, len(dst) - 1))


def _reshape_out(node, shapes: dict) -> tuple[int, ...] | None:
    """A reshape's output shape: recorded, or saved by the op that consumes it (nn.Linear's inner view)."""
    out = shapes.get(node.grad_fn)
    if out is not None:
        return out
    n = math.prod(getattr(node.grad_fn, "_saved_self_sym_sizes", ()) or (0,))
    for consumer in node.outputs:
        for attr in ("_saved_mat1_sym_sizes", "_saved_self_sym_sizes"):
            s = getattr(consumer.grad_fn, attr, None)
            if s and math.prod(s) == n:
                return tuple(s)
    return None


def _op_reason(node, shapes: dict, tp) -> str:
    """Why an op on a group's channels fixes their count in the model's code ('' if it does not)."""
    kind, fn = node.type, node.grad_fn
    sizes = tuple(getattr(fn, "_saved_self_sym_sizes", ()) or ())
    dim = getattr(fn, "_saved_dim", None)
    spatial = dim is not None and (dim == 0 or (len(sizes) == 4 and dim in (2, 3, -1, -2)))
    if kind in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND):
        if spatial:
            return ""
        what = f"{_dims(sizes)} " if sizes else ""
        return f"split ({fn.name().replace('Backward0', '').lower()} of {what}on dim {dim}) into pieces whose sizes are fixed in the model's code"
    if kind == tp.ops.OPTYPE.RESHAPE:
        out = _reshape_out(node, shapes)
        if not sizes or out is None:
            return "reshaped to a shape unknown to edgeprune"
        if _keeps_channels(sizes, out):
            return ""
        return f"reshaped {_dims(sizes)} -> {_dims(out)} (e.g. into attention heads) with sizes fixed in the model's code"
    if kind == tp.ops.OPTYPE.SLICE and sizes and dim is not None and not spatial:
        start, end, step = fn._saved_start, fn._saved_end, fn._saved_step
        size = sizes[dim]
        if start in (0, None) and (end is None or end >= size) and step in (1, None):
            return ""
        return f"sliced to [{start}:{min(end, size)}] of {size} channels, bounds fixed in the model's code"
    if kind == tp.ops.OPTYPE.GN:
        return f"GroupNorm ({node.module.num_groups} groups) normalises fixed groups of channels"
    return ""


def _every_layer(model: nn.Module, x: torch.Tensor):
    """The forward torch-pruning traces: the model's outputs and every layer's output.

    torch-pruning builds its graph backwards from the outputs, so a layer
    that runs but whose result is dropped (a wrapper returning only
    ``model(x)[0]`` of a YOLO26, whose one-to-one branch then reaches no
    output) would be missing from it: its input channels would not shrink
    with the layers feeding it, and the pruned model would not run. Returning
    every layer's output puts every layer that runs into the graph; which
    channels are model outputs is decided from the real outputs
    (:func:`_trace_ends`).
    """
    extra: list[torch.Tensor] = []

    def keep(_mod, _args, out):
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            extra.append(out)

    hooks = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        return model(x), extra
    finally:
        for h in hooks:
            h.remove()


def _producers(fn, made: dict) -> set[nn.Module]:
    """The layers with parameters nearest to autograd node ``fn`` on every path back (through adds, activations)."""
    found, stack, seen = set(), [fn], set()
    while stack:
        f = stack.pop()
        if f is None or f in seen:
            continue
        seen.add(f)
        if f in made:
            found.add(made[f])
            continue
        stack.extend(nxt for nxt, _ in f.next_functions)
    return found


def _sized_by_input(barriers: dict, recorder: _Shapes, names: dict) -> dict[nn.Module, str]:
    """Layers whose output channels a reshape reads back from a module's input (``B, C, H, W = x.shape``).

    Ultralytics' attention (YOLO11's C2PSA, YOLO26's C3k2 with attention)
    computes its heads from ``qkv(x)`` and views the result back with
    ``.view(B, C, H, W)``, ``C`` read from its input ``x``: a size taken
    from one tensor and imposed on another, which no autograd graph shows.
    So when a reshape that fixes sizes (a barrier) outputs exactly the shape
    of an input of a module it runs in, the channels of that input cannot
    shrink either: the layers producing it are returned, with the reason.
    """
    bound: dict[nn.Module, str] = {}
    for node, _why in barriers.items():
        out = recorder.shapes.get(node.grad_fn)
        if out is None or len(out) < 3:
            continue
        source = node.grad_fn.next_functions[0][0] if node.grad_fn.next_functions else None
        for mod, inputs in reversed(recorder.enclosing.get(node.grad_fn, [])):
            hits = [t for t in inputs if tuple(t.shape) == out and t.grad_fn is not None and t.grad_fn is not source]
            if not hits:
                continue
            where = names.get(mod, type(mod).__name__)
            why = (f"its channels are read back in {where} ({type(mod).__name__}: a reshape to its input's size "
                   f"{_dims(out)}, e.g. .view(B, C, H, W) of attention heads), so they shrink only with its heads")
            for t in hits:
                for layer in _producers(t.grad_fn, recorder.made):
                    bound.setdefault(layer, why)
            break
    return bound


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
    recorder = _Shapes()
    hooks = recorder.watch(model)
    try:
        with torch.enable_grad(), recorder:
            dg = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, forward_fn=_every_layer, verbose=False
            )
    except Exception as exc:  # torch-pruning's tracer raises many types on code it does not know
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1].name
        raise PruneError(
            f"torch-pruning cannot trace this model ({type(exc).__name__} in its {where}: "
            f"{str(exc)[:120]}); its graph has an op on channels it does not model (e.g. a split "
            "piece multiplied into a concat): prune a model built from standard blocks, or "
            "rewrite that block"
        ) from None
    finally:
        for h in hooks:
            h.remove()
    # Ops whose sizes are fixed in the model's code stop torch-pruning's propagation: every group
    # that reaches one is protected below. Without the stop, index mappings through an attention
    # block's view/split inside a residual loop grow without end (YOLO11's C2PSA: >15 GB, no result).
    barriers = {}
    for node in list(dg.module2node.values()):
        why = _op_reason(node, recorder.shapes, tp)
        if why:
            barriers[node] = why
            node.dependencies = []
    sized = _sized_by_input(barriers, recorder, names)
    stem, ends = _trace_ends(model, example_input)
    stem = stem if protect_stem else None
    order = {m: i for i, m in enumerate(model.modules())}
    groups, roots = [], {}
    for group in dg.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear)):
        members = {dep.target.module for dep, _ in group}
        param_outs = sorted(
            (
                m
                for m in members
                if isinstance(m, (nn.Conv2d, nn.Linear))
                and m in names
                and any(
                    dep.target.module is m and dg.is_out_channel_pruning_fn(dep.handler)
                    for dep, _ in group
                )
            ),
            key=lambda m: (_out_channels(m), order[m]),
        )
        if not param_outs:
            continue
        root = param_outs[0]
        channels = _out_channels(root)
        if group[0].dep.target.module is not root:  # re-root on the smallest producing layer
            fn = dg.get_pruner_of_module(root).prune_out_channels
            group = dg.get_pruning_group(root, fn, list(range(channels)))
        outs, ins, grouped_in, grouped_out, ops = [], [], [], [], []
        for dep, idxs in group:
            mod = dep.target.module
            if not isinstance(mod, nn.Module) or mod not in names:
                ops.append(dep.target)
                continue
            if dg.is_out_channel_pruning_fn(dep.handler):
                outs.append(mod)
                if _is_grouped(mod):
                    grouped_out.append((mod, len(idxs)))
            elif dg.is_in_channel_pruning_fn(dep.handler):
                ins.append(mod)
                if _is_grouped(mod):
                    grouped_in.append((mod, len(idxs)))
            if dep.target in barriers:  # a GroupNorm
                ops.append(dep.target)
        gid = names[root]
        reason, stops = "", [n for n in ops if n in barriers]
        if ends & set(outs):
            reason = OUTPUT_REASON
        elif stem is not None and stem in outs:
            reason = "input stem"
        elif protected & (set(outs) | set(ins)):
            hit = sorted(names[m] for m in protected & (set(outs) | set(ins)))
            reason = f"protected ({', '.join(hit)})"
        elif stops:
            reason = f"{barriers[stops[0]]} (after {gid})"
        elif set(outs) & sized.keys():
            reason = sized[min(set(outs) & sized.keys(), key=order.get)]
        elif not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in ins):
            reason = OUTPUT_REASON
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
    with one_thread():
        make_prunable(model, example_input)
        analysis = analyse(model, example_input, protect=protect, protect_stem=protect_stem)
    return analysis.groups if include_protected else analysis.prunable()


def _general(reason: str) -> str:
    """A reason without its shapes and layer names, to put groups kept whole for one cause together."""
    for key, text in (
        ("split", "split into pieces whose sizes are fixed in the model's code"),
        ("reshaped", "reshaped with sizes fixed in the model's code (e.g. attention heads)"),
        ("sliced", "sliced with bounds fixed in the model's code"),
        ("GroupNorm", "GroupNorm over fixed groups of channels"),
        ("protected (", "protected by --protect"),
    ):
        if reason.startswith(key):
            return text
    return reason


def kept_whole(groups, plan=None) -> list[dict]:
    """Every group that keeps all its channels and why: protected, or left whole by the plan.

    One entry per cause: ``{"reason", "groups", "layers"}``. A prunable
    group the plan keeps whole is explained from its counts: a grouped conv
    whose conv-group count and the alignment leave no smaller multiple, or a
    group smaller than the alignment.
    """
    entries: dict[str, dict] = {}

    def add(reason: str, g) -> None:
        e = entries.setdefault(reason, {"reason": reason, "groups": [], "layers": []})
        e["groups"].append(g.id)
        e["layers"].extend(g.layers)

    for g in groups:
        if not g.prunable:
            add(_general(g.reason), g)
            continue
        if plan is None or g.id not in plan.keep or plan.keep[g.id] < g.channels:
            continue
        align = getattr(plan, "align", 1) or 1
        step = math.lcm(align, g.slices)
        if g.slices > 1 and step * 2 > g.channels:
            add(
                f"grouped conv with {g.slices} conv groups: kept counts must be multiples of "
                f"lcm(alignment {align}, {g.slices} conv groups) = {step}, and {g.channels} channels "
                "leave no smaller one (try --no-align)",
                g,
            )
        elif step >= g.channels:
            add(f"fewer channels than the alignment ({align})", g)
    return list(entries.values())


def protected_note(entries: list[dict], *, limit: int = 3) -> str:
    """One line: which layers were kept whole and why, e.g. for the CLI."""
    if not entries:
        return ""
    parts = []
    for e in entries:  # a group is named by its first conv or Linear (its id)
        ids = e["groups"]
        shown = ", ".join(ids[:limit]) + (f" +{len(ids) - limit} more" if len(ids) > limit else "")
        n = len(ids)
        parts.append(f"{n} group{'s' if n > 1 else ''} ({shown}): {e['reason']}")
    return "kept whole: " + "; ".join(parts)
