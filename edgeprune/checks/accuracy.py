"""Accuracy of every artifact against the original model, the ``--max-accuracy-drop`` gate, and the verdict.

Agreement (:mod:`edgeprune.checks.agreement`) says whether a file computes what the model it
was made from computes. Accuracy says whether the model still does its job:
top-1 on labelled held-out images, else top-1 agreement with the *original*
(for a pruned model: its unpruned base with its trained weights). Both are
measured on the same held-out inputs, for the original, the model being
exported (in PyTorch) and every artifact.

The verdict, the first thing report.md says:

- ``failed``: a check or the gate failed;
- ``lost-accuracy``: every file matches the model it came from, but that
  model is more than :data:`LOST_POINTS` points below its original (or, on
  unlabelled data, agrees with it below the pruning warning thresholds):
  never "passed";
- ``passed``: otherwise.

Example::

    check = AccuracyCheck(labels=y, original=base_logits, model=logits, heldout="digits test split")
    check.add("onnx fp32", onnx_logits)
    check.figures      # {'metric': 'top1', 'original': 0.989, 'model': 0.75, 'artifacts': {'onnx fp32': 0.75}, ...}

The drop and the gate (used by ``finetune``, ``export`` and deploy's
``verify``): accuracy is top-1 on labelled held-out data; on unlabelled data
it is top-1 agreement with the original model (the original then scores
1.0). The drop is counted in percentage points: original 0.931, candidate
0.925 -> 0.6 points. ``--max-accuracy-drop P`` fails the run (exit 2) when the
drop is larger than ``P``; the report is written first, so the figures are
there to read::

    check_drop(original=0.931, candidate=0.912, max_drop=1.0, what="model.ept", where="fashion-mnist test")
    # AccuracyDropError: model.ept: top-1 0.912 vs the original's 0.931 on fashion-mnist test: 1.9 points > 1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.errors import AccuracyDropError

LOST_POINTS = 1.0  # without a gate, a model this far below its original is not called "passed"


class AccuracyCheck:
    """Figures for one export: original, model, each artifact; on labels if any, else agreement with the original."""

    def __init__(self, *, labels: np.ndarray | None, original: np.ndarray | None, model: np.ndarray,
                 heldout: str, max_drop: float | None = None, pruned: bool = False) -> None:
        self.labels = labels
        self.original_out = original
        self.metric = "top1" if labels is not None else "agreement"
        self.figures: dict[str, Any] = {"metric": self.metric, "heldout": heldout, "samples": int(len(model)),
                                        "metric_name": "top-1" if labels is not None else
                                        "top-1 agreement with the original",
                                        "original": None, "model": None, "artifacts": {},
                                        "max_accuracy_drop": max_drop, "notes": []}
        if self.metric == "agreement" and original is None:
            original = model  # no other reference: agreement with the model itself
            self.original_out = model
            if pruned:
                self.figures["notes"].append("The unpruned original could not be rebuilt with trained weights: "
                                             "agreement is measured against the pruned model itself.")
        self.figures["original"] = self.measure(original) if original is not None else None
        if pruned or original is None:
            self.figures["model"] = self.measure(model)
        if original is None and labels is not None and pruned:
            self.figures["notes"].append("The unpruned original has no trained weights here: the drop is counted "
                                         "from this model's own PyTorch accuracy.")

    def measure(self, logits: np.ndarray) -> float:
        pred = np.asarray(logits).argmax(1)
        ref = self.labels if self.labels is not None else np.asarray(self.original_out).argmax(1)
        return round(float(np.mean(pred == ref)), 4)

    def add(self, step: str, logits: np.ndarray) -> float:
        value = self.measure(logits)
        self.figures["artifacts"][step] = value
        return value

    @property
    def baseline(self) -> float | None:
        f = self.figures
        return f["original"] if f["original"] is not None else f["model"]

    def drop(self, value: float | None) -> float | None:
        return None if value is None or self.baseline is None else round((self.baseline - value) * 100, 2)

    def gate(self, step: str, path: str) -> str | None:
        """The failure message when the artifact ``step`` lost more than the gate allows, else None."""
        max_drop = self.figures["max_accuracy_drop"]
        value = self.figures["artifacts"].get(step)
        drop = self.drop(value)
        if max_drop is None or drop is None or drop <= max_drop:
            return None
        name = self.figures["metric_name"]
        return (f"{path}: {name} {value:.4f} vs the original's {self.baseline:.4f} on {self.figures['samples']} "
                f"held-out images ({self.figures['heldout']}): {drop:.2f} points lost > --max-accuracy-drop {max_drop:g}")


def verdict(*, passed: bool, failure: str | None, accuracy: dict[str, Any] | None, final_step: str | None,
            pruning_agreement: dict[str, float] | None, warn_top1: float, warn_cosine: float) -> dict[str, str]:
    """``{"status": passed|failed|lost-accuracy, "reason": ...}`` (see the module docstring)."""
    if not passed:
        return {"status": "failed", "reason": failure or "a check failed"}
    acc = accuracy or {}
    value = (acc.get("artifacts") or {}).get(final_step) if final_step else None
    base = acc.get("original")
    if value is not None and base is not None:
        name = acc.get("metric_name") or ("top-1" if acc.get("metric") == "top1" else
                                          "top-1 agreement with the original")
        drop = round((base - value) * 100, 2)
        where = f"on {acc.get('samples')} held-out images ({acc.get('heldout')})"
        if acc.get("max_accuracy_drop") is None and drop > LOST_POINTS:
            model = acc.get("model")
            pruning_lost = model is not None and (base - model) * 100 > LOST_POINTS
            advice = ("the pruned model lost it: fine-tune it (edgeprune finetune) before shipping" if pruning_lost
                      else "lost in conversion: try another precision or more calibration data")
            return {"status": "lost-accuracy",
                    "reason": f"{final_step} {name} {value:.4f} vs the original's {base:.4f} ({drop:.2f} points lost) "
                              f"{where}; {advice}"}
        return {"status": "passed", "reason": f"{final_step} {name} {value:.4f} vs the original's {base:.4f} {where}"}
    if pruning_agreement and (pruning_agreement["top1"] < warn_top1 or pruning_agreement["cosine"] < warn_cosine):
        return {"status": "lost-accuracy",
                "reason": f"the pruned model agrees with its unpruned original on {pruning_agreement['top1']:.0%} of "
                          f"top-1 (cosine {pruning_agreement['cosine']:.3f}); fine-tune it (edgeprune finetune) "
                          "before shipping"}
    return {"status": "passed", "reason": None}


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
