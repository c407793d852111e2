"""The closed loop's search on one knob: the budget the allocator is given.

The allocation (:func:`.allocate.allocate`) with a fixed predictor is a
family of plans ordered by the budget it is given (the *knob*, in predicted
ms): a larger knob keeps more channels, so the board's latency rises along
it. The search works on the figures the board measured (:mod:`.judge`), not
on the table's prediction alone:

- before a bracket, from the measured point nearest the target: a secant
  through two measured points on the same side when its slope is plausible
  (within 2x of the proportional one), else the proportional step
  ``base + (k - base) x (target - base) / (judged - base)``; a step never
  more than halves or doubles the knob, so a flat noisy pair (two plans that
  measured alike) does not send the next plan to the minimum;
- once one measured plan is over the budget and one is under (the unpruned
  model is the first point over), the next knob is between them: a secant on
  the measured values kept ``EDGE`` of the bracket's width away from its
  ends, and a bisection when the same end moved twice in a row. Never
  outside the bracket;
- a point that contradicts the order (a plan with a larger knob measured
  faster than one with a smaller knob, on different sides of the budget) is
  noise on one of them: the bracket is the under point with the largest knob
  and the over point with the smallest knob above it.

The target is the middle of the acceptance window, ``budget x (1 - T/2)``.

Example::

    s = KnobSearch(budget=4.0, tolerance=0.1, base_ms=0.2)
    s.add(knob=5.0, judged=5.0)          # the unpruned model
    k, how = s.next_knob()               # 3.8, "proportional"
"""

from __future__ import annotations

from dataclasses import dataclass

EDGE = 0.1  # a secant step inside a bracket stays this fraction of its width from either end
MAX_STEP = 2.0  # before a bracket, a step at most halves or doubles the knob
SLOPE_RANGE = 2.0  # a secant's slope within this factor of the proportional one is believed


@dataclass
class Point:
    knob: float
    judged: float
    round: int


class KnobSearch:
    """Chooses the next knob from the measured points; see the module docstring."""

    def __init__(self, *, budget: float, tolerance: float, base_ms: float = 0.0) -> None:
        self.budget, self.tolerance = budget, tolerance
        self.target = budget * (1.0 - tolerance / 2.0)
        self.base = base_ms
        self.points: list[Point] = []
        self._moved: list[str] = []  # which end of the bracket each bracketed step replaced

    def add(self, *, knob: float, judged: float, round: int = 0) -> Point:
        before = self.bracket()
        point = Point(knob, judged, round)
        self.points.append(point)
        after = self.bracket()
        if before[0] and before[1] and after[0] and after[1]:
            self._moved.append("lo" if after[0] is not before[0] else "hi")
        return point

    def to_recheck(self, checked: set[int]) -> Point | None:
        """When the bracket has closed (no plan between its ends), the end to measure once more: a single
        measurement hit hard by noise would otherwise decide the result. The end further from the window
        first; never the unpruned model (round 0, measured in every batch) or an end already checked."""
        lo, hi = self.bracket()
        ends = [(self.budget * (1.0 - self.tolerance) - lo.judged, lo)] if lo is not None else []
        ends += [(hi.judged - self.budget, hi)] if hi is not None else []
        ends = [(d, p) for d, p in ends if p.round != 0 and p.round not in checked]
        return max(ends, key=lambda e: e[0])[1] if ends else None

    def bracket(self) -> tuple[Point | None, Point | None]:
        """(the under point with the largest knob, the over point with the smallest knob above it)."""
        under = [p for p in self.points if p.judged <= self.budget]
        lo = max(under, key=lambda p: p.knob) if under else None
        over = [p for p in self.points if p.judged > self.budget and (lo is None or p.knob > lo.knob)]
        hi = min(over, key=lambda p: p.knob) if over else None
        return lo, hi

    def _proportional(self, p: Point) -> float:
        if p.judged - self.base <= 1e-12 or p.knob - self.base <= 1e-12:
            return p.knob * self.target / max(p.judged, 1e-12)
        return self.base + (p.knob - self.base) * (self.target - self.base) / (p.judged - self.base)

    def remeasured(self, point: Point, *, judged: float, round: int) -> None:
        """``point``'s plan measured again: it stands on the new figure, and the bracket's history restarts."""
        point.judged, point.round = judged, round
        self._moved.clear()

    def suspect(self, checked: set[int]) -> Point | None:
        """The end of the bracket that stayed put while the other moved twice, when not measured twice yet."""
        lo, hi = self.bracket()
        if lo is None or hi is None or len(self._moved) < 2 or self._moved[-1] != self._moved[-2]:
            return None
        stayed = hi if self._moved[-1] == "lo" else lo
        return None if stayed.round == 0 or stayed.round in checked else stayed

    def next_knob(self) -> tuple[float, str]:
        """(the next knob, how it was chosen)."""
        lo, hi = self.bracket()
        if lo is not None and hi is not None:
            width = hi.knob - lo.knob
            if len(self._moved) >= 2 and self._moved[-1] == self._moved[-2]:
                return lo.knob + width / 2.0, "bisection in the bracket"
            t = (self.target - lo.judged) / (hi.judged - lo.judged)
            t = min(max(t, EDGE), 1.0 - EDGE)
            return lo.knob + t * width, "secant in the bracket"
        side = [p for p in self.points if (p.judged > self.budget) == (lo is None)]
        near = min(side, key=lambda p: (abs(p.judged - self.target), p.knob if lo is None else -p.knob))
        k = self._proportional(near)
        how = "proportional"
        others = [p for p in side if p is not near and abs(p.knob - near.knob) > 1e-12]
        if others:
            o = min(others, key=lambda p: abs(p.knob - near.knob))
            slope = (near.judged - o.judged) / (near.knob - o.knob)
            prop = (near.judged - self.base) / (near.knob - self.base) if near.knob > self.base else slope
            if prop > 0 and prop / SLOPE_RANGE <= slope <= prop * SLOPE_RANGE:
                k, how = near.knob + (self.target - near.judged) / slope, "secant"
        k = min(max(k, near.knob / MAX_STEP), near.knob * MAX_STEP)
        if hi is not None:  # only over points: stay under the nearest one's knob
            k = min(k, hi.knob * (1 - 1e-6))
        return k, how

    def fallback(self, knob: float, repeated: Point, tried: int) -> float | None:
        """Another knob when ``knob`` gave the plan of the measured point ``repeated`` (``tried`` times so
        far), or None when there is no plan left to try (the candidates' steps are coarser than the window)."""
        lo, hi = self.bracket()
        up = repeated.judged <= self.budget  # repeated an under plan: look for one that keeps more
        if lo is not None and hi is not None:
            if tried >= 2:
                return None
            return knob + (hi.knob - knob) / 2.0 if up else knob - (knob - lo.knob) / 2.0
        if tried >= 3:
            return None
        return knob * (1.15 if up else 0.85)
