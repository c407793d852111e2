"""How many channels each group keeps: the most importance kept with the predicted latency under budget.

**Importance, comparable across groups.** Every channel of a group gets a
score summed over all the group's layers (:mod:`edgeprune.prune.importance`):

- with data (``importance="taylor"``): first-order Taylor ``|w * dL/dw|``,
  an estimate of the loss change if the channel goes. It is already in one
  unit for every group; scores are divided by their grand total only to
  make them readable;
- without data (``l1``/``l2``/``bn``): magnitudes are not comparable across
  layers (a layer's weight scale is arbitrary behind BatchNorm), so each
  group's scores are divided by the group's own total: every group is worth
  1 in all, and removing a channel costs its share of its group. Groups
  whose magnitude is spread evenly lose more per channel than groups with a
  few dominant channels.

**The search** (HALP's greedy by importance lost per millisecond saved, with
lookahead). Start from the unpruned plan. While the prediction is above the
budget, consider for every group moving down 1..``lookahead`` candidate
steps (the candidates are the aligned counts the table measured, see
:func:`edgeprune.latency.layers.candidate_counts`), and take the move that
loses the least importance per millisecond it saves. A step that saves
nothing (a flat stair) is never taken alone, but a lookahead move across it
to the next cliff is, so flat steps are jumped. When no move within the
lookahead saves time, the lookahead widens to all remaining steps. Once
under budget, a fill pass adds back steps (most importance per millisecond
first) while the prediction stays under: coarse steps do not waste budget.

**Limits.** No group goes below its smallest candidate (``min_keep`` of its
channels, 25 % by default: below that, accuracy without fine-tuning
collapses in our MobileNetV2 runs, and fine-tuning has too little left to
recover; a per-run choice, ``--min-keep``), and protected groups are not in
the search at all. When even every group at its minimum is predicted over
budget, the allocation says so (``feasible=False``) with that fastest plan.

Example::

    scores = channel_importance(model, x, groups, criterion="l1")
    alloc = allocate(space, scores, predictor, budget_ms=4.0)
    alloc.keep, alloc.predicted_ms, alloc.feasible
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from edgeprune._threads import one_thread
from edgeprune.errors import PruneError
from edgeprune.latency.predict import Predictor

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

DEFAULT_LOOKAHEAD = 3


@dataclass
class Allocation:
    keep: dict[str, int]
    predicted_ms: float
    table_ms: float
    importance_kept: float  # share of the total importance the plan keeps (0..1)
    feasible: bool
    fastest_ms: float  # prediction with every group at its smallest candidate
    moves: int

    def to_dict(self) -> dict:
        return {
            "predicted_ms": round(self.predicted_ms, 4),
            "table_ms": round(self.table_ms, 4),
            "importance_kept": round(self.importance_kept, 4),
            "feasible": self.feasible,
            "fastest_predicted_ms": round(self.fastest_ms, 4),
            "moves": self.moves,
        }


def channel_importance(
    model, x, groups: Iterable, *, criterion: str = "l1", data: Iterable | None = None,
    protect: Iterable[str] = (), protect_stem: bool = True,
) -> dict[str, np.ndarray]:
    """Per prunable group, its channels' scores sorted high to low, normalised as described above.

    Taylor scores need ``data`` (batches of inputs, or ``(inputs, targets)``);
    the gradients are computed on a copy, so ``model`` is left as it was.
    """
    from edgeprune.prune.groups import analyse
    from edgeprune.prune.importance import accumulate_taylor_grads, group_scores, make_importance

    wanted = {g.id for g in groups if getattr(g, "prunable", True)}
    work = copy.deepcopy(model)
    with one_thread():
        if criterion == "taylor":
            if data is None:
                raise PruneError("importance 'taylor' needs data (batches of inputs, or (inputs, targets))")
            accumulate_taylor_grads(work, data)
        analysis = analyse(work, x, protect=tuple(protect), protect_stem=protect_stem)
        imp = make_importance(criterion)
        dg = analysis.dg
        out = {}
        for g in analysis.groups:
            if g.id not in wanted:
                continue
            root = analysis.roots[g.id]
            fn = dg.get_pruner_of_module(root).prune_out_channels
            full = dg.get_pruning_group(root, fn, list(range(g.channels)))
            s = group_scores(criterion, full, g.channels, imp).abs().numpy().astype(np.float64)
            out[g.id] = np.sort(s)[::-1]
    if criterion == "taylor":
        total = sum(float(s.sum()) for s in out.values()) or 1.0
        return {k: v / total for k, v in out.items()}
    return {k: v / (float(v.sum()) or 1.0) for k, v in out.items()}


def allocate(
    space: Mapping[str, list[int]],
    scores: Mapping[str, np.ndarray],
    predictor: Predictor,
    budget_ms: float,
    *,
    lookahead: int = DEFAULT_LOOKAHEAD,
) -> Allocation:
    """Kept counts per group (one of ``space[g]``) with ``predictor.predict(keep) <= budget_ms``."""
    cum = {g: np.concatenate([[0.0], np.cumsum(scores[g])]) for g in space}
    total = sum(float(c[-1]) for c in cum.values()) or 1.0
    idx = {g: len(c) - 1 for g, c in space.items()}  # start unpruned
    keep = {g: space[g][i] for g, i in idx.items()}
    cal = predictor.calibration
    table = predictor.table_ms(keep)
    fastest = predictor.predict({g: c[0] for g, c in space.items()})

    def imp(g: str, i: int) -> float:
        return float(cum[g][min(space[g][i], len(cum[g]) - 1)])

    def table_with(g: str, i: int) -> float:
        old = predictor.group_ms(g, keep)
        trial = {**keep, g: space[g][i]}
        return table - old + predictor.group_ms(g, trial)

    moves = 0
    while cal(table) > budget_ms:
        best = None
        for reach in (lookahead, max(len(c) for c in space.values())):
            for g, i in idx.items():
                for j in range(max(0, i - reach), i):
                    t = table_with(g, j)
                    saved = cal(table) - cal(t)
                    if saved <= 1e-9:
                        continue
                    ratio = (imp(g, i) - imp(g, j)) / saved
                    if best is None or ratio < best[0]:
                        best = (ratio, g, j, t)
            if best is not None:
                break
        if best is None:
            break  # nothing left to remove saves time
        _, g, j, t = best
        idx[g], keep[g], table = j, space[g][j], t
        moves += 1
    feasible = cal(table) <= budget_ms
    while feasible:  # fill: add back what fits, most importance per ms first
        best = None
        for g, i in idx.items():
            for j in range(i + 1, min(len(space[g]), i + 1 + lookahead)):
                t = table_with(g, j)
                if cal(t) > budget_ms:
                    continue
                gain = imp(g, j) - imp(g, i)
                cost = cal(t) - cal(table)
                score = gain / cost if cost > 1e-9 else float("inf")
                if gain > 0 and (best is None or score > best[0]):
                    best = (score, g, j, t)
        if best is None:
            break
        _, g, j, t = best
        idx[g], keep[g], table = j, space[g][j], t
        moves += 1
    kept = sum(imp(g, i) for g, i in idx.items()) / total
    table = predictor.table_ms(keep)  # afresh: no drift from the running sums
    return Allocation(
        keep=dict(keep), predicted_ms=cal(table), table_ms=table, importance_kept=kept,
        feasible=feasible, fastest_ms=fastest, moves=moves,
    )
