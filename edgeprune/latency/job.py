"""Prune to a latency budget: the search (:mod:`.loop`) chooses the plan, the prune stage cuts to it.

This is what ``prune --latency-budget MS`` / ``--speedup S`` and deploy's
prune stage run. The floors read: the budget search asks ``prune`` (cut a
copy to a candidate plan), ``export`` (the artifact the board runs) and
``bench`` (measure it on the board) for what it needs; the prune stage knows
nothing of budgets.

Example::

    lm = load_model("mobilenetv2")
    reach = resolve_target("local")
    result = prune_for_budget(lm, reach=reach, budget=BudgetOptions(speedup=1.5), options=PruneOptions(),
                              output="out/")
    result.latency["status"], result.files["model"]
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import BudgetError, PruneError
from edgeprune.latency.layers import DEFAULT_MIN_KEEP
from edgeprune.latency.loop import DEFAULT_MAX_ROUNDS, DEFAULT_TOLERANCE, plan_for_budget
from edgeprune.models import LoadedModel
from edgeprune.prune.pipeline import PruneOptions, PruneResult, importance_batches, prune_to_plan
from edgeprune.validate import check_all


@dataclass(frozen=True)
class BudgetOptions:
    """A latency budget and how the closed loop reaches it (the CLI's ``budget_options``).

    Exactly one of ``latency_budget`` (ms, the p50 on the board) and
    ``speedup`` (budget = the unpruned model's p50 there / S). ``fmt`` /
    ``precision``: the artifact the board runs (default: the profile's);
    ``io_precision``: its TFLite input/output type (default: the profile's).
    ``estimate``: plan from the profile's roofline, no board.
    """

    latency_budget: float | None = None
    speedup: float | None = None
    fmt: str | None = None
    precision: str | None = None
    io_precision: str | None = None
    max_rounds: int = DEFAULT_MAX_ROUNDS
    tolerance: float = DEFAULT_TOLERANCE
    min_keep: float | None = None
    threads: int = 0
    estimate: bool = False
    use_cache: bool = True

    def __post_init__(self) -> None:
        if (self.latency_budget is None) == (self.speedup is None):
            raise PruneError("give exactly one of --latency-budget MS or --speedup S")
        check_all(latency_budget=self.latency_budget, speedup=self.speedup, max_rounds=self.max_rounds,
                  tolerance=self.tolerance, min_keep=self.min_keep, threads=self.threads)

    @property
    def asked(self) -> str:
        return f"--latency-budget {self.latency_budget:g}" if self.latency_budget is not None else \
            f"--speedup {self.speedup:g}"


def plan_to_budget(lm: LoadedModel, *, reach, profile, budget: BudgetOptions, options: PruneOptions,
                   batches=None, accept_new_host_key: bool = False, board=None):
    """The search alone: a :class:`~.loop.LoopResult` (plan, rounds, table) for ``lm`` on the board."""
    return plan_for_budget(
        lm, target=reach.name if reach is not None else profile.name, reach=reach, profile=profile,
        latency_budget=budget.latency_budget, speedup=budget.speedup, fmt=budget.fmt,
        precision=budget.precision, io_precision=budget.io_precision, max_rounds=budget.max_rounds,
        tolerance=budget.tolerance, importance=options.importance, data=batches,
        sensitivity="taylor" if batches is not None else None, protect=options.protect,
        protect_stem=options.stem_for("budget"), align=options.align,
        min_keep=DEFAULT_MIN_KEEP if budget.min_keep is None else budget.min_keep, threads=budget.threads,
        estimate=budget.estimate, use_cache=budget.use_cache, accept_new_host_key=accept_new_host_key,
        board=board,
    )


def prune_for_budget(
    lm: LoadedModel,
    *,
    reach,
    profile=None,
    budget: BudgetOptions,
    options: PruneOptions,
    output: str | os.PathLike[str],
    split=None,
    batches=None,
    accept_new_host_key: bool = False,
    board=None,
) -> PruneResult:
    """Plan ``lm`` for ``budget`` on the board ``reach`` (a resolved target), then prune it to that plan.

    Writes the prune stage's files plus ``latency_table.json``; raises
    :class:`BudgetError` (with the summary) after writing everything when the
    board measured the budget as not met. ``reach=None`` with
    ``budget.estimate``: plan from ``profile`` alone.
    """
    profile = profile or reach.profile
    batches = importance_batches(split, importance=options.importance, budget=split is not None, given=batches,
                                 name=lm.name, task=lm.task, module=lm.module)
    loop = plan_to_budget(lm, reach=reach, profile=profile, budget=budget, options=options, batches=batches,
                          accept_new_host_key=accept_new_host_key, board=board)
    plan = loop.plan
    plan.latency = loop.to_dict()
    attach = {}
    if loop.table is not None:
        attach["latency_table.json"] = loop.table.save
    measured = loop.artifact  # the file the board timed for the chosen round (sha256 in plan.latency)
    if measured is not None and Path(measured).is_file():
        attach[Path(measured).name] = lambda dest, src=Path(measured): shutil.copyfile(src, dest)
    try:
        result = prune_to_plan(lm, plan, profile=profile, target=reach.name if reach is not None else profile.name,
                               output=output, options=options, kind="budget", split=split, batches=batches,
                               attach=attach)
    finally:
        if measured is not None:
            shutil.rmtree(Path(measured).parent, ignore_errors=True)
    if loop.met is False:  # raised after the result is in place
        raise BudgetError(f"{loop.status} (written anyway: {result.files['summary']})", result=result.to_dict())
    return result
