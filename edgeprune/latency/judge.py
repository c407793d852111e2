"""Judging a round of the closed loop: the figure the budget is judged on, how sure it is, more rounds while unsure.

**The figure.** With ``--latency-budget MS`` the plan's own p50 on the board
(the median of its interleaved rounds' medians). With ``--speedup S`` the
budget is relative, so the figure is the unpruned model's first p50 times the
median over interleaved rounds of ``plan / unpruned`` *in the same round*:
the speedup measured at one moment, which a board whose load drifts between
batches moves alike in both.

**How sure.** The agent reports, per model, the median of each interleaved
round (``rounds_ms``). A seeded bootstrap over those rounds (resampling whole
rounds, the plan and the unpruned model of a round together) gives a
``CONFIDENCE`` interval of the figure. While the interval is wider than the
tolerance, or the agent says other processes kept more than ``BUSY_CORES``
cores busy, the same two models are measured again (another batch, the rounds
pooled), up to ``MAX_BATCHES`` batches; what was done and why is kept in the
judgement. On a board with a CPU quota each round is timed with enough runs
to span ``QUOTA_PERIODS`` CFS periods (:func:`runs_for_quota`), so a round
does not land inside one throttled or one free period, and a round's figure
is the MEAN of its runs (``rounds_mean_ms``), not their median: back to back
under a quota, a run that straddles a throttled period takes its run time
plus the rest of the period, and which runs straddle depends on how the run
time divides the quota, so the median of a round jumps between the free and
the throttled time (a plan 35 % faster measured 7 % faster on a 0.5-core
farm board). The mean is the run time the board sustains, CPU time over the
quota, and its ratio is the plan's real speedup there.

An agent without ``rounds_ms`` (older agents, phones) gives one value per
batch: the interval is then over batches.

Example::

    j = measure_judged(board, {"unpruned": a, "plan": b}, settings=WHOLE, relative_to=4.1, tolerance=0.1)
    j.judged_ms, j.low_ms, j.high_ms, j.actions
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgeprune.errors import AgentError

CONFIDENCE = 0.90
BOOTSTRAP = 2000
MAX_BATCHES = 3  # batches per round at most: the first and up to two more while unsure
BUSY_CORES = 0.5  # other processes' busy cores above which the timings are contended
QUOTA_PERIODS = 3  # a timed round on a CPU quota spans at least this many CFS periods
MAX_RUNS_PER_ROUND = 200


@dataclass
class Judgement:
    """A round's figure and its interval, over ``rounds`` interleaved rounds in ``batches`` batches."""

    judged_ms: float
    low_ms: float
    high_ms: float
    measured_ms: float  # the plan's raw p50 (median of its round medians)
    unpruned_ms_same_batch: float
    rounds: int
    batches: int
    busy_cores: float | None  # the most other processes kept busy in any batch
    quota: dict[str, Any] | None = None
    actions: list[str] = field(default_factory=list)
    last: Any = None  # the last BatchResult
    artifact: Any = None  # the file measured (set by the loop)

    @property
    def width(self) -> float:
        """The interval's width as a fraction of the figure."""
        return (self.high_ms - self.low_ms) / self.judged_ms if self.judged_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_ms": [round(self.low_ms, 4), round(self.high_ms, 4)],
            "confidence": CONFIDENCE,
            "interval_width": round(self.width, 4),
            "rounds": self.rounds,
            "batches": self.batches,
            "other_busy_cores": self.busy_cores,
            "cpu_quota": self.quota,
            "actions": list(self.actions),
        }


def bootstrap_median(values: np.ndarray, *, confidence: float = CONFIDENCE, n: int = BOOTSTRAP,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``values`` (seeded: the same rounds give the same interval)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, v.size, size=(n, v.size))], axis=1)
    a = (1.0 - confidence) / 2.0
    return float(np.quantile(meds, a)), float(np.quantile(meds, 1.0 - a))


def runs_for_quota(board_facts: dict[str, Any], unpruned_ms: float, runs: int) -> tuple[int, dict[str, Any] | None]:
    """Runs per timed round so that a round spans ``QUOTA_PERIODS`` CFS periods on a board with a CPU quota."""
    quota = board_facts.get("cpu_quota")
    if not isinstance(quota, (int, float)) or quota <= 0:
        return runs, None
    period = board_facts.get("cpu_quota_period_ms") or 100.0  # the kernel's default period
    need = math.ceil(QUOTA_PERIODS * period / max(unpruned_ms, 1e-3))
    chosen = max(runs, min(need, MAX_RUNS_PER_ROUND))
    return chosen, {"cpus": round(float(quota), 3), "period_ms": round(float(period), 3), "runs_per_round": chosen}


def round_figures(t, quota: Any = None) -> list[float]:
    """A timing's per-round figures: the medians, or on a board with a CPU quota (``quota`` truthy) the
    means (see the module docstring); one value, its p50, from an agent without per-round figures."""
    if quota and getattr(t, "rounds_mean_ms", None):
        return list(t.rounds_mean_ms)
    return list(t.rounds_ms) if t.rounds_ms else [t.p50_ms]


def judge(plan_rounds: list[float], unpruned_rounds: list[float], *, relative_to: float | None) -> tuple:
    """(figure, low, high, raw plan p50, unpruned p50 beside it) from paired per-round medians."""
    p, u = np.asarray(plan_rounds, dtype=np.float64), np.asarray(unpruned_rounds, dtype=np.float64)
    n = min(p.size, u.size)
    p, u = p[:n], u[:n]
    raw, beside = float(np.median(p)), float(np.median(u))
    if relative_to is None:
        lo, hi = bootstrap_median(p)
        return raw, lo, hi, raw, beside
    ratio = p / u
    lo, hi = bootstrap_median(ratio)
    return relative_to * float(np.median(ratio)), relative_to * lo, relative_to * hi, raw, beside


def measure_judged(board, files: dict, *, settings, relative_to: float | None, tolerance: float,
                   quota: dict[str, Any] | None = None, max_batches: int = MAX_BATCHES, where: str = "") -> Judgement:
    """Measure ``files`` (``{"unpruned": ..., "plan": ...}``) on ``board`` until the figure is known to within
    ``tolerance`` and the board was not busy, or ``max_batches`` batches; the :class:`Judgement`."""
    plan_r: list[float] = []
    un_r: list[float] = []
    busy: float | None = None
    actions: list[str] = []
    batches = 0
    while True:
        res = board.measure(files, settings=settings)
        batches += 1
        t, tu = res.timings["plan"], res.timings["unpruned"]
        if not (t.ok and tu.ok):
            raise AgentError(f"{where}the board could not run the exported model: {t.error or tu.error}")
        a, b = round_figures(t, quota), round_figures(tu, quota)
        if len(a) != len(b):  # one value each when the agent's round lists do not pair up
            a, b = [t.p50_ms], [tu.p50_ms]
        plan_r += a
        un_r += b
        if res.other_busy_cores is not None:
            busy = max(busy or 0.0, res.other_busy_cores)
        figure, lo, hi, raw, beside = judge(plan_r, un_r, relative_to=relative_to)
        width = (hi - lo) / figure if figure > 0 else 0.0
        why = []
        if width > tolerance:
            why.append(f"the {CONFIDENCE:.0%} interval is {width:.0%} of the figure, wider than the tolerance "
                       f"{tolerance:.0%}")
        if res.other_busy_cores is not None and res.other_busy_cores > BUSY_CORES:
            why.append(f"other processes kept {res.other_busy_cores:.2f} cores busy")
        if not why:
            break
        if batches >= max_batches:
            actions.append(f"after batch {batches}: {'; '.join(why)}: stopped at the limit of {max_batches} "
                           "batches (the figure stays this uncertain)")
            break
        actions.append(f"after batch {batches}: {'; '.join(why)}: measured {settings.rounds} more rounds")
    return Judgement(judged_ms=figure, low_ms=lo, high_ms=hi, measured_ms=raw, unpruned_ms_same_batch=beside,
                     rounds=len(plan_r), batches=batches, busy_cores=busy, quota=quota, actions=actions, last=res)


def with_runs(settings, runs: int):
    """``settings`` with ``runs`` timed runs per round (a frozen BatchSettings)."""
    return settings if runs == settings.runs else replace(settings, runs=runs)
