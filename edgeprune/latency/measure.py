"""Filling a latency table on the board: which shapes, built how, measured in few visits.

**Which shapes** (:func:`shapes_to_measure`), per layer, deduplicated by shape
across layers and models:

- every candidate count of its output channels (the aligned steps the
  allocation can choose: where the staircase lives), at its full input;
- a few points along its input channels (``cin_points``, the ends always
  included), at its smallest and at its full output count: the profile the
  table borrows for the other output counts;
- a depthwise conv: every candidate count (in = out = groups);
- a layer no plan changes: once.

Not the full ``cin x cout`` product, which for a 960-channel layer would be
thousands of models. :func:`refine_shapes` then looks at every measured
input-axis row, and where a cliff separates two points with candidate counts
between them, adds the middle one: a second, smaller visit.

**How**: micro-models are built in chunks (:mod:`edgeprune.latency.micro`; TFLite
in one TensorFlow process) and each chunk is measured in one agent run
(:class:`edgeprune.bench.batch.BatchSession`: one archive, interleaved rounds,
a baseline), so the board is visited once per ``chunk`` models over one
transport session. A model the runtime cannot load is skipped and named.

Example::

    shapes = shapes_to_measure(layers, space)
    n = measure_shapes(board, table, table.missing(shapes), settings=MICRO)
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from edgeprune.bench.batch import BatchSettings
from edgeprune.errors import AgentError
from edgeprune.latency.layers import Layer, LayerShape
from edgeprune.latency.table import CLIFF, LatencyTable

# Lazy imports: the imports inside functions below load numpy, which importing this module does not;
# they load only when a function that needs them runs.

DEFAULT_CIN_POINTS = 4
DEFAULT_CHUNK = 64
MICRO = BatchSettings(rounds=5, runs=5, warmup=3, max_s=60.0, timeout_s=600.0)


def cin_values(layer: Layer, space: Mapping[str, list[int]]) -> list[int]:
    """The input-channel counts a layer can see under the candidates (ascending).

    One input group: exactly its candidates (times the flatten factor). Several
    (a concat): the counts when every feeding group sits at the same candidate
    position, which spans the range; the table interpolates between them.
    """
    if layer.shape.depthwise or not layer.in_groups:
        return [layer.shape.cin]
    if len(layer.in_groups) == 1:
        g, mult, full = layer.in_groups[0]
        return sorted({layer.in_fixed + k * mult for k in space.get(g, [full])})
    lists = [(space.get(g, [full]), mult) for g, mult, full in layer.in_groups]
    n = max(len(c) for c, _ in lists)
    out = set()
    for i in range(n):
        out.add(layer.in_fixed + sum(c[round(i * (len(c) - 1) / max(n - 1, 1))] * m for c, m in lists))
    return sorted(out)


def _spread(values: list[int], n: int) -> list[int]:
    if len(values) <= n:
        return list(values)
    return sorted({values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)})


def shapes_to_measure(
    layers: list[Layer], space: Mapping[str, list[int]], *, cin_points: int = DEFAULT_CIN_POINTS
) -> list[LayerShape]:
    """The distinct shapes the table needs for these layers and candidates (see module docstring)."""
    out: dict[str, LayerShape] = {}

    def add(s: LayerShape) -> None:
        out.setdefault(s.key(), s)

    for lay in layers:
        s = lay.shape
        outs = list(space.get(lay.out_group, [s.cout])) if lay.out_group else [s.cout]
        if s.depthwise:
            for c in outs:
                add(s.with_channels(c, c))
            continue
        ins = cin_values(lay, space)
        full_in = ins[-1]
        for co in outs:
            add(s.with_channels(full_in, co))
        for ci in _spread(ins, cin_points):
            for co in {outs[0], outs[-1]}:
                add(s.with_channels(ci, co))
    return list(out.values())


def refine_shapes(table: LatencyTable, layers: list[Layer], space: Mapping[str, list[int]]) -> list[LayerShape]:
    """Shapes to add where a measured input-axis row has a cliff with candidates inside it."""
    want: dict[str, LayerShape] = {}
    for lay in layers:
        s = lay.shape
        if s.depthwise or not lay.in_groups:
            continue
        outs = list(space.get(lay.out_group, [s.cout])) if lay.out_group else [s.cout]
        ins = cin_values(lay, space)
        for co in {outs[0], outs[-1]}:
            row = [(ci, table.entries[s.with_channels(ci, co).key()].ms)
                   for ci in ins if table.has(s.with_channels(ci, co))]
            for (a, ta), (b, tb) in zip(row, row[1:], strict=False):
                inside = [c for c in ins if a < c < b]
                if inside and tb / b > (ta / a) * (1.0 + CLIFF):
                    mid = inside[len(inside) // 2]
                    shape = s.with_channels(mid, co)
                    if not table.has(shape):
                        want[shape.key()] = shape
    return list(want.values())


def _anchor(table: LatencyTable) -> LayerShape | None:
    """An entry already in the table (of median cost) to measure again beside new shapes.

    The board's speed can drift between visits (other load, heat, another
    day for a cached table): new entries are scaled by how the anchor measures
    now against its entry, so the table stays on one level.
    """
    if not table.entries:
        return None
    ranked = sorted(table.entries, key=lambda k: table.entries[k].ms)
    return table.shapes[ranked[len(ranked) // 2]]


def measure_shapes(
    board,
    table: LatencyTable,
    shapes: list[LayerShape],
    *,
    settings: BatchSettings = MICRO,
    chunk: int = DEFAULT_CHUNK,
    io_precision: str = "int8",
    scheme: str = "cpu",
    counter=None,
    done_before: int = 0,
) -> int:
    """Build and measure ``shapes`` on ``board`` into ``table``, ``chunk`` models per visit.

    ``counter``: a :class:`edgeprune.progress.Counter` advanced as models are
    measured. Returns how many models were measured.
    """
    from edgeprune.latency.micro import build_micro_models

    done = 0
    t0 = time.perf_counter()
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-micro-") as tmp:
        for start in range(0, len(shapes), chunk):
            part = shapes[start:start + chunk]
            anchor = _anchor(table)
            todo = part + ([anchor] if anchor is not None and anchor.key() not in {s.key() for s in part} else [])
            files = build_micro_models(todo, fmt=table.fmt, precision=table.precision,
                                       folder=Path(tmp) / f"c{start}", io_precision=io_precision,
                                       scheme=scheme)
            result = board.measure(files, settings=settings)
            base = result.baseline.p50_ms if result.baseline else 0.0
            scale = 1.0
            if anchor is not None and result.timings[anchor.key()].ok:
                now = result.timings[anchor.key()].p50_ms - base
                scale = table.entries[anchor.key()].ms / now if now > 0 else 1.0
                if not 0.5 <= scale <= 2.0:  # not drift but a changed board: do not bend the data
                    scale = 1.0
                table.drift.append(round(scale, 4))
            for s in part:
                t = result.timings[s.key()]
                if not t.ok:
                    failed.append(f"{s.key()}: {t.error}")
                    continue
                table.add(s, p50_ms=base + (t.p50_ms - base) * scale, min_ms=t.min_ms, spread=t.spread, n=t.n,
                          baseline_ms=base)
            done += len(part)
            for f in files.values():
                f.unlink(missing_ok=True)
            if counter is not None:
                counter.advance(done_before + done)
    table.models_measured += done
    table.build_s += time.perf_counter() - t0
    if failed:
        raise AgentError(
            f"{len(failed)} of {len(shapes)} micro-models could not be measured on the board, "
            f"e.g. {failed[0][:300]}"
        )
    return done
