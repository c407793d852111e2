"""Structured pruning: model -> coupled channel groups -> plan -> pruned model -> file.

Modules, in the order a model goes through them:

- :mod:`~edgeprune.prune.rewrite`: make C2f-like blocks prunable (outputs unchanged, the block
  object and its attributes kept);
- :mod:`~edgeprune.prune.groups`: ``prunable_groups(model, x)`` -> ``PrunableGroup`` list
  (``include_protected=True``: also the groups kept whole, each with its ``reason``;
  ``kept_whole(groups, plan)`` / ``protected_note(...)``: what stays whole and why);
- :mod:`~edgeprune.prune.plan`: ``ChannelPlan`` (kept channels per group, JSON);
- :mod:`~edgeprune.prune.importance`: which channels a group keeps;
- :mod:`~edgeprune.prune.apply`: ``prune_(model, plan)``, checked by :mod:`~edgeprune.prune.check`;
- :mod:`~edgeprune.prune.io`: ``save_pruned`` / ``load_pruned`` (``.ept`` files).

Importing this package imports torch; the CLI imports it inside commands.

For a latency-aware planner (a later stage): ``prunable_groups`` gives each
group's ``id``, current ``channels``, the ``layers`` whose outputs shrink and
the ``consumers`` whose inputs shrink (module names: ``model.get_submodule``
turns them into layers to cost), and ``slices`` (grouped convs: kept counts
must be multiples of it). ``ChannelPlan.from_keep(groups, {id: kept}, align=...)``
turns per-group counts into a checked, aligned plan; ``prune_`` applies it.

Example::

    from edgeprune.prune import ChannelPlan, prunable_groups, prune_, save_pruned
    x = torch.zeros(1, 3, 224, 224)
    groups = prunable_groups(model, x)
    plan = ChannelPlan.uniform(groups, 0.3, align=8, input_shape=(1, 3, 224, 224), base="mobilenetv2")
    prune_(model, plan)
    save_pruned(model, plan, "out/model.ept")
"""

from edgeprune.prune.apply import example_input, prune_
from edgeprune.prune.groups import PrunableGroup, prunable_groups
from edgeprune.prune.io import load_pruned, save_pruned
from edgeprune.prune.plan import ChannelPlan
from edgeprune.prune.rewrite import make_prunable

__all__ = [
    "ChannelPlan",
    "PrunableGroup",
    "example_input",
    "load_pruned",
    "make_prunable",
    "prunable_groups",
    "prune_",
    "save_pruned",
]
