"""Whole-model latency from the table: the layers' sum, calibrated against whole-model measurements.

``table_ms(keep)`` is the sum over every priced layer (times the number of
calls) of its cost at the shape the plan gives it. A whole model is not
just its convs: activations, adds, pooling, layout changes and the runtime's
per-call cost are not in the table, and a layer alone can cost a little
more or less than inside a graph (ONNX Runtime reorders a lone conv's input
into its blocked layout, a fused graph does that once). So the prediction is
calibrated against whole models measured on the same board
(:class:`Calibration`):

- with one measured point (the unpruned model, ``T0`` -> ``M0``):
  ``predict(T) = base + (T) * (M0 - base) / T0``: the part above the fixed
  per-call cost ``base`` scales with the table sum;
- with more (each closed-loop round adds its plan), the measured points are
  made monotone (pool-adjacent-violators: noise must not make a smaller
  plan look slower) and interpolated piecewise linearly in ``T``; outside
  them, the nearest segment's line is extended (a part of the whole-model
  cost that plans do not shrink shows as its intercept).

**Stages: a layer alone is not a layer in a graph.** The table's micro-models
measure each layer alone, and a layer alone costs differently from the same
layer inside the model, unevenly across the network: on ONNX Runtime (1
thread, MobileNetV2 at 64 px, this 2-core AVX2 VM) a lone 32x32 conv pays the
reorder into and out of the blocked layout that a graph pays once (its table
entry is 2.3-3.5x its in-graph time from ORT's own profiler), while a lone
2x2 conv with 150 k weights runs with its weights hot in cache, which the
whole model's 9 MB of weights are not (0.3-0.6x its in-graph time). One scale
for the whole table then tells the allocation that the high-resolution
layers buy much more time than they do, and it strips them (and the accuracy
with them). So layers are put in *stages* by input resolution
(:func:`stages_of`: at most ``MAX_STAGES``, each at least ``MIN_STAGE_SHARE``
of the model's MACs), and each stage gets its own scale, fitted
(:func:`fit_stage_scales`) on whole models measured in one batch with the
unpruned one: one *probe* per stage, the unpruned model with the groups that
live in that stage at their minimum (:func:`stage_probes`). The fit is a least-squares
one, pulled towards the single scale so that a stage the probes barely move
stays near it. The scales multiply the layers' table entries
(``Predictor.layer_scale``); the calibration above then works on the scaled
sum.

Example::

    pred = Predictor(layers, table, calibration=Calibration(base_ms=0.01))
    pred.calibration.add(pred.table_ms(full), measured_ms=4.2)
    pred.predict(keep)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeprune.latency.layers import Layer

# Lazy imports: the imports inside functions below load numpy, which importing this module does not;
# they load only when a function that needs them runs.

MAX_STAGES = 4
MIN_STAGE_SHARE = 0.10  # of the model's MACs: a smaller stage joins its neighbour
PRIOR_WEIGHT = 0.03  # a stage scale off by 100 % weighs as a 3 % miss on one whole-model measurement
SCALE_LIMITS = (0.25, 4.0)  # of the single scale


def _monotone(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pool adjacent violators on (T, M) sorted by T: the smallest non-decreasing fit."""
    blocks: list[list[float]] = []  # [sum_T, sum_M, count]
    for t, m in sorted(points):
        blocks.append([t, m, 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] > blocks[-1][1] / blocks[-1][2]:
            b = blocks.pop()
            for i in range(3):
                blocks[-1][i] += b[i]
    return [(st / n, sm / n) for st, sm, n in blocks]


SLOPE_LIMITS = (0.7, 1.5)  # extrapolation slope, as a fraction of the nearest point's ms-per-table-ms


@dataclass
class Calibration:
    """Table sum -> whole-model ms on this board, from whole-model measurements."""

    base_ms: float = 0.0
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, table_ms: float, measured_ms: float) -> None:
        self.points.append((float(table_ms), float(measured_ms)))

    def _ratio(self, t: float, m: float) -> float:
        return max(m - self.base_ms, 1e-9) / max(t, 1e-9)

    def __call__(self, table_ms: float) -> float:
        pts = _monotone(self.points)
        if not pts:
            return self.base_ms + table_ms
        if len(pts) == 1:
            t, m = pts[0]
            return self.base_ms + table_ms * self._ratio(t, m)
        if table_ms <= pts[0][0] or table_ms >= pts[-1][0]:
            (t0, m0), (t1, m1) = pts[:2] if table_ms <= pts[0][0] else pts[-2:]
            t, m = pts[0] if table_ms <= pts[0][0] else pts[-1]
            ratio = self._ratio(t, m)
            slope = (m1 - m0) / max(t1 - t0, 1e-12)
            if slope <= 0:  # flattened by noise: fall back to the nearest point's ratio
                return self.base_ms + table_ms * ratio
            # the nearest segment's line: keeps the cost a plan does not shrink (adds, per-node). Two
            # rounds' plans close together give a segment whose slope is mostly noise (a few % of p50
            # over a small step), and extrapolated far it turns a 5 % miss into a plan 40 % under the
            # budget; so the slope stays within SLOPE_LIMITS of the nearest point's own ratio.
            slope = min(max(slope, SLOPE_LIMITS[0] * ratio), SLOPE_LIMITS[1] * ratio)
            return max(m + slope * (table_ms - t), self.base_ms + 1e-6)
        for (t0, m0), (t1, m1) in zip(pts, pts[1:], strict=False):
            if t0 <= table_ms <= t1:
                return m0 + (m1 - m0) * (table_ms - t0) / max(t1 - t0, 1e-12)
        raise AssertionError("unreachable")  # pragma: no cover

    def to_dict(self) -> dict:
        return {"base_ms": self.base_ms, "points": [{"table_ms": t, "measured_ms": m} for t, m in self.points]}


class Predictor:
    """Predicted whole-model ms for a plan (``keep``: kept channels per prunable group).

    ``costs``: a :class:`~edgeprune.latency.table.LatencyTable` or a
    :class:`~edgeprune.latency.estimate.RooflineEstimate` (anything with
    ``lookup(shape) -> ms`` and ``source``).
    """

    def __init__(self, layers: list[Layer], costs, *, calibration: Calibration | None = None,
                 layer_scale: Mapping[str, float] | None = None) -> None:
        self.layers = layers
        self.costs = costs
        self.calibration = calibration or Calibration()
        self.layer_scale = dict(layer_scale or {})  # layer name -> in-graph / alone (see the module docstring)
        self._cache: dict[tuple[str, int, int], float] = {}
        self.by_group: dict[str, list[Layer]] = {}
        for lay in layers:
            for g in lay.groups_used:
                self.by_group.setdefault(g, []).append(lay)

    @property
    def source(self) -> str:
        return getattr(self.costs, "source", "measured")

    def layer_ms(self, layer: Layer, keep: Mapping[str, int]) -> float:
        cin, cout = layer.channels_under(keep)
        k = (layer.name, cin, cout)
        v = self._cache.get(k)
        if v is None:
            v = self._cache[k] = (self.costs.lookup(layer.shape.with_channels(cin, cout)) * layer.calls
                                   * self.layer_scale.get(layer.name, 1.0))
        return v

    def set_layer_scale(self, scale: Mapping[str, float]) -> None:
        self.layer_scale = dict(scale)
        self._cache.clear()

    def stage_sums(self, keep: Mapping[str, int], stages: Mapping[str, int], n: int) -> list[float]:
        """Unscaled table ms per stage (``stages``: layer name -> stage index)."""
        out = [0.0] * n
        for lay in self.layers:
            cin, cout = lay.channels_under(keep)
            out[stages[lay.name]] += self.costs.lookup(lay.shape.with_channels(cin, cout)) * lay.calls
        return out

    def table_ms(self, keep: Mapping[str, int]) -> float:
        return sum(self.layer_ms(lay, keep) for lay in self.layers)

    def predict(self, keep: Mapping[str, int]) -> float:
        return self.calibration(self.table_ms(keep))

    def group_ms(self, gid: str, keep: Mapping[str, int]) -> float:
        """Table ms of the layers whose shape depends on group ``gid`` (for fast deltas)."""
        return sum(self.layer_ms(lay, keep) for lay in self.by_group.get(gid, ()))

    def breakdown(self, keep: Mapping[str, int]) -> list[dict]:
        return [
            {"layer": lay.name, "shape": lay.shape_under(keep).key(), "ms": round(self.layer_ms(lay, keep), 5)}
            for lay in self.layers
        ]


def stages_of(layers: list[Layer]) -> tuple[dict[str, int], list[dict]]:
    """Layers -> stage index by input resolution (largest first; a Linear joins the last stage).

    Adjacent resolutions are merged until every stage holds at least
    ``MIN_STAGE_SHARE`` of the MACs and there are at most ``MAX_STAGES``.
    Returns ``({layer name: stage}, [{"input_px": [sides], "macs_share": f}, ...])`` (a side is the
    square root of height x width; a Linear has none).
    """
    def res(lay: Layer) -> int:
        return 0 if lay.shape.kind == "linear" else lay.shape.hw[0] * lay.shape.hw[1]

    total = sum(lay.shape.macs * lay.calls for lay in layers) or 1
    by_res: dict[int, float] = {}
    for lay in layers:
        by_res[res(lay)] = by_res.get(res(lay), 0.0) + lay.shape.macs * lay.calls / total
    stages = [[[r], m] for r, m in sorted(by_res.items(), reverse=True)]
    while len(stages) > 1 and (len(stages) > MAX_STAGES or min(m for _, m in stages) < MIN_STAGE_SHARE):
        i = min(range(len(stages)), key=lambda k: stages[k][1])
        j = i - 1 if i == len(stages) - 1 or (i > 0 and stages[i - 1][1] < stages[i + 1][1]) else i + 1
        a, b = sorted((i, j))
        stages[a] = [stages[a][0] + stages[b][0], stages[a][1] + stages[b][1]]
        del stages[b]
    index = {r: k for k, (rs, _) in enumerate(stages) for r in rs}
    return ({lay.name: index[res(lay)] for lay in layers},
            [{"input_px": [round(r ** 0.5) for r in rs if r], "macs_share": round(m, 4)} for rs, m in stages])


def stage_probes(layers: list[Layer], space: Mapping[str, list[int]], stages: Mapping[str, int],
                 n: int) -> dict[int, dict[str, int]]:
    """Per stage, a probe plan: every prunable group produced in that stage (the stage of the layer
    whose output channels it sets; the largest one if several) at its smallest candidate count (the
    largest change, for the clearest signal over the board's noise), every other group whole. A stage
    that produces no prunable group gets no probe: its scale stays near the single one."""
    home: dict[str, tuple[int, int]] = {}  # group -> (MACs of its largest producer, its stage)
    for lay in layers:
        g = lay.out_group
        if g in space:
            macs = lay.shape.macs * lay.calls
            if g not in home or macs > home[g][0]:
                home[g] = (macs, stages[lay.name])
    probes: dict[int, dict[str, int]] = {}
    for g, (_, k) in home.items():
        if space[g][0] < space[g][-1]:
            probes.setdefault(k, {})[g] = space[g][0]
    return dict(sorted(probes.items()))


def fit_stage_scales(rows: list[tuple[list[float], float]], base_ms: float) -> list[float]:
    """Per-stage scales ``s`` with ``measured - base ~= sum_k s_k * T_k`` over the measured ``rows``
    (``(per-stage table ms, measured ms)``; the first is the unpruned model), by least squares pulled
    towards the single scale ``(M0 - base) / T0`` (``PRIOR_WEIGHT``) and clipped to ``SCALE_LIMITS``
    of it."""
    import numpy as np

    t0, m0 = rows[0]
    n = len(t0)
    single = max(m0 - base_ms, 1e-9) / max(sum(t0), 1e-12)
    c = PRIOR_WEIGHT * m0 / single
    a = [list(t) for t, _ in rows] + [[c if i == k else 0.0 for i in range(n)] for k in range(n)]
    y = [m - base_ms for _, m in rows] + [c * single] * n
    s, *_ = np.linalg.lstsq(np.asarray(a, dtype=float), np.asarray(y, dtype=float), rcond=None)
    lo, hi = SCALE_LIMITS
    return [float(min(max(v, lo * single), hi * single)) for v in s]


@dataclass
class StageFit:
    """The stage calibration of one model: its stages, its probes, and (after :meth:`apply`) the scales.

    Example::

        sf = StageFit.plan(layers, space)           # sf.probes: {stage: keep of the groups it changes}
        arts = loop.export_stage_probes(sf, ...)    # {sf.probe_name(k): artifact}
        first = board.measure({"unpruned": full_art, **arts})
        sf.apply(pred, full, sf.measured(first.timings), unpruned_ms, base_ms)   # pred predicts with the scales
    """

    stages: dict[str, int]
    info: list[dict]
    probes: dict[int, dict[str, int]]

    @classmethod
    def plan(cls, layers: list[Layer], space: Mapping[str, list[int]], *, enabled: bool = True) -> StageFit:
        stages, info = stages_of(layers)
        probes = stage_probes(layers, space, stages, len(info)) if enabled and len(info) > 1 else {}
        return cls(stages, info, probes)

    @staticmethod
    def probe_name(k: int) -> str:
        """The name stage ``k``'s probe has in a board batch (beside ``"unpruned"``)."""
        return f"probe{k}"

    def measured(self, timings: Mapping[str, Any]) -> dict[int, float]:
        """Stage -> p50 ms of the probes a batch's ``timings`` ran; a probe that failed or is missing
        is left out (its stage keeps the single scale's share of the fit)."""
        out = {}
        for k in self.probes:
            t = timings.get(self.probe_name(k))
            if t is not None and t.ok:
                out[k] = t.p50_ms
        return out

    def apply(self, pred: Predictor, full: Mapping[str, int], probe_ms: Mapping[int, float],
              unpruned_ms: float, base_ms: float) -> bool:
        """Fit the scales on the unpruned model and the probes measured (``probe_ms``: stage -> p50, all
        from the batch that measured ``unpruned_ms``) and set them on ``pred``. False when no probe
        was measured (one scale stays)."""
        n = len(self.info)
        rows = [(pred.stage_sums(full, self.stages, n), unpruned_ms)]
        for k, keep in self.probes.items():
            self.info[k]["probe_groups"] = len(keep)
            if k in probe_ms:
                self.info[k]["probe_ms"] = round(probe_ms[k], 4)
                rows.append((pred.stage_sums({**full, **keep}, self.stages, n), probe_ms[k]))
        if len(rows) < 2:
            return False
        scales = fit_stage_scales(rows, base_ms)
        single = max(unpruned_ms - base_ms, 1e-9) / max(sum(rows[0][0]), 1e-12)
        pred.set_layer_scale({name: scales[k] / single for name, k in self.stages.items()})
        for k, st in enumerate(self.info):
            st["table_ms"] = round(rows[0][0][k], 4)
            st["scale"] = round(scales[k] / single, 3)  # in the graph against alone, relative to the mean
        return True

    def describe(self) -> str:
        return ", ".join(f"{'/'.join(map(str, st['input_px'])) or 'fc'} px: {st['scale']:.2f}"
                         for st in self.info if "scale" in st)
