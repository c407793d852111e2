"""``LatencyTable``: what each layer shape costs on one board, measured there, cached here.

Entries are keyed by :meth:`LayerShape.key` (kind, channels, kernel, stride,
padding, dilation, groups, input size), so a second model with the same
layer shapes reuses them. An entry's ``ms`` is the micro-model's p50 minus
the batch's baseline p50 (the runtime's fixed cost per call), floored at a
small positive value.

**Identity.** A table belongs to one board, runtime and setting: the
agent's board id (from the board's machine id, hostname and architecture),
the SSH host key where there is one, the transport kind, the runtime and its
version, the threads setting, the CFS quota, and the format and precision
of the micro-models. The cache file is named by a hash of all of that,
never by the board's address alone: a re-imaged board at the same address,
or another runtime version, gets a table of its own.

**Lookup, staircase-aware.** Within a *family* (same everything but the
channel counts):

1. an exact entry is returned as measured (every aligned output count a
   plan can choose is measured, so the output axis, where the staircase
   lives, is never interpolated);
2. otherwise the input-channel axis is interpolated between the two
   measured neighbours, *unless a cliff separates them*: when the cost per
   input channel rises by more than :data:`CLIFF` from one point to the next,
   the cost jumped somewhere between, and the upper point's cost is used
   (a step, never a line across the jump);
3. when the row of this output count has only its anchor point (the sweep
   at the full input count), the input-axis *profile* is borrowed from the
   rows that were swept along the input axis (the layer's full and smallest
   output count), interpolated between them by output count, and applied
   to the anchor;
4. a shape outside everything measured is the nearest entry scaled by MACs,
   and counted (``stats["scaled"]``), so the caller can say so.

Example::

    table = LatencyTable(identity, fmt="onnx", precision="fp32")
    table.add(shape, p50_ms=0.31, min_ms=0.29, spread=0.04, n=50, baseline_ms=0.01)
    table.lookup(shape.with_channels(48, 32))
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_write_text, cache_dir
from edgeprune.errors import EdgePruneError
from edgeprune.latency.layers import LayerShape

FORMAT = "edgeprune.latency-table"
VERSION = 1
CLIFF = 0.15  # a rise of cost per channel above 15 % between two measured points is a cliff
FLOOR = 0.01  # an entry never costs less than 1 % of its p50


@dataclass
class Entry:
    ms: float
    p50_ms: float
    min_ms: float
    spread: float
    n: int
    baseline_ms: float = 0.0


def identity_hash(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(identity), sort_keys=True, default=str).encode()).hexdigest()[:24]


def interp_staircase(points: list[tuple[int, float]], c: float) -> tuple[float, str]:
    """Cost at ``c`` from ``points`` (sorted by channel count): exact, linear, or a step at a cliff.

    Returns ``(ms, how)`` with ``how`` in exact / interpolated / step / scaled.
    """
    for ci, t in points:
        if ci == c:
            return t, "exact"
    if c < points[0][0]:
        c0, t0 = points[0]
        return t0 * c / c0, "scaled"
    if c > points[-1][0]:
        c1, t1 = points[-1]
        return t1 * c / c1, "scaled"
    for (a, ta), (b, tb) in zip(points, points[1:], strict=False):
        if a < c < b:
            if tb / b > (ta / a) * (1.0 + CLIFF):
                return tb, "step"
            return ta + (tb - ta) * (c - a) / (b - a), "interpolated"
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class LatencyTable:
    """Measured layer costs on one board (see module docstring)."""

    identity: dict[str, Any]
    fmt: str
    precision: str
    entries: dict[str, Entry] = field(default_factory=dict)
    shapes: dict[str, LayerShape] = field(default_factory=dict)
    baseline_ms: float = 0.0
    models_measured: int = 0
    build_s: float = 0.0
    created: str = ""
    source: str = "measured"
    stats: dict[str, int] = field(default_factory=dict)
    drift: list[float] = field(default_factory=list)  # anchor scale of each later visit (measure.py)

    def __post_init__(self) -> None:
        self._families: dict[str, dict[tuple[int, int], float]] = {}
        for k, s in self.shapes.items():
            self._index(s, self.entries[k].ms)

    # -- identity and cache ------------------------------------------------------
    @property
    def key(self) -> dict[str, Any]:
        return {**self.identity, "format": self.fmt, "precision": self.precision}

    @property
    def cache_name(self) -> str:
        return f"table-{identity_hash(self.key)}.json"

    # -- filling ---------------------------------------------------------------------
    def _index(self, shape: LayerShape, ms: float) -> None:
        self._families.setdefault(shape.family(), {})[(shape.cin, shape.cout)] = ms

    def add(self, shape: LayerShape, *, p50_ms: float, min_ms: float, spread: float, n: int,
            baseline_ms: float) -> Entry:
        ms = max(p50_ms - baseline_ms, FLOOR * p50_ms, 1e-6)
        e = Entry(ms=ms, p50_ms=p50_ms, min_ms=min_ms, spread=spread, n=n, baseline_ms=baseline_ms)
        self.entries[shape.key()] = e
        self.shapes[shape.key()] = shape
        self._index(shape, ms)
        self.baseline_ms = baseline_ms
        return e

    def has(self, shape: LayerShape) -> bool:
        return shape.key() in self.entries

    def missing(self, shapes: Iterable[LayerShape]) -> list[LayerShape]:
        return list({s.key(): s for s in shapes if s.key() not in self.entries}.values())

    # -- lookup ------------------------------------------------------------------------
    def _count(self, how: str) -> None:
        self.stats[how] = self.stats.get(how, 0) + 1

    def lookup(self, shape: LayerShape) -> float:
        """Cost in ms of ``shape`` on this board (see the module docstring for how)."""
        e = self.entries.get(shape.key())
        if e is not None:
            self._count("exact")
            return e.ms
        fam = self._families.get(shape.family())
        if not fam:
            raise EdgePruneError(
                f"the latency table has nothing for layers like {shape.key()}; measure it first"
            )
        if shape.depthwise:
            ms, how = interp_staircase(sorted((ci, t) for (ci, _), t in fam.items()), shape.cin)
            self._count(how)
            return ms
        rows: dict[int, list[tuple[int, float]]] = {}
        for (ci, co), t in fam.items():
            rows.setdefault(co, []).append((ci, t))
        for r in rows.values():
            r.sort()
        row = rows.get(shape.cout)
        c = shape.cin
        if row and row[0][0] <= c <= row[-1][0] and len(row) >= 2:
            ms, how = interp_staircase(row, c)
            self._count(how)
            return ms
        refs = sorted((co, r) for co, r in rows.items() if len(r) >= 2 and r[0][0] <= c <= r[-1][0])
        if row and refs:
            anchor_c, anchor_t = min(row, key=lambda p: (abs(p[0] - c), -p[0]))

            def ratio(r: list[tuple[int, float]]) -> float:
                num, _ = interp_staircase(r, c)
                den, _ = interp_staircase(r, anchor_c)
                return num / den

            below = [x for x in refs if x[0] <= shape.cout]
            above = [x for x in refs if x[0] >= shape.cout]
            lo = below[-1] if below else above[0]
            hi = above[0] if above else below[-1]
            if lo[0] == hi[0]:
                rho = ratio(lo[1])
            else:
                w = (shape.cout - lo[0]) / (hi[0] - lo[0])
                rho = ratio(lo[1]) * (1 - w) + ratio(hi[1]) * w
            self._count("profile")
            return anchor_t * rho
        (ci, co), t = min(fam.items(), key=lambda kv: abs(kv[0][0] - c) + abs(kv[0][1] - shape.cout))
        near = shape.with_channels(ci, co)
        self._count("scaled")
        return t * shape.macs / max(near.macs, 1)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "identity": self.identity,
            "model_format": self.fmt,
            "precision": self.precision,
            "baseline_ms": self.baseline_ms,
            "models_measured": self.models_measured,
            "build_s": round(self.build_s, 3),
            "drift": self.drift[-50:],
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "entries": [
                {"shape": self.shapes[k].to_dict(), **asdict(e)} for k, e in sorted(self.entries.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "latency table") -> LatencyTable:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise EdgePruneError(f"{where}: not an edgeprune latency table version {VERSION}")
        try:
            table = cls(
                identity=dict(data["identity"]),
                fmt=str(data["model_format"]),
                precision=str(data["precision"]),
                baseline_ms=float(data.get("baseline_ms", 0.0)),
                models_measured=int(data.get("models_measured", 0)),
                build_s=float(data.get("build_s", 0.0)),
                created=str(data.get("created", "")),
                source=str(data.get("source", "measured")),
                drift=[float(d) for d in data.get("drift", [])][:50],
            )
            for row in data["entries"]:
                shape = LayerShape.from_dict(row["shape"])
                e = Entry(**{k: row[k] for k in ("ms", "p50_ms", "min_ms", "spread", "n")},
                          baseline_ms=float(row.get("baseline_ms", 0.0)))
                if not (e.ms > 0 and e.p50_ms > 0):
                    raise ValueError(f"entry {shape.key()} has no positive cost")
                table.entries[shape.key()] = e
                table.shapes[shape.key()] = shape
                table._index(shape, e.ms)
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgePruneError(f"{where}: damaged ({type(exc).__name__}: {exc})") from None
        return table

    def save(self, path: Path) -> Path:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), where=str(path))


def cache_path(table_or_key: LatencyTable | Mapping[str, Any]) -> Path:
    """Where the table for this identity lives in edgeprune's cache."""
    key = table_or_key.key if isinstance(table_or_key, LatencyTable) else table_or_key
    return cache_dir() / "latency" / f"table-{identity_hash(key)}.json"


def load_cached(identity: Mapping[str, Any], *, fmt: str, precision: str) -> LatencyTable:
    """The cached table for this identity, or an empty one (a damaged cache file is started afresh)."""
    empty = LatencyTable(dict(identity), fmt=fmt, precision=precision)
    path = cache_path(empty)
    if not path.is_file():
        return empty
    try:
        table = LatencyTable.load(path)
    except (EdgePruneError, ValueError, OSError):
        return empty
    return table if table.key == empty.key else empty
