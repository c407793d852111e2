"""Apply a :class:`~edgeprune.prune.plan.ChannelPlan` to a model, in place.

``prune_`` rewrites C2f-like blocks (outputs unchanged), traces the model's
channel groups, checks the plan against them (ids, channel counts,
protection), scores each group's channels with the chosen criterion, removes
the least important ones group by group with torch-pruning, and checks that
every output keeps its shape and that the pruned model computes what the
original computes with those channels zeroed (:mod:`edgeprune.prune.check`).

Example::

    plan = ChannelPlan.uniform(prunable_groups(model, x), 0.5, align=8, input_shape=tuple(x.shape))
    prune_(model, plan, importance="l1")
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from edgeprune._threads import single_threaded
from edgeprune.checks.outputs import compared
from edgeprune.errors import PruneError, did_you_mean
from edgeprune.prune.check import check_surgery
from edgeprune.prune.groups import analyse
from edgeprune.prune.importance import (
    accumulate_taylor_grads,
    choose_removed,
    group_scores,
    make_importance,
)
from edgeprune.prune.plan import ChannelPlan
from edgeprune.prune.rewrite import make_prunable, rewritten_blocks


def example_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The seeded random input edgeprune traces and checks models with."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    with torch.no_grad():
        return [tuple(o.shape) for o in compared(model, x)]


def _leaf_owners(model: nn.Module) -> dict[int, tuple[str, nn.Module]]:
    """Parameter id -> (name, module) for parameters owned by a layer with no conv/Linear inside.

    torch-pruning handles per-channel parameters it finds outside known layers
    (a hand-written LayerNorm's weight, a layer scale) as bare parameters;
    the surgery check needs the layer that owns them.
    """
    owners = {}
    for name, mod in model.named_modules():
        if any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in mod.modules()):
            continue
        for p in mod.parameters(recurse=False):
            owners[id(p)] = (name, mod)
    return owners


def check_plan(plan: ChannelPlan, groups) -> None:
    """Raise :class:`PruneError` if ``plan`` does not fit ``groups`` (all groups, protected too)."""
    by_id = {g.id: g for g in groups}
    for gid, keep in plan.keep.items():
        g = by_id.get(gid)
        if g is None:
            near = did_you_mean(gid, by_id, n=2, cutoff=0.6)
            hint = f" ({near})" if near else ""
            raise PruneError(
                f"plan group '{gid}' is not a channel group of this model{hint}: "
                "the plan was made for another architecture"
            )
        if plan.channels.get(gid) != g.channels:
            raise PruneError(
                f"plan group '{gid}' had {plan.channels.get(gid)} channels, the model has "
                f"{g.channels}: the plan was made for another architecture or is already applied"
            )
        if keep < g.channels and not g.prunable:
            raise PruneError(f"plan shrinks group '{gid}', which may not be pruned: {g.reason}")
        if not 1 <= keep <= g.channels:
            raise PruneError(f"plan keeps {keep} of {g.channels} channels in group '{gid}'")
        if keep < g.channels and keep % g.slices:
            raise PruneError(
                f"plan keeps {keep} channels in group '{gid}', not a multiple of "
                f"its {g.slices} conv groups"
            )


@single_threaded
def prune_(
    model: nn.Module,
    plan: ChannelPlan,
    *,
    importance: str = "l1",
    data: Iterable | None = None,
    loss_fn: Callable | None = None,
    protect: list[str] | tuple[str, ...] = (),
    protect_stem: bool = True,
    x: torch.Tensor | None = None,
    verify: bool = True,
) -> nn.Module:
    """Shrink ``model`` in place to ``plan``'s kept counts; returns the model.

    ``importance``: 'l1', 'l2', 'bn', 'taylor' (needs ``data``) or 'first'.
    ``x``: the trace input (default: seeded random of ``plan.input_shape``).
    ``verify``: check that the result equals the original with the removed
    channels zeroed (:mod:`edgeprune.prune.check`; costs one more trace).
    """
    if x is None and plan.input_shape is None:
        raise PruneError("the plan has no input_shape: pass x=example input to prune_")
    x = example_input(plan.input_shape) if x is None else x
    plan.input_shape = plan.input_shape or tuple(x.shape)
    model.eval()
    make_prunable(model, x)
    done = rewritten_blocks(model)
    if plan.rewrites and sorted(plan.rewrites) != sorted(done):
        raise PruneError(
            f"the plan was made after rewriting {', '.join(plan.rewrites)}; this model "
            f"rewrites {', '.join(done) or 'nothing'}: another architecture"
        )
    plan.rewrites = done
    before = _shapes(model, x)
    analysis = analyse(model, x, protect=protect, protect_stem=protect_stem)
    check_plan(plan, analysis.groups)
    todo = [
        (g, plan.keep[g.id])
        for g in analysis.groups
        if plan.keep.get(g.id, g.channels) < g.channels
    ]
    if importance == "taylor":
        if data is None:
            raise PruneError(
                "importance 'taylor' needs data (batches of inputs, or (inputs, targets))"
            )
        accumulate_taylor_grads(model, data, loss_fn=loss_fn)
    imp = make_importance(importance)
    dg = analysis.dg
    reference = copy.deepcopy(model) if verify and todo else None
    names = {m: n for n, m in model.named_modules()}
    owners = _leaf_owners(model)
    removed_by_group: dict[str, list[tuple[str, list[int]]]] = {}
    normalised: dict[str, list[int]] = {}  # per-channel layers the check compares on kept channels
    for group, keep in todo:
        root = analysis.roots[group.id]
        fn = dg.get_pruner_of_module(root).prune_out_channels
        full = dg.get_pruning_group(root, fn, list(range(group.channels)))
        scores = group_scores(importance, full, group.channels, imp)
        removed = choose_removed(scores, keep, group.slices)
        tp_group = dg.get_pruning_group(root, fn, removed)
        if not dg.check_pruning_group(tp_group):
            raise PruneError(
                f"group '{group.id}': removing {len(removed)} channels would empty a layer"
            )
        if (
            reference is not None
        ):  # out-channel indices of a layer only move when its group is pruned
            removed_by_group[group.id] = [
                (names[dep.target.module], list(idxs))
                for dep, idxs in tp_group
                if dg.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names
            ]
            for dep, idxs in tp_group:
                mod = dep.target.module
                if isinstance(mod, nn.LayerNorm) and mod in names:
                    normalised[names[mod]] = list(idxs)
                elif isinstance(mod, nn.Parameter) and id(mod) in owners:
                    normalised[owners[id(mod)][0]] = list(idxs)
        tp_group.prune()
    model.zero_grad(set_to_none=True)
    try:
        after = _shapes(model, x)
    except RuntimeError as exc:  # a size fixed in the model's code that the group analysis missed
        pruned = ", ".join(g.id for g, _ in todo[:4])
        raise PruneError(
            f"the pruned model no longer runs ({str(exc).splitlines()[0][:160]}); groups pruned: "
            f"{pruned}{' ...' if len(todo) > 4 else ''}: protect the layers named in the error"
        ) from None
    if after != before:
        raise PruneError(
            f"pruning changed the output shapes {before} -> {after}: "
            "protect the output layers with protect=[...]"
        )
    if reference is not None:
        reference.zero_grad(set_to_none=True)
        check_surgery(reference, model, removed_by_group, x, normalised=normalised)
    return model
