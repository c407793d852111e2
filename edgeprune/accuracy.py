"""The accuracy gate shared by ``finetune`` and ``export``: how far below the original a model may fall.

Accuracy is top-1 on labelled held-out data; on unlabelled data it is
top-1 agreement with the original model (the original then scores 1.0).
The drop is counted in percentage points: original 0.931, candidate 0.925
-> 0.6 points. ``--max-accuracy-drop P`` fails the run (exit 2) when the
drop is larger than ``P``; the report is written first, so the figures are
there to read.

Example::

    check_drop(original=0.931, candidate=0.912, max_drop=1.0, what="model.ept", where="fashion-mnist test")
    # AccuracyDropError: model.ept: top-1 0.912 vs the original's 0.931 on fashion-mnist test: 1.9 points > 1
"""

from __future__ import annotations

from edgeprune.errors import AccuracyDropError

__all__ = ["AccuracyDropError", "check_drop", "drop_points", "label_order_warning"]


def drop_points(original: float, candidate: float) -> float:
    """How many percentage points ``candidate`` is below ``original`` (negative: above)."""
    return round((original - candidate) * 100.0, 2)


def check_drop(*, original: float | None, candidate: float | None, max_drop: float | None, what: str,
               where: str, metric: str = "top-1", report=None) -> None:
    """Raise :class:`AccuracyDropError` when ``candidate`` is more than ``max_drop`` points below ``original``."""
    if max_drop is None or original is None or candidate is None:
        return
    drop = drop_points(original, candidate)
    if drop > max_drop:
        raise AccuracyDropError(
            f"{what}: {metric} {candidate:.4f} vs the original's {original:.4f} on {where}: "
            f"{drop:.2f} points lost > --max-accuracy-drop {max_drop:g}", report)


def label_order_warning(original: float | None, num_classes: int | None, source: str) -> str | None:
    """A warning when the original model scores near chance on labelled data: most often the labels
    do not follow the model's class order (class folders are sorted by name)."""
    if original is None or not num_classes or num_classes < 2 or original >= 2.0 / num_classes:
        return None
    return (f"the original model scores {original:.3f} top-1 on {source} (chance: {1 / num_classes:.3f}): "
            "do the labels follow the model's class order? Class folders are read in sorted name order "
            "(name them e.g. 0-cat, 1-dog); the accuracy figures mean nothing until they do")
