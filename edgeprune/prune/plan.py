"""``ChannelPlan``: how many channels each prunable group keeps.

A plan is plain data, JSON-serialisable, keyed by stable group ids (see
:mod:`edgeprune.prune.groups`). It says nothing about *which* channels go:
that is the importance criterion's job when the plan is applied
(:func:`edgeprune.prune.apply.prune_`).

Rounding: a kept count is the multiple of ``m = lcm(align, group.slices)``
nearest the exact value (at least ``m``), or the group's full count when
that is nearer; a group smaller than ``m`` keeps all its channels. No group
goes to zero.

Example::

    groups = prunable_groups(model, x)
    plan = ChannelPlan.uniform(groups, 0.3, align=8, input_shape=(1, 3, 224, 224))
    Path("plan.json").write_text(plan.to_json())
    ChannelPlan.from_json(Path("plan.json").read_text()) == plan    # True
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import PruneError

FORMAT = "edgeprune.channel-plan"
VERSION = 1
MAX_CHANNELS = 1 << 20  # a group's channel count read from a file (a plan or an .ept)
MAX_SIDE = 8192


def _whole(v: Any) -> bool:
    """A JSON whole number: an int, not a bool, not a float (3.0 or 3.5 channels is a damaged plan)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _groups(n: int) -> str:
    return f"{n} group is" if n == 1 else f"{n} groups are"


def round_keep(channels: int, wanted: float, multiple: int) -> int:
    """Kept count nearest ``wanted`` among the multiples of ``multiple`` up to ``channels``,
    and ``channels`` itself (keeping all is always allowed); ties go to the larger count."""
    options = list(range(multiple, channels + 1, multiple)) + [channels]
    return min(options, key=lambda k: (abs(k - wanted), -k))


@dataclass
class ChannelPlan:
    """Kept channels per group id, and the facts needed to apply it to a fresh model.

    ``channels``: each group's count before pruning (checked on apply);
    ``input_shape``: the example input used to trace the model (``prune_``
    fills it from its ``x`` when None);
    ``base``: the architecture it was made for (built-in name or ``pkg.mod:fn``);
    ``rewrites``: blocks rewritten before pruning (filled in by ``prune_``).
    """

    keep: dict[str, int]
    channels: dict[str, int]
    input_shape: tuple[int, ...] | None
    align: int = 1
    base: str | None = None
    rewrites: list[str] = field(default_factory=list)
    note: str = ""
    latency: dict | None = None  # a latency-budget plan: the budget and every round (edgeprune.latency)

    # -- construction ------------------------------------------------------
    @classmethod
    def uniform(
        cls,
        groups: Iterable,
        ratio: float,
        *,
        align: int = 1,
        input_shape: tuple[int, ...] | None = None,
        base: str | None = None,
    ) -> ChannelPlan:
        """Remove the fraction ``ratio`` of every prunable group's channels, rounded to ``align``."""
        if not 0.0 <= ratio < 1.0:
            raise PruneError(f"--ratio {ratio}: the fraction of channels removed must be in [0, 1)")
        groups = [g for g in groups if getattr(g, "prunable", True)]
        keep = {
            g.id: round_keep(g.channels, g.channels * (1.0 - ratio), math.lcm(align, g.slices))
            for g in groups
        }
        return cls(
            keep=keep,
            channels={g.id: g.channels for g in groups},
            input_shape=tuple(input_shape) if input_shape else None,
            align=align,
            base=base,
            note=f"uniform ratio {ratio:g}, align {align}",
        )

    @classmethod
    def from_keep(
        cls,
        groups: Iterable,
        keep: Mapping[str, int],
        *,
        align: int = 1,
        input_shape: tuple[int, ...] | None = None,
        base: str | None = None,
    ) -> ChannelPlan:
        """A plan from per-group kept counts (e.g. a latency-aware search), checked and aligned.

        Counts are rounded as in :func:`round_keep`; ids not in ``keep`` keep all channels.
        """
        groups = {g.id: g for g in groups if getattr(g, "prunable", True)}
        unknown = sorted(set(keep) - set(groups))
        if unknown:
            raise PruneError(
                f"plan names groups the model does not have (or protects): {', '.join(unknown[:5])}"
            )
        out = {}
        for gid, g in groups.items():
            k = int(keep.get(gid, g.channels))
            if k < 1:
                raise PruneError(f"group {gid}: keep {k} channels: every group keeps at least one")
            out[gid] = round_keep(g.channels, min(k, g.channels), math.lcm(align, g.slices))
        return cls(
            keep=out,
            channels={g: groups[g].channels for g in groups},
            input_shape=tuple(input_shape) if input_shape else None,
            align=align,
            base=base,
            note="per-group counts",
        )

    # -- figures -----------------------------------------------------------
    def removed_fraction(self) -> float:
        """Fraction of all prunable channels the plan removes."""
        total = sum(self.channels.values())
        return 0.0 if not total else 1.0 - sum(self.keep.values()) / total

    def pruned_groups(self) -> dict[str, int]:
        """Groups that actually shrink: id -> kept count."""
        return {g: k for g, k in self.keep.items() if k < self.channels[g]}

    def ratio_notes(self, ratio: float, groups: Iterable = ()) -> list[str]:
        """What a uniform ``ratio`` could not do, and why (alignment, the minimum per group).

        One note when the removed fraction is far from ``ratio``, one when some
        groups are too narrow to shrink at all; empty when neither. ``groups``
        (the :class:`PrunableGroup` list) gives each group's conv slices.

        Example::

            plan.ratio_notes(0.999)   # ['asked to remove 99.9 % of channels, removed 57.1 %: ...']
        """
        slices = {g.id: getattr(g, "slices", 1) for g in groups}
        unit = {gid: math.lcm(self.align, slices.get(gid, 1)) for gid in self.keep}
        narrow = [gid for gid, c in self.channels.items() if c <= unit[gid]]
        at_min = [gid for gid, k in self.keep.items() if k == unit[gid] and k < self.channels[gid]]
        notes = []
        done = self.removed_fraction()
        if abs(done - ratio) > 0.05:
            m = max(unit.values(), default=1)
            why = (
                f"each group keeps at least {m} channels, in multiples of {self.align} (the board's "
                f"alignment); {_groups(len(at_min))} at that minimum, and {len(narrow)} with {m} "
                "channels or fewer keep all theirs"
                if done < ratio
                else f"kept counts round to the nearest multiple of {self.align} (the board's alignment)"
            )
            notes.append(f"asked to remove {100 * ratio:.1f} % of channels, removed {100 * done:.1f} %: {why}")
        if narrow and self.align > 1:
            widest = max(self.channels[g] for g in narrow)
            notes.append(
                f"{len(self.pruned_groups())} of {len(self.keep)} groups pruned: {len(narrow)} groups have "
                f"{widest} channels or fewer, at most the alignment {self.align}, and keep all; "
                "--no-align prunes them too (unaligned counts run slower on most boards)"
            )
        return notes

    # -- JSON --------------------------------------------------------------
    def to_dict(self) -> dict:
        extra = {} if self.latency is None else {"latency": self.latency}
        return {
            "format": FORMAT,
            "version": VERSION,
            "base": self.base,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "align": self.align,
            "note": self.note,
            "rewrites": list(self.rewrites),
            **extra,
            "groups": [
                {"id": g, "channels": self.channels[g], "keep": self.keep[g]} for g in self.keep
            ],
        }

    def to_json(self) -> str:
        """JSON with one group per line (plans are read and diffed by people too)."""
        data = self.to_dict()
        groups = data.pop("groups")
        lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in data.items()]
        rows = ",\n".join(f"    {json.dumps(g)}" for g in groups)
        return "{\n" + "\n".join(lines) + '\n  "groups": [\n' + rows + "\n  ]\n}"

    @classmethod
    def from_dict(cls, data: Mapping, *, where: str = "plan") -> ChannelPlan:
        """A plan from its JSON form, every field type-checked first (one line naming the field)."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise PruneError(f'{where}: not an edgeprune channel plan (no "format": "{FORMAT}")')
        if not _whole(data.get("version")) or data.get("version") != VERSION:
            raise PruneError(
                f"{where}: plan version {str(data.get('version'))[:20]!r}; this edgeprune reads {VERSION}"
            )

        def bad(field: str, value: Any, want: str) -> PruneError:
            return PruneError(f"{where}: plan field '{field}' is {str(value)[:40]!r} "
                              f"({type(value).__name__}); expected {want}")

        groups = data.get("groups")
        if not isinstance(groups, list):
            raise bad("groups", groups, "a list of {id, channels, keep}")
        keep: dict[str, int] = {}
        channels: dict[str, int] = {}
        for i, g in enumerate(groups):
            if not isinstance(g, Mapping):
                raise bad(f"groups[{i}]", g, "an object {id, channels, keep}")
            gid = g.get("id")
            if not isinstance(gid, str) or not gid or len(gid) > 300:
                raise bad(f"groups[{i}].id", gid, "a layer name")
            if gid in keep:
                raise PruneError(f"{where}: group {gid} appears twice")
            for name in ("channels", "keep"):
                if not _whole(g.get(name)) or not 1 <= g[name] <= MAX_CHANNELS:
                    raise bad(f"groups[{i}].{name}", g.get(name), f"a whole number from 1 to {MAX_CHANNELS}")
            keep[gid], channels[gid] = g["keep"], g["channels"]
        shape = data.get("input_shape")
        if shape is not None and not (isinstance(shape, list) and len(shape) == 4 and all(
                _whole(d) and 1 <= d <= MAX_SIDE for d in shape)):
            raise bad("input_shape", shape, f"4 whole numbers N,C,H,W (each 1 to {MAX_SIDE})")
        align = data.get("align", 1)
        if not _whole(align) or not 1 <= align <= 1024:
            raise bad("align", align, "a whole number from 1 to 1024")
        base = data.get("base")
        if base is not None and (not isinstance(base, str) or len(base) > 300):
            raise bad("base", base, "a model name (a string)")
        rewrites = data.get("rewrites", [])
        if not isinstance(rewrites, list) or not all(isinstance(r, str) and len(r) <= 300 for r in rewrites):
            raise bad("rewrites", rewrites, "a list of layer names")
        note = data.get("note", "")
        if not isinstance(note, str):
            raise bad("note", note, "a string")
        latency = data.get("latency")
        if latency is not None and not isinstance(latency, Mapping):
            raise bad("latency", latency, "an object")
        for gid, k in keep.items():
            if not 1 <= k <= channels[gid]:
                raise PruneError(f"{where}: group {gid} keeps {k} of {channels[gid]} channels")
        return cls(
            keep=keep,
            channels=channels,
            input_shape=tuple(shape) if shape else None,
            align=align,
            base=base,
            rewrites=list(rewrites),
            note=note,
            latency=dict(latency) if latency is not None else None,
        )

    @classmethod
    def from_json(cls, text: str, *, where: str = "plan") -> ChannelPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PruneError(f"{where}: not JSON: {exc}") from None
        return cls.from_dict(data, where=where)
