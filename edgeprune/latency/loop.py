"""The closed loop: plan -> prune -> export -> measure on the board -> search -> plan again.

:func:`plan_for_budget` is what ``prune --latency-budget MS`` / ``--speedup S``
runs (through :mod:`edgeprune.latency.job`):

1. trace the model: groups, layers (:mod:`.layers`), candidate counts per
   group, channel importance (:mod:`.allocate`);
2. export the unpruned model in the board's format and precision (the
   profile's, or ``fmt``/``precision``/``io_precision``) and measure it on
   the board: its p50, the runtime's per-call cost (the baseline), and the
   board's identity; ``--speedup S`` sets the budget to that p50 / S. In the
   same batch go the stage probes (:class:`.predict.StageFit`);
3. fill the latency table (:mod:`.measure`): the cached entries for this
   board identity are reused, only missing shapes are built and measured;
4. calibrate the prediction (:mod:`.predict`) on the unpruned model and the
   probes; from here the predictor is fixed, so the allocation is one family
   of plans ordered by the budget it is given (the knob, :mod:`.search`);
5. each round: allocate for the knob, prune a copy, export it, and measure it
   on the board *interleaved with the unpruned model* (:mod:`.judge`: the
   judged figure with its confidence interval, more batches while it is
   wider than the tolerance or the board is busy). The round is **met** when
   the judged figure is within ``[1 - T, 1] x budget`` (``--tolerance T``,
   0.10 by default); otherwise the measured point joins the search and the
   next knob is chosen from the measured values: stepping towards the
   window until one plan is over and one under, then only between them. A
   round more than T under is not the end while rounds remain;
6. the result: the round in the window keeping the most importance
   (``verdict`` ``met``); when rounds run out with none in it, the best
   under the budget, said in one warning line (``met_under``); with none
   under, the closest (``not_met``, ``met=False``: the caller exits
   non-zero). If even every group at its minimum measures over budget, the
   status says so with the best latency reachable.

A budget is reported met only when the board measured it. With
``--latency-budget MS`` the round's own p50 is judged against it; with
``--speedup S`` the budget is relative, so the round is judged by the
speedup measured against the unpruned model *in the same rounds* (scaled to
the unpruned p50 of the first measurement): on a shared board whose load or
clock drifts 30-40 % between batches, that ratio holds where raw p50s do not.
Both figures are in every round's row, with its line (``line``) saying which
is which. ``estimate=True`` plans from the profile's roofline
(:mod:`.estimate`) without a board: ``met`` is then None and everything is
labelled an estimate.

The artifact the board timed for the chosen round is kept
(:attr:`LoopResult.artifact`, its sha256 in ``to_dict()["artifact"]``), so
the prune folder holds exactly what was measured.

Example::

    result = plan_for_budget(lm, target="local", latency_budget=4.0)
    result.plan, result.verdict, [r["judged_ms"] for r in result.rounds]
"""

from __future__ import annotations

import copy
import math
import shutil
import statistics
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._paths import sha256_file
from edgeprune.bench.batch import BatchSession, BatchSettings
from edgeprune.boards.profiles import load_profile
from edgeprune.boards.reach import resolve_target
from edgeprune.checks.thresholds import Thresholds
from edgeprune.errors import AgentError, PruneError
from edgeprune.export.pipeline import ExportOptions, export, resolve
from edgeprune.latency.allocate import allocate, channel_importance
from edgeprune.latency.estimate import RooflineEstimate
from edgeprune.latency.judge import (
    BUSY_CORES,
    CONFIDENCE,
    Judgement,
    judge,
    measure_judged,
    round_figures,
    runs_for_quota,
    with_runs,
)
from edgeprune.latency.layers import (
    DEFAULT_MAX_STEPS,
    DEFAULT_MIN_KEEP,
    candidate_counts,
    layer_inventory,
)
from edgeprune.latency.measure import MICRO, measure_shapes, refine_shapes, shapes_to_measure
from edgeprune.latency.predict import Calibration, Predictor, StageFit
from edgeprune.latency.search import KnobSearch, Point
from edgeprune.latency.table import LatencyTable, cache_path, load_cached
from edgeprune.models import LoadedModel
from edgeprune.progress import Counter, note, step

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

DEFAULT_MAX_ROUNDS = 5  # a bracketing search: a step or two to bracket, then a few inside
DEFAULT_TOLERANCE = 0.10  # "met" = judged within [1 - T, 1] x budget
PER_CALL_WARN = 0.5  # warn when at least half the unpruned p50 is per-call cost (the empty model's p50)
WHOLE = BatchSettings(rounds=12, runs=5, warmup=5, max_s=90.0, timeout_s=600.0)


@dataclass
class LoopResult:
    plan: Any  # ChannelPlan
    budget_ms: float
    met: bool | None  # None: not measured (estimate); True for verdicts met and met_under
    status: str  # one line
    rounds: list[dict] = field(default_factory=list)
    unpruned_ms: float | None = None
    source: str = "measured"
    table: Any = None  # LatencyTable (None for an estimate)
    info: dict[str, Any] = field(default_factory=dict)
    verdict: str = "estimate"  # met | met_under | not_met | estimate
    artifact: Path | None = None  # the file the board timed for the chosen round (a temporary folder)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_ms": round(self.budget_ms, 4),
            "met": self.met,
            "verdict": self.verdict,
            "status": self.status,
            "source": self.source,
            "unpruned_ms": None if self.unpruned_ms is None else round(self.unpruned_ms, 4),
            "rounds": self.rounds,
            **self.info,
        }


def _export(module, lm, profile, fmt: str, precision: str, folder: Path, name: str,
            io_precision: str | None = None) -> Path:
    """The artifact the board runs, made by the exporter itself (timing only: no agreement gate).

    ``profile``: a Profile (or a profile name, for the benchmarks)."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    loaded = LoadedModel(module=module, input_shape=tuple(lm.input_shape), name=name, source=name,
                         task=getattr(lm, "task", "classify"), base=getattr(lm, "base", None),
                         normalize=getattr(lm, "normalize", None))
    options = ExportOptions(fmt=fmt, precision=precision, io_precision=io_precision, calib_count=32,
                            verify_count=8, min_agreement=Thresholds(top1=0.0, cosine=-1.0))
    report = export(loaded, profile=profile, output_dir=folder / name, options=options)
    return report.final.path


def export_stage_probes(sf, lm, full: dict[str, int], groups, *, profile_name: str, fmt: str, precision: str,
                        folder: Path, align: int, prefix: str = "", protect: Iterable[str] = (),
                        protect_stem: bool = True) -> dict[str, Path]:
    """Export the stage probes of ``sf`` (a :class:`.predict.StageFit`): for each stage, ``lm``'s model
    with the groups that stage produces at their minimum and every other group full. Returns
    ``{sf.probe_name(k): artifact}``, to measure in the same batch as the unpruned model.

    Timing only: which channels go does not change the latency, so the probes keep the first
    channels (no scoring, no data) and are not verified."""
    from edgeprune.prune import ChannelPlan, example_input, prune_

    shape = tuple(lm.input_shape)
    x = example_input(shape)
    arts = {}
    for k, keep_k in sf.probes.items():
        step(f"exporting stage probe {k + 1}/{len(sf.info)} (its {len(keep_k)} group(s) at their minimum)")
        plan = ChannelPlan.from_keep(groups, {**full, **keep_k}, align=align, input_shape=shape, base=lm.base)
        plan.note = f"stage probe {k}"
        probe = copy.deepcopy(lm.module)
        prune_(probe, plan, importance="first", protect=protect, protect_stem=protect_stem, x=x, verify=False)
        name = sf.probe_name(k)
        arts[name] = _export(probe, lm, profile_name, fmt, precision, folder, prefix + name)
    return arts


@dataclass
class _Traced:
    """The model as the search sees it: groups, candidate counts, channel scores."""

    lm: Any
    inv: Any
    space: dict[str, list[int]]
    scores: dict
    multiple: int
    x: Any

    @property
    def groups(self):
        return self.inv.prunable

    @property
    def full(self) -> dict[str, int]:
        return {g: c[-1] for g, c in self.space.items()}

    def make_plan(self, keep, note_text):
        from edgeprune.prune import ChannelPlan

        plan = ChannelPlan.from_keep(self.groups, keep, align=self.multiple, input_shape=tuple(self.lm.input_shape),
                                     base=self.lm.base)
        plan.note = note_text
        return plan


@dataclass
class _Board:
    """What the rounds measure with: the open board, the unpruned artifact beside every plan, the settings."""

    board: Any
    target: str
    profile: Any
    fmt: str
    precision: str
    io_precision: str
    work: Path
    full_art: Path
    settings: BatchSettings
    relative_to: float | None  # the unpruned p50 that set a --speedup budget (None: an absolute budget)
    tolerance: float
    quota: dict[str, Any] | None


def _open_board(reach, *, threads: int, accept_new_host_key: bool):
    return BatchSession(reach, settings=BatchSettings(threads=threads), accept_new_host_key=accept_new_host_key)


def _check_args(latency_budget, speedup, max_rounds, min_keep, tolerance) -> None:
    if (latency_budget is None) == (speedup is None):
        raise PruneError("give exactly one of --latency-budget MS or --speedup S")
    if latency_budget is not None and not latency_budget > 0:
        raise PruneError(f"--latency-budget {latency_budget}: must be a positive number of ms")
    if speedup is not None and not speedup > 1.0:
        raise PruneError(f"--speedup {speedup}: must be above 1 (2 = twice as fast)")
    if max_rounds < 1:
        raise PruneError(f"--max-rounds {max_rounds}: at least one round is needed")
    if not 0.0 < min_keep <= 1.0:
        raise PruneError(f"--min-keep {min_keep}: a fraction of each group's channels in (0, 1]")
    if not 0.0 < tolerance < 1.0:
        raise PruneError(f"--tolerance {tolerance}: a fraction of the budget in (0, 1)")


def _trace(lm, *, multiple, protect, protect_stem, min_keep, max_steps, sensitivity, data) -> _Traced:
    from edgeprune.prune import example_input

    x = example_input(tuple(lm.input_shape))
    step("tracing layers and channel groups for the latency model")
    inv = layer_inventory(lm.module, x, protect=protect, protect_stem=protect_stem)
    if not inv.prunable:
        raise PruneError(f"{lm.name}: no prunable channel groups, so no latency budget can be planned")
    space = {
        g.id: candidate_counts(g.channels, multiple=math.lcm(multiple, g.slices), min_keep=min_keep,
                               max_steps=max_steps)
        for g in inv.prunable
    }
    step(f"scoring channels ({sensitivity})")
    scores = channel_importance(lm.module, x, inv.groups, criterion=sensitivity, data=data, protect=protect,
                                protect_stem=protect_stem)
    return _Traced(lm=lm, inv=inv, space=space, scores=scores, multiple=multiple, x=x)


def _estimate(tr: _Traced, profile, precision, latency_budget, speedup, base_info) -> LoopResult:
    est = RooflineEstimate(profile, precision)
    pred = Predictor(tr.inv.layers, est)
    unpruned = pred.predict(tr.full)
    budget = latency_budget if latency_budget is not None else unpruned / speedup
    alloc = allocate(tr.space, tr.scores, pred, budget)
    status = (
        f"planned from an {est.describe()}: predicted {alloc.predicted_ms:.3g} ms for a budget of "
        f"{budget:.3g} ms; NOT measured on a board, so not known to meet it"
    )
    if not alloc.feasible:
        status = (f"even every group at its minimum is estimated at {alloc.fastest_ms:.3g} ms, over "
                  f"the budget of {budget:.3g} ms ({est.describe()}, not measured)")
    return LoopResult(
        plan=tr.make_plan(alloc.keep, f"latency budget {budget:.4g} ms ({est.describe()})"),
        budget_ms=budget, met=None if alloc.feasible else False, status=status, source="estimate",
        unpruned_ms=None, verdict="estimate" if alloc.feasible else "not_met",
        info={**base_info, "estimate": {"describe": est.describe(), "notes": est.notes,
                                        "unpruned_predicted_ms": round(unpruned, 4), **alloc.to_dict()}},
    )


def _fill_table(board, tr: _Traced, identity, *, fmt, precision, use_cache, micro, io_precision, scheme, target):
    """The latency table for this board identity: cached entries reused, missing shapes measured now."""
    table = load_cached(identity, fmt=fmt, precision=precision) if use_cache else \
        LatencyTable(dict(identity), fmt=fmt, precision=precision)
    reused = len(table.entries)
    needed = shapes_to_measure(tr.inv.layers, tr.space)
    missing = table.missing(needed)
    visits0 = getattr(board, "visits", 0)
    measured_now = 0
    built_before = table.build_s
    if missing:
        counter = Counter(f"{target}: latency table, models built and measured", len(missing))
        measured_now += measure_shapes(board, table, missing, settings=micro, io_precision=io_precision,
                                       scheme=scheme, counter=counter)
        extra = refine_shapes(table, tr.inv.layers, tr.space)
        if extra:
            counter = Counter(f"{target}: latency table, refining {len(extra)} cliffs", len(extra))
            measured_now += measure_shapes(board, table, extra, settings=micro, io_precision=io_precision,
                                           scheme=scheme, counter=counter)
        table.save(cache_path(table))
    note(f"latency table: {len(needed)} shapes for this model, {len(needed) - len(missing)} reused from "
         f"the cache, {measured_now} measured now ({getattr(board, 'visits', 0) - visits0} board visits)")
    info = {"shapes_for_this_model": len(needed), "reused_from_cache": len(needed) - len(missing),
            "entries_in_cache_before": reused, "measured_now": measured_now, "entries": len(table.entries),
            "build_s": round(table.build_s - built_before, 2), "build_s_all_runs": round(table.build_s, 2),
            "cache": str(cache_path(table))}
    return table, info


def _calibrate(tr: _Traced, table, sf, first, unpruned, base_ms, target):
    pred = Predictor(tr.inv.layers, table, calibration=Calibration(base_ms=base_ms))
    if sf.apply(pred, tr.full, sf.measured(first.timings), unpruned, base_ms):
        note(f"in-graph cost against the table, per stage (1 = the model's mean): {sf.describe()}")
    pred.calibration.add(pred.table_ms(tr.full), unpruned)
    per_call = base_ms / unpruned if unpruned > 0 else 0.0
    if per_call >= PER_CALL_WARN:
        note(f"warning: {per_call:.0%} of the unpruned model's {unpruned:.3f} ms on {target} is per-call "
             f"cost (an empty model measures {base_ms:.3f} ms), which removing channels cannot touch: "
             f"a budget under {base_ms:.3f} ms cannot be met and the savings left are near the "
             "measurement noise; a bigger batch or input, or a board where the model costs more, "
             "is where pruning pays")
    return pred, per_call


def _measure_round(b: _Board, tr: _Traced, r: int, plan, *, art: Path | None = None, importance, data, protect,
                   protect_stem) -> Judgement:
    """Prune a copy to ``plan``, export it (unless ``art``, its artifact, is given) and judge it on the board."""
    from edgeprune.prune import prune_

    if art is None:
        step(f"round {r}: pruning and exporting the planned model")
        pruned = copy.deepcopy(tr.lm.module)
        prune_(pruned, plan, importance=importance, data=data, protect=protect, protect_stem=protect_stem, x=tr.x,
               verify=False)
        art = _export(pruned, tr.lm, b.profile, b.fmt, b.precision, b.work, f"round{r}",
                      io_precision=b.io_precision)
    step(f"round {r}: measuring on {b.target}, interleaved with the unpruned model")
    j = measure_judged(b.board, {"unpruned": b.full_art, "plan": art}, settings=b.settings,
                       relative_to=b.relative_to, tolerance=b.tolerance, quota=b.quota,
                       where=f"{b.target}: round {r}: ")
    j.artifact = art
    return j


def _next_alloc(search: KnobSearch, tr: _Traced, pred, seen: dict, knob: float, how: str):
    """(allocation, knob, how) for the next plan not yet measured, or (None, the plan it kept repeating, how)."""
    alloc = allocate(tr.space, tr.scores, pred, knob)
    tried = 0
    while _key(alloc.keep) in seen:
        moved = search.fallback(knob, seen[_key(alloc.keep)], tried)
        tried += 1
        if moved is None:
            return None, seen[_key(alloc.keep)], how
        knob, how = moved, f"{how}, moved off a plan already measured"
        alloc = allocate(tr.space, tr.scores, pred, knob)
    return alloc, knob, how


def _key(keep: dict) -> tuple:
    return tuple(sorted(keep.items()))


def _search(b: _Board, tr: _Traced, pred, *, budget, unpruned, base_ms, max_rounds, **prune_kw) -> tuple:
    """The measured rounds (rows) and why the search stopped (None: it met the budget or ran out of rounds)."""
    search = KnobSearch(budget=budget, tolerance=b.tolerance, base_ms=base_ms)
    unpruned_point = Point(knob=pred.predict(tr.full), judged=unpruned, round=0)
    search.points.append(unpruned_point)  # the unpruned model: the first point over the budget
    seen: dict[tuple, Point] = {_key(tr.full): unpruned_point}
    rows: list[dict] = []
    by_round: dict[int, tuple] = {}  # round -> (allocation, plan, artifact, knob)
    checked: set[int] = set()
    knob, how = search.target, "the table's prediction"
    for r in range(1, max_rounds + 1):
        again, closed = (search.suspect(checked) if r > 1 else None), False
        if again is None:
            if r > 1:
                knob, how = search.next_knob()
            alloc, knob_or_rep, how = _next_alloc(search, tr, pred, seen, knob, how)
        if again is None and alloc is None:  # the bracket closed: check the end a noisy measurement may hold
            again, closed = search.to_recheck(checked), True
            if again is None:
                rep = knob_or_rep
                other = "the unpruned model" if rep.round == 0 else f"round {rep.round}"
                return rows, (f"no plan left between the measured ones (the next step gives the plan of {other} "
                              "again, measured twice where it decides: the candidates' steps are coarser than "
                              "the window)")
        if again is not None:
            why = "the bracket closed on it" if closed else "it held the bracket while the other end moved twice"
            checked.add(again.round)
            alloc, plan, art, knob = by_round[again.round]
            how = f"measuring round {again.round}'s plan again ({why})"
        else:
            knob, art = knob_or_rep, None
            plan = tr.make_plan(alloc.keep, f"latency budget {budget:.4g} ms, round {r}")
        j = _measure_round(b, tr, r, plan, art=art, **prune_kw)
        row = _round_row(r, alloc, j, budget, b, knob=knob, how=how)
        row["removed_fraction"] = round(plan.removed_fraction(), 4)
        if again is not None:
            old = next(x for x in rows if x["round"] == again.round)
            old["superseded_by"] = r
            row["remeasured_round"] = again.round
            row["first_judged_ms"] = old["judged_ms"]
            search.remeasured(again, judged=j.judged_ms, round=r)  # the point stands on its latest measurement
            checked.add(r)
        else:
            seen[_key(alloc.keep)] = search.add(knob=knob, judged=j.judged_ms, round=r)
        row["line"] = round_line(row)
        row["plan"], row["_artifact"] = plan, j.artifact
        by_round[r] = (alloc, plan, j.artifact, knob)
        rows.append(row)
        note(row["line"])
        if row["verdict"] == "met":
            return rows, None
        if row["verdict"] == "over" and not alloc.feasible:
            return rows, "every group at its minimum and still over: nothing left to try"
    return rows, None


def _target(target: str, *, host, reach, profile, estimate: bool):
    """(reach, profile): as the caller resolved them, else ``target`` resolved here (no reach to estimate)."""
    if reach is None and profile is None:
        reach = None if estimate else resolve_target(target, host=host)
    if profile is None:
        profile = reach.profile if reach is not None else load_profile(target)
    return reach, profile


def _unpruned_round(b: _Board, first, unpruned: float, budget: float, quota) -> dict:
    """Round 0 when the unpruned model (``unpruned`` ms) already meets the budget: nothing to remove."""
    t_un = first.timings["unpruned"]
    per_round = round_figures(t_un, quota)  # the figures ``unpruned`` came from (means on a CPU quota)
    lo_hi = judge(per_round, per_round, relative_to=None)
    j = Judgement(judged_ms=unpruned, low_ms=lo_hi[1], high_ms=lo_hi[2], measured_ms=unpruned,
                  unpruned_ms_same_batch=unpruned, rounds=len(per_round), batches=1,
                  busy_cores=first.other_busy_cores, quota=quota, last=first)
    row = _round_row(0, None, j, budget, b, knob=None, how="the unpruned model")
    row["verdict"], row["removed_fraction"] = "met", 0.0
    row["line"] = round_line(row)
    row["_artifact"] = b.full_art
    note(f"round 0: the unpruned model measures {unpruned:.3f} ms, within the budget of {budget:.3f} ms: "
         "nothing to remove")
    return row


def _keep_measured(chosen: dict | None, keep_dir: Path) -> Path | None:
    """The file the board timed for the chosen round, copied out of the loop's scratch folder."""
    if chosen is None or chosen.get("_artifact") is None:
        return None
    src = Path(chosen["_artifact"])
    artifact = keep_dir / f"measured{src.suffix}"
    shutil.copyfile(src, artifact)
    return artifact


def _measure_unpruned(board, tr: _Traced, lm, sf, *, profile, fmt, precision, io_precision, work: Path, align,
                      protect, protect_stem, settings, target):
    """Round 0: export the unpruned model and the stage probes, time them in one batch; (the unpruned file,
    the batch, the unpruned figure: its p50, or on a CPU quota the median of its round means)."""
    step(f"exporting the unpruned model ({fmt} {precision})")
    full_art = _export(tr.lm.module, lm, profile, fmt, precision, work, "unpruned", io_precision=io_precision)
    probe_arts = export_stage_probes(sf, lm, tr.full, tr.groups, profile_name=profile, fmt=fmt,
                                     precision=precision, folder=work, align=align, protect=protect,
                                     protect_stem=protect_stem)
    step(f"{target}: measuring the unpruned model" + (f" and {len(probe_arts)} stage probes" if probe_arts else ""))
    first = board.measure({"unpruned": full_art, **probe_arts}, settings=settings)
    t_un = first.timings["unpruned"]
    if not t_un.ok:
        raise AgentError(f"{target}: the board cannot run the unpruned model: {t_un.error}")
    unpruned = t_un.p50_ms
    on_quota = (first.board or {}).get("cpu_quota")
    if on_quota and t_un.rounds_mean_ms:  # what a board with a CPU quota sustains (see .judge)
        unpruned = float(statistics.median(round_figures(t_un, on_quota)))
    return full_art, first, unpruned


def _caveats(rounds: list[dict], first, uncertain: str | None) -> str:
    """What the status line adds: the board was busy while it measured; the chosen figure is unsure."""
    out = ""
    busy = max([r.get("other_busy_cores") or 0.0 for r in rounds] + [first.other_busy_cores or 0.0])
    if busy > BUSY_CORES:
        out += (f" [the board was busy: other processes used up to {busy:.1f} cores while it measured; "
                "these timings are contended]")
    if uncertain:
        out += f" [{uncertain}]"
    return out


def plan_for_budget(
    lm,
    *,
    target: str,
    host: str | None = None,
    latency_budget: float | None = None,
    speedup: float | None = None,
    fmt: str | None = None,
    precision: str | None = None,
    io_precision: str | None = None,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    tolerance: float = DEFAULT_TOLERANCE,
    importance: str = "l1",
    data: Iterable | None = None,
    sensitivity: str | None = None,
    protect: tuple[str, ...] = (),
    protect_stem: bool = False,
    align: bool = True,
    min_keep: float = DEFAULT_MIN_KEEP,
    max_steps: int = DEFAULT_MAX_STEPS,
    threads: int = 0,
    estimate: bool = False,
    use_cache: bool = True,
    accept_new_host_key: bool = False,
    board=None,
    probe_stages: bool = True,
    reach=None,
    profile=None,
) -> LoopResult:
    """Plan ``lm`` (a LoadedModel) for a latency budget on ``target``; see the module docstring.

    ``importance`` picks which channels a group keeps; ``sensitivity`` (default:
    the same criterion) scores channels across groups for the allocation:
    ``"taylor"`` with ``data`` puts every group in one unit, the loss change.

    ``tolerance``: the acceptance window ``[1 - T, 1] x budget``.
    ``io_precision``: the TFLite input/output type of every artifact measured
    (default: the profile's, else int8).

    ``protect_stem``: off by default: the stem's group is weighed like every
    other (at a 64 px input it runs at 32 px and is a large share of the
    latency; protected, the allocation has to cut elsewhere what it would save).

    ``probe_stages``: fit a scale per resolution stage from whole-model probes
    measured with the unpruned model (one batch; see :mod:`.predict`). Off,
    one scale serves the whole table.

    ``board``: an open-able measuring session (default: a
    :class:`~edgeprune.bench.batch.BatchSession` on ``target``); tests pass a
    fake board here. ``reach``/``profile``: the target as the caller already
    resolved it (else ``target`` and ``host`` are resolved here).
    """
    _check_args(latency_budget, speedup, max_rounds, min_keep, tolerance)
    reach, profile = _target(target, host=host, reach=reach, profile=profile, estimate=estimate)
    fmt, precision = resolve(profile, fmt, precision)
    multiple = profile.alignment(precision) if align else 1
    sensitivity = sensitivity or importance
    tr = _trace(lm, multiple=multiple, protect=protect, protect_stem=protect_stem, min_keep=min_keep,
                max_steps=max_steps, sensitivity=sensitivity, data=data)
    base_info = {"format": fmt, "precision": precision, "align": multiple, "min_keep": min_keep,
                 "max_rounds": max_rounds, "tolerance": tolerance, "importance": importance,
                 "sensitivity": sensitivity, "groups": len(tr.groups), "layers": len(tr.inv.layers),
                 "candidates": sum(len(c) for c in tr.space.values())}
    if estimate:
        return _estimate(tr, profile, precision, latency_budget, speedup, base_info)

    board = board if board is not None else _open_board(reach, threads=threads,
                                                         accept_new_host_key=accept_new_host_key)
    io_precision = io_precision or profile.data.get("export", {}).get("io_precision") or "int8"
    whole = BatchSettings(**{**WHOLE.__dict__, "threads": threads})
    micro = BatchSettings(**{**MICRO.__dict__, "threads": threads})
    keep_dir = Path(tempfile.mkdtemp(prefix="edgeprune-measured-"))
    with tempfile.TemporaryDirectory(prefix="edgeprune-loop-") as tmp, board:
        work = Path(tmp)
        sf = StageFit.plan(tr.inv.layers, tr.space, enabled=probe_stages)
        full_art, first, unpruned = _measure_unpruned(board, tr, lm, sf, profile=profile, fmt=fmt,
                                                      precision=precision, io_precision=io_precision, work=work,
                                                      align=multiple, protect=protect, protect_stem=protect_stem,
                                                      settings=whole, target=target)
        base_ms = first.baseline.p50_ms if first.baseline else 0.0
        budget = latency_budget if latency_budget is not None else unpruned / speedup
        identity = board.identity(first)
        table, table_info = _fill_table(board, tr, identity, fmt=fmt, precision=precision, use_cache=use_cache,
                                        micro=micro, io_precision=io_precision, target=target,
                                        scheme="tensorrt" if profile.runtime == "tensorrt" else "cpu")
        pred, per_call = _calibrate(tr, table, sf, first, unpruned, base_ms, target)
        runs, quota = runs_for_quota(first.board or {}, unpruned, whole.runs)
        if quota:
            note(f"{target} runs under a CPU quota of {quota['cpus']:g} CPU (period {quota['period_ms']:g} ms): "
                 f"{runs} runs per timed round, so that a round spans several quota periods")
        b = _Board(board=board, target=target, profile=profile, fmt=fmt, precision=precision,
                   io_precision=io_precision, work=work, full_art=full_art, settings=with_runs(whole, runs),
                   relative_to=unpruned if speedup is not None else None, tolerance=tolerance, quota=quota)
        if unpruned <= budget:
            rounds, stopped = [_unpruned_round(b, first, unpruned, budget, quota)], None
        else:
            rounds, stopped = _search(b, tr, pred, budget=budget, unpruned=unpruned, base_ms=base_ms,
                                      max_rounds=max_rounds, importance=importance, data=data, protect=protect,
                                      protect_stem=protect_stem)
        status, chosen, verdict = _conclude(rounds, budget, target, min_keep, unpruned, tolerance, stopped)
        uncertain = _uncertain(chosen, budget, tolerance, quota)
        status += _caveats(rounds, first, uncertain)
        artifact = _keep_measured(chosen, keep_dir)
        info = {
            **base_info,
            "runtime": first.runtime, "runtime_version": first.runtime_version,
            "board_id": identity.get("board_id"), "host_key": identity.get("host_key"),
            "cpu_quota": (first.board or {}).get("cpu_quota"),  # the CFS quota the board reported (None: none)
            "threads": threads, "io_precision": io_precision, "baseline_ms": round(base_ms, 5),
            "per_call_share": round(per_call, 3),
            "budget_from": "latency_budget" if latency_budget is not None else f"speedup {speedup:g}",
            "chosen_round": chosen["round"] if chosen else None,
            "search_stopped": stopped,
            "uncertain": uncertain,  # None, or why the chosen round's figure is less sure than the tolerance
            "quota_runs": quota,  # runs per timed round chosen for that quota
            "board_visits": getattr(board, "visits", None),
            "table": {**table_info, "lookups": dict(table.stats), "drift": table.drift[-10:]},
            "calibration": pred.calibration.to_dict(),
            "stages": sf.info,
            "artifact": None if artifact is None else {
                "file": artifact.name, "sha256": sha256_file(artifact), "round": chosen["round"],
                "format": fmt, "precision": precision},
        }
    if artifact is None:
        shutil.rmtree(keep_dir, ignore_errors=True)
    plan = chosen["plan"] if chosen and "plan" in chosen else tr.make_plan(tr.full, "unpruned: within the budget")
    plan.note = f"latency budget {budget:.4g} ms on {target}: {status}"
    for row in rounds:
        row.pop("plan", None)
        row.pop("_artifact", None)
    return LoopResult(plan=plan, budget_ms=budget, met=verdict != "not_met", status=status, rounds=rounds,
                      unpruned_ms=unpruned, source="measured", table=table, info=info, verdict=verdict,
                      artifact=artifact)


def _round_row(r, alloc, j: Judgement, budget, b: _Board, *, knob, how) -> dict:
    """One round's figures. ``judged_ms`` is what meets the budget or not: the measured p50, or with
    ``--speedup`` the unpruned p50 that set the budget times the plan/unpruned ratio measured in the same
    rounds (a board whose load or clock moved between batches, 30-40 % on a shared VM, moves both alike)."""
    judged = j.judged_ms
    lo = (1.0 - b.tolerance) * budget
    verdict = "over" if judged > budget else ("met" if judged >= lo else "under")
    return {
        "round": r,
        "predicted_ms": round(alloc.predicted_ms, 4) if alloc else round(j.measured_ms, 4),
        "knob_ms": None if knob is None else round(knob, 4),
        "knob_from": how,
        "measured_ms": round(j.measured_ms, 4),
        "judged_ms": round(judged, 4),
        "judged_by": "measured p50" if b.relative_to is None else "speedup in the same batch",
        # --speedup: the speedup the judged figure stands on (the median of the rounds' ratios)
        "speedup_same_batch": round(b.relative_to / judged if b.relative_to else
                                    j.unpruned_ms_same_batch / j.measured_ms, 3) if judged and j.measured_ms else None,
        "budget_ms": round(budget, 4),
        "window_ms": [round(lo, 4), round(budget, 4)],
        "verdict": verdict,
        "measured_over_budget": round(judged / budget, 4),
        "unpruned_ms_same_batch": round(j.unpruned_ms_same_batch, 4),
        "importance_kept": round(alloc.importance_kept, 4) if alloc else 1.0,
        "feasible_predicted": alloc.feasible if alloc else True,
        "fastest_predicted_ms": round(alloc.fastest_ms, 4) if alloc else None,
        "throttled": getattr(j.last, "throttled", None),
        "other_busy_cores": j.busy_cores,
        "measurement": j.to_dict(),
        "keep": dict(alloc.keep) if alloc else {},
    }


VERDICT_WORDS = {"over": "over the budget", "met": "met (in the window)", "under": "under the window"}


def round_line(row: dict) -> str:
    """The round in one line: measured, judged and budget in ms, each named."""
    m, j, b = row["measured_ms"], row["judged_ms"], row["budget_ms"]
    meas = row.get("measurement", {})
    lo, hi = meas.get("interval_ms", [j, j])
    if row.get("judged_by") == "measured p50":
        judged = f"judged {j:.3f} ms (the measured p50 itself)"
    else:
        judged = (f"judged {j:.3f} ms ({row['speedup_same_batch']:.2f}x faster than the unpruned model in the "
                  "same rounds, at the first measurement's load)")
    extra = [f"{CONFIDENCE:.0%} interval {lo:.3f}-{hi:.3f} ms over {meas.get('rounds', 1)} round(s)"]
    if meas.get("batches", 1) > 1:
        extra.append(f"{meas['batches']} batches: the first was unsure or busy")
    busy = row.get("other_busy_cores")
    if busy is not None and busy > BUSY_CORES:
        extra.append(f"board busy {busy:.2f} cores")
    extra.append(f"{row.get('removed_fraction', 0.0):.0%} of channels removed")
    if row.get("knob_from") and row["round"]:
        extra.append(f"planned by {row['knob_from']}")
    lo_w, hi_w = row.get("window_ms", [0.9 * b, b])
    return (f"round {row['round']}: measured {m:.3f} ms (the plan's raw p50), {judged}, budget {b:.3f} ms "
            f"(window {lo_w:.3f}-{hi_w:.3f} ms): {VERDICT_WORDS[row['verdict']]}, {j / b:.2f} x budget "
            f"({'; '.join(extra)})")


def _how(r, verb="measured"):
    if r["judged_by"] == "measured p50":
        return f"{verb} {r['measured_ms']:.3f} ms"
    return (f"{verb} {r['speedup_same_batch']:.2f}x faster than the unpruned model in the same batch "
            f"({r['judged_ms']:.3f} ms at the load of the first measurement; {r['measured_ms']:.3f} ms raw)")


def _uncertain(chosen: dict | None, budget: float, tolerance: float, quota) -> str | None:
    """One line when the chosen round's interval, after every batch the judge allows, is still wider than the
    tolerance: the verdict stands on the median, but the plan may be that much over or under the budget."""
    m = (chosen or {}).get("measurement") or {}
    lo_hi = m.get("interval_ms")
    if not lo_hi or (m.get("interval_width") or 0.0) <= tolerance:
        return None
    where = (f"a CPU quota of {quota['cpus']:g} CPU" if quota else
             "other processes busy" if (m.get("other_busy_cores") or 0.0) > BUSY_CORES else "a noisy board")
    return (f"uncertain: the board's figure for this plan has a {m.get('confidence', 0.9):.0%} interval of "
            f"{lo_hi[0] / budget:.2f}-{lo_hi[1] / budget:.2f} x the budget after {m.get('batches')} batches "
            f"({where}), wider than the tolerance of {tolerance:.0%}: measure the kept file again before "
            "relying on the margin")


def _conclude(rounds: list[dict], budget: float, target: str, min_keep: float, unpruned: float,
              tolerance: float, stopped: str | None):
    """(status line, chosen round, verdict: met | met_under | not_met) from the measured rounds."""
    budget = round(budget, 4)  # as the rows print it: one budget, the same digits everywhere
    if rounds and rounds[0]["round"] == 0:
        return (f"met on {target}: the unpruned model measures {unpruned:.3f} ms <= {budget:.3f} ms", rounds[0],
                "met")
    n = len(rounds)
    rounds = [r for r in rounds if "superseded_by" not in r]  # a plan measured again stands on its latest
    in_window = [r for r in rounds if r["verdict"] == "met"]
    if in_window:
        best = max(in_window, key=lambda r: (r["importance_kept"], r["judged_ms"]))
        return (f"met on {target}: {_how(best)} <= budget {budget:.3f} ms (within {tolerance:.0%}) in round "
                f"{best['round']} of {n}", best, "met")
    under = [r for r in rounds if r["verdict"] == "under"]
    why = stopped or f"no round in [{1 - tolerance:.2f}, 1.00] x budget in {n} round(s); try --max-rounds {n + 2}"
    if under:
        best = max(under, key=lambda r: (r["importance_kept"], r["judged_ms"]))
        gap = 1 - best["judged_ms"] / budget
        return (f"met, but {gap:.0%} under the budget (speed you did not ask for, at the cost of accuracy): "
                f"{_how(best)} against a budget of {budget:.3f} ms in round {best['round']} of {n} on {target}; "
                f"{why}", best, "met_under")
    best = min(rounds, key=lambda r: r["judged_ms"])
    if not best["feasible_predicted"]:
        return (f"the budget of {budget:.3f} ms cannot be met on {target}: the fastest plan allowed (every "
                f"group at its minimum, {min_keep:.0%} of its channels) {_how(best, 'measures')} "
                f"(unpruned {unpruned:.3f} ms)", best, "not_met")
    return (f"the budget of {budget:.3f} ms was not met on {target} in {n} round(s): best "
            f"{_how(best)} (unpruned {unpruned:.3f} ms); {why}", best, "not_met")
