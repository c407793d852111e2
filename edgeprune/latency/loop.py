"""The closed loop: plan -> prune -> export -> measure on the board -> correct -> plan again.

:func:`plan_for_budget` is what ``prune --latency-budget MS`` / ``--speedup S``
runs (through :mod:`edgeprune.prune.pipeline`):

1. trace the model: groups, layers (:mod:`.layers`), candidate counts per
   group, channel importance (:mod:`.allocate`);
2. export the unpruned model in the board's format and precision (the
   profile's, or ``fmt``/``precision``) and measure it on the board: its p50,
   the runtime's per-call cost (the baseline), and the board's identity;
   ``--speedup S`` sets the budget to that p50 / S. In the same batch go the
   stage probes (:class:`.predict.StageFit`: per resolution stage, the
   model with that stage's groups at their minimum);
3. fill the latency table (:mod:`.measure`): the cached entries for this
   board identity are reused, only missing shapes are built and measured;
4. calibrate the prediction (:mod:`.predict`): per-stage scales fitted on the
   unpruned model and the probes (what a layer costs in the graph against
   alone), then the whole-model calibration on the unpruned measurement;
5. each round: allocate for ``AIM`` x budget (a margin for the noise of the
   board's measurement), prune a copy, export it, and measure it on the board
   *interleaved with the unpruned model* in one batch. The round is reported
   (predicted, measured, budget). Met when ``0.9 x budget <= measured <=
   budget``; otherwise the measured point joins the calibration (scaled by
   how the unpruned model measured in the same batch, so that a busier board
   in one round does not bend the model) and the next round plans again, up
   to ``max_rounds``. With an absolute ``--latency-budget`` the next round
   plans for the board's load as the last batch measured it (the budget
   divided by how much slower the unpruned model ran there than at first):
   a board that stays slower is planned for as it is;
6. the result is the round that met the budget keeping the most importance;
   if none met it, the closest, with ``met=False`` and a one-line ``status``
   saying so (the caller exits non-zero). If even every group at its minimum
   measures over budget, the status says so with the best latency reachable.

A budget is reported met only when the board measured it. With
``--latency-budget MS`` the round's own p50 is judged against it; with
``--speedup S`` the budget is relative, so the round is judged by the
speedup measured against the unpruned model *in the same batch* (its p50
scaled to the load of the first measurement): on a shared board whose load
or clock drifts 30-40 % between batches, that ratio holds where raw p50s do
not. Both figures are in every round's row. ``estimate=True``
plans from the profile's roofline (:mod:`.estimate`) without a board:
``met`` is then None and everything is labelled an estimate.

Example::

    result = plan_for_budget(lm, target="local", latency_budget=4.0)
    result.plan, result.met, [r["measured_ms"] for r in result.rounds]
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.bench.batch import BatchSettings
from edgeprune.errors import AgentError, PruneError
from edgeprune.latency.layers import DEFAULT_MAX_STEPS, DEFAULT_MIN_KEEP, candidate_counts
from edgeprune.progress import Counter, note, step

AIM = 0.95  # plan for 95 % of the budget: the board's p50 moves a few % between batches
BAND = 0.90  # "met" = measured within [0.9, 1.0] x budget; further under, plan again
PER_CALL_WARN = 0.5  # warn when at least half the unpruned p50 is per-call cost (the empty model's p50)
WHOLE = BatchSettings(rounds=12, runs=5, warmup=5, max_s=90.0, timeout_s=600.0)


@dataclass
class LoopResult:
    plan: Any  # ChannelPlan
    budget_ms: float
    met: bool | None  # None: not measured (estimate)
    status: str  # one line
    rounds: list[dict] = field(default_factory=list)
    unpruned_ms: float | None = None
    source: str = "measured"
    table: Any = None  # LatencyTable (None for an estimate)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_ms": round(self.budget_ms, 4),
            "met": self.met,
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
    from edgeprune.checks.thresholds import Thresholds
    from edgeprune.export.pipeline import ExportOptions, export
    from edgeprune.models import LoadedModel

    if isinstance(profile, str):
        from edgeprune.profiles import load_profile

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


def _open_board(reach, *, threads: int, accept_new_host_key: bool):
    from edgeprune.bench.batch import BatchSession

    return BatchSession(reach, settings=BatchSettings(threads=threads), accept_new_host_key=accept_new_host_key)


def plan_for_budget(
    lm,
    *,
    target: str,
    host: str | None = None,
    latency_budget: float | None = None,
    speedup: float | None = None,
    fmt: str | None = None,
    precision: str | None = None,
    max_rounds: int = 3,
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
    from edgeprune.export.pipeline import resolve
    from edgeprune.latency.allocate import allocate, channel_importance
    from edgeprune.latency.estimate import RooflineEstimate
    from edgeprune.latency.layers import layer_inventory
    from edgeprune.latency.predict import Calibration, Predictor, StageFit
    from edgeprune.prune import ChannelPlan, example_input, prune_
    from edgeprune.reach import resolve_target

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
    if reach is None and profile is None:
        reach = None if estimate else resolve_target(target, host=host)
    if profile is None:
        if reach is not None:
            profile = reach.profile
        else:
            from edgeprune.profiles import load_profile

            profile = load_profile(target)
    fmt, precision = resolve(profile, fmt, precision)
    multiple = profile.alignment(precision) if align else 1
    net = lm.module
    shape = tuple(lm.input_shape)
    x = example_input(shape)

    step("tracing layers and channel groups for the latency model")
    inv = layer_inventory(net, x, protect=protect, protect_stem=protect_stem)
    groups = inv.prunable
    if not groups:
        raise PruneError(f"{lm.name}: no prunable channel groups, so no latency budget can be planned")
    space = {
        g.id: candidate_counts(g.channels, multiple=math.lcm(multiple, g.slices), min_keep=min_keep,
                               max_steps=max_steps)
        for g in groups
    }
    full = {g: c[-1] for g, c in space.items()}
    sensitivity = sensitivity or importance
    step(f"scoring channels ({sensitivity})")
    scores = channel_importance(net, x, inv.groups, criterion=sensitivity, data=data, protect=protect,
                                protect_stem=protect_stem)
    base_info = {"format": fmt, "precision": precision, "align": multiple, "min_keep": min_keep,
                 "max_rounds": max_rounds, "importance": importance, "sensitivity": sensitivity,
                 "groups": len(groups), "layers": len(inv.layers),
                 "candidates": sum(len(c) for c in space.values())}

    def make_plan(keep, note_text):
        plan = ChannelPlan.from_keep(groups, keep, align=multiple, input_shape=shape, base=lm.base)
        plan.note = note_text
        return plan

    if estimate:
        est = RooflineEstimate(profile, precision)
        pred = Predictor(inv.layers, est)
        unpruned = pred.predict(full)
        budget = latency_budget if latency_budget is not None else unpruned / speedup
        alloc = allocate(space, scores, pred, budget)
        status = (
            f"planned from an {est.describe()}: predicted {alloc.predicted_ms:.3g} ms for a budget of "
            f"{budget:.3g} ms; NOT measured on a board, so not known to meet it"
        )
        if not alloc.feasible:
            status = (f"even every group at its minimum is estimated at {alloc.fastest_ms:.3g} ms, over "
                      f"the budget of {budget:.3g} ms ({est.describe()}, not measured)")
        return LoopResult(
            plan=make_plan(alloc.keep, f"latency budget {budget:.4g} ms ({est.describe()})"),
            budget_ms=budget, met=None if alloc.feasible else False, status=status, source="estimate",
            unpruned_ms=None,
            info={**base_info, "estimate": {"describe": est.describe(), "notes": est.notes,
                                            "unpruned_predicted_ms": round(unpruned, 4),
                                            **alloc.to_dict()}},
        )

    from edgeprune.latency.measure import MICRO, measure_shapes, refine_shapes, shapes_to_measure
    from edgeprune.latency.table import LatencyTable, cache_path, load_cached

    board = board if board is not None else _open_board(reach, threads=threads,
                                                         accept_new_host_key=accept_new_host_key)
    exp = profile.data.get("export", {})
    io_precision = exp.get("io_precision") or "int8"
    scheme = "tensorrt" if profile.runtime == "tensorrt" else "cpu"
    whole = BatchSettings(**{**WHOLE.__dict__, "threads": threads})
    micro = BatchSettings(**{**MICRO.__dict__, "threads": threads})
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-loop-") as tmp, board:
        work = Path(tmp)
        step(f"exporting the unpruned model ({fmt} {precision})")
        full_art = _export(net, lm, profile, fmt, precision, work, "unpruned")
        sf = StageFit.plan(inv.layers, space, enabled=probe_stages)
        probe_arts = export_stage_probes(sf, lm, full, groups, profile_name=profile, fmt=fmt,
                                         precision=precision, folder=work, align=multiple, protect=protect,
                                         protect_stem=protect_stem)
        step(f"{target}: measuring the unpruned model" + (f" and {len(probe_arts)} stage probes" if probe_arts else ""))
        first = board.measure({"unpruned": full_art, **probe_arts}, settings=whole)
        t_un = first.timings["unpruned"]
        if not t_un.ok:
            raise AgentError(f"{target}: the board cannot run the unpruned model: {t_un.error}")
        unpruned = t_un.p50_ms
        base_ms = first.baseline.p50_ms if first.baseline else 0.0
        budget = latency_budget if latency_budget is not None else unpruned / speedup
        identity = board.identity(first)

        table = load_cached(identity, fmt=fmt, precision=precision) if use_cache else \
            LatencyTable(dict(identity), fmt=fmt, precision=precision)
        reused = len(table.entries)
        needed = shapes_to_measure(inv.layers, space)
        missing = table.missing(needed)
        visits0 = getattr(board, "visits", 0)
        measured_now = 0
        built_before = table.build_s
        if missing:
            counter = Counter(f"{target}: latency table, models built and measured", len(missing))
            measured_now += measure_shapes(board, table, missing, settings=micro, io_precision=io_precision,
                                           scheme=scheme, counter=counter)
            extra = refine_shapes(table, inv.layers, space)
            if extra:
                counter = Counter(f"{target}: latency table, refining {len(extra)} cliffs", len(extra))
                measured_now += measure_shapes(board, table, extra, settings=micro,
                                               io_precision=io_precision, scheme=scheme, counter=counter)
            table.save(cache_path(table))
        note(f"latency table: {len(needed)} shapes for this model, {len(needed) - len(missing)} reused from "
             f"the cache, {measured_now} measured now ({getattr(board, 'visits', 0) - visits0} board visits)")

        pred = Predictor(inv.layers, table, calibration=Calibration(base_ms=base_ms))
        if sf.apply(pred, full, sf.measured(first.timings), unpruned, base_ms):
            note(f"in-graph cost against the table, per stage (1 = the model's mean): {sf.describe()}")
        pred.calibration.add(pred.table_ms(full), unpruned)
        per_call = base_ms / unpruned if unpruned > 0 else 0.0
        if per_call >= PER_CALL_WARN:
            note(f"warning: {per_call:.0%} of the unpruned model's {unpruned:.3f} ms on {target} is per-call "
                 f"cost (an empty model measures {base_ms:.3f} ms), which removing channels cannot touch: "
                 f"a budget under {base_ms:.3f} ms cannot be met and the savings left are near the "
                 "measurement noise; a bigger batch or input, or a board where the model costs more, "
                 "is where pruning pays")
        measured_plans: dict[tuple, dict] = {}
        if unpruned <= budget:
            rounds.append(_round_row(0, full, pred.predict(full), unpruned, unpruned, budget, None, first))
            note(f"round 0: the unpruned model measures {unpruned:.3f} ms, within the budget of "
                 f"{budget:.3f} ms: nothing to remove")
        load = 1.0  # the board's speed now against its first measurement (absolute budgets only)
        for r in range(1, max_rounds + 1):
            if unpruned <= budget:
                break
            aim = budget / load  # the budget at the load level the calibration is kept at
            alloc = allocate(space, scores, pred, AIM * aim)
            key = tuple(sorted(alloc.keep.items()))
            if key in measured_plans and measured_plans[key]["judged_ms"] < BAND * budget:
                alloc = allocate(space, scores, pred, aim)  # under the band: use the margin too
                key = tuple(sorted(alloc.keep.items()))
            if key in measured_plans:  # the correction led back to a plan already measured
                note(f"round {r}: the corrected prediction chose the plan of round "
                     f"{measured_plans[key]['round']} again; stopping")
                break
            plan = make_plan(alloc.keep, f"latency budget {budget:.4g} ms, round {r}")
            step(f"round {r}: pruning and exporting the planned model")
            pruned = copy.deepcopy(net)
            prune_(pruned, plan, importance=importance, data=data, protect=protect,
                   protect_stem=protect_stem, x=x, verify=False)
            art = _export(pruned, lm, profile, fmt, precision, work, f"round{r}")
            step(f"round {r}: measuring on {target}, interleaved with the unpruned model")
            res = board.measure({"unpruned": full_art, "plan": art}, settings=whole)
            t, tu = res.timings["plan"], res.timings["unpruned"]
            if not (t.ok and tu.ok):
                raise AgentError(f"{target}: round {r}: the board could not run the exported model: "
                                  f"{t.error or tu.error}")
            row = _round_row(r, alloc.keep, alloc.predicted_ms, t.p50_ms, tu.p50_ms, budget, alloc, res,
                             relative_to=unpruned if speedup is not None else None)
            row["removed_fraction"] = round(plan.removed_fraction(), 4)
            row["plan"] = plan
            rounds.append(row)
            measured_plans[key] = row
            note(_round_line(row))
            # join the calibration at the load level of the first measurement
            pred.calibration.add(alloc.table_ms, t.p50_ms * unpruned / tu.p50_ms)
            if latency_budget is not None:
                # an absolute budget is judged on the raw p50: a board that is now slower (busier, hotter) than
                # at its first measurement needs a plan for the board as it is, not as it was
                load = tu.p50_ms / unpruned
            if BAND * budget <= row["judged_ms"] <= budget:
                break
            if row["judged_ms"] > budget and not alloc.feasible:
                break  # every group at its minimum and still over: nothing left to try
        status, chosen, met = _conclude(rounds, budget, target, min_keep, unpruned)
        busy = max([r.get("other_busy_cores") or 0.0 for r in rounds] + [first.other_busy_cores or 0.0])
        if busy > 0.5:
            status += (f" [the board was busy: other processes used up to {busy:.1f} cores while it measured; "
                       "these timings are contended]")
        info = {
            **base_info,
            "runtime": first.runtime, "runtime_version": first.runtime_version,
            "board_id": identity.get("board_id"), "host_key": identity.get("host_key"),
            "cpu_quota": (first.board or {}).get("cpu_quota"),  # the CFS quota the board reported (None: none)
            "threads": threads, "baseline_ms": round(base_ms, 5), "per_call_share": round(per_call, 3),
            "budget_from": "latency_budget" if latency_budget is not None else f"speedup {speedup:g}",
            "chosen_round": chosen["round"] if chosen else None,
            "board_visits": getattr(board, "visits", None),
            "table": {"shapes_for_this_model": len(needed), "reused_from_cache": len(needed) - len(missing),
                      "entries_in_cache_before": reused, "measured_now": measured_now,
                      "entries": len(table.entries), "build_s": round(table.build_s - built_before, 2),
                      "build_s_all_runs": round(table.build_s, 2),
                      "cache": str(cache_path(table)), "lookups": dict(table.stats),
                      "drift": table.drift[-10:]},
            "calibration": pred.calibration.to_dict(),
            "stages": sf.info,
        }
    plan = chosen["plan"] if chosen and "plan" in chosen else make_plan(full, "unpruned: within the budget")
    plan.note = f"latency budget {budget:.4g} ms on {target}: {status}"
    for row in rounds:
        row.pop("plan", None)
    return LoopResult(plan=plan, budget_ms=budget, met=met, status=status, rounds=rounds,
                      unpruned_ms=unpruned, source="measured", table=table, info=info)


def _round_row(r, keep, predicted, measured, unpruned_same_batch, budget, alloc, res, *,
               relative_to: float | None = None) -> dict:
    """One round's figures. ``judged_ms`` is what meets the budget or not: the measured p50, or with
    ``--speedup`` (``relative_to`` = the unpruned p50 that set the budget) the measured p50 scaled by how
    the unpruned model measured beside it in the same batch, i.e. the speedup measured at one moment:
    a board whose load or clock moved between batches (30-40 % on a shared VM) moves both alike."""
    judged = measured if relative_to is None else measured * relative_to / unpruned_same_batch
    return {
        "round": r,
        "predicted_ms": round(predicted, 4),
        "measured_ms": round(measured, 4),
        "judged_ms": round(judged, 4),
        "judged_by": "measured p50" if relative_to is None else "speedup in the same batch",
        "speedup_same_batch": round(unpruned_same_batch / measured, 3) if measured else None,
        "budget_ms": round(budget, 4),
        "measured_over_budget": round(judged / budget, 4),
        "unpruned_ms_same_batch": round(unpruned_same_batch, 4),
        "importance_kept": round(alloc.importance_kept, 4) if alloc else 1.0,
        "feasible_predicted": alloc.feasible if alloc else True,
        "throttled": res.throttled,
        "other_busy_cores": res.other_busy_cores,
        "keep": dict(keep),
    }


def _round_line(row: dict) -> str:
    m, j, b = row["measured_ms"], row.get("judged_ms", row["measured_ms"]), row["budget_ms"]
    verdict = "over" if j > b else ("met" if j >= BAND * b else "under by more than 10 %")
    busy = row.get("other_busy_cores")
    noisy = f", board busy {busy:.2f} cores" if busy is not None and busy > 0.5 else ""
    rel = (f" ({row['speedup_same_batch']:.2f}x the unpruned model beside it: {j:.3f} ms at the first load)"
           if j != m else "")
    return (f"round {row['round']}: predicted {row['predicted_ms']:.3f} ms, measured {m:.3f} ms{rel}, "
            f"budget {b:.3f} ms: {verdict} ({j / b:.2f} x budget, {row['removed_fraction']:.0%} of "
            f"channels removed{noisy})")


def _conclude(rounds: list[dict], budget: float, target: str, min_keep: float, unpruned: float):
    """(status line, chosen round, met) from the measured rounds."""
    if rounds and rounds[0]["round"] == 0:
        return (f"met on {target}: the unpruned model measures {unpruned:.3f} ms <= {budget:.3f} ms", rounds[0],
                True)
    def judged(r):
        return r.get("judged_ms", r["measured_ms"])

    def how(r, verb="measured"):
        if judged(r) == r["measured_ms"]:
            return f"{verb} {r['measured_ms']:.3f} ms"
        return (f"{verb} {r['speedup_same_batch']:.2f}x faster than the unpruned model in the same batch "
                f"({judged(r):.3f} ms at the load of the first measurement; {r['measured_ms']:.3f} ms raw)")

    under = [r for r in rounds if judged(r) <= budget]
    if under:
        best = max(under, key=lambda r: (r["importance_kept"], judged(r)))
        m = judged(best)
        band = "" if m >= BAND * budget else f", {1 - m / budget:.0%} under (more than 10 %: coarse steps or noise)"
        return (f"met on {target}: {how(best)} <= budget {budget:.3f} ms in round {best['round']} "
                f"of {len(rounds)}{band}", best, True)
    best = min(rounds, key=judged)
    if not best["feasible_predicted"]:
        return (f"the budget of {budget:.3f} ms cannot be met on {target}: the fastest plan allowed (every "
                f"group at its minimum, {min_keep:.0%} of its channels) {how(best, 'measures')} "
                f"(unpruned {unpruned:.3f} ms)", best, False)
    return (f"the budget of {budget:.3f} ms was not met on {target} in {len(rounds)} round(s): best "
            f"{how(best)} (unpruned {unpruned:.3f} ms); try --max-rounds {len(rounds) + 2}",
            best, False)
