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

Example::

    pred = Predictor(layers, table, calibration=Calibration(base_ms=0.01))
    pred.calibration.add(pred.table_ms(full), measured_ms=4.2)
    pred.predict(keep)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edgeprune.latency.layers import Layer


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
            slope = (m1 - m0) / max(t1 - t0, 1e-12)
            if slope <= 0:  # flattened by noise: fall back to the nearest point's ratio
                t, m = pts[0] if table_ms <= pts[0][0] else pts[-1]
                return self.base_ms + table_ms * self._ratio(t, m)
            # the nearest segment's line: keeps the cost a plan does not shrink (adds, per-node)
            return max(m0 + slope * (table_ms - t0), self.base_ms + 1e-6)
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

    def __init__(self, layers: list[Layer], costs, *, calibration: Calibration | None = None) -> None:
        self.layers = layers
        self.costs = costs
        self.calibration = calibration or Calibration()
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
            v = self._cache[k] = self.costs.lookup(layer.shape.with_channels(cin, cout)) * layer.calls
        return v

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
