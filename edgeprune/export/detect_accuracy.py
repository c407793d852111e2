"""A detector's accuracy in every file of an export: mAP50-95 on labelled held-out images, else agreement.

The classifier's counterpart is :class:`edgeprune.checks.accuracy.AccuracyCheck`
(top-1); this one has the same figures and gate, in the detect task's terms
(:mod:`edgeprune.tasks.detect_eval`):

- labelled held-out images: mAP50-95 by pycocotools for the original, the
  model being exported (PyTorch) and every artifact, each run on the same
  images and decoded by the same NMS;
- unlabelled: the share of the original's confident detections (score >=
  0.25) that each file still finds at IoU >= 0.5 (the original scores 1.0).

The gate (``--max-accuracy-drop P``) is in points of that figure: mAP50-95
0.412 -> 0.405 is 0.7 points. At most :data:`SAMPLES` images are used: a
detector's INT8 file runs one image at a time here.

Example::

    check = DetectAccuracy(held=split.heldout, original=orig_run, model=model_run, num_classes=10,
                           layout=layout, max_drop=1.0, pruned=True)
    check.add("tflite int8", artifact_run)
    check.figures["artifacts"]     # {'tflite int8': 0.281}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeprune.tasks.detect_eval import agreement_of, evaluate

SAMPLES = 500


class DetectAccuracy:
    """Figures for one export of a detector; ``run`` callables map a torch NCHW batch to output pieces."""

    def __init__(self, *, held, original: Callable | None, model: Callable, num_classes: int | None, layout,
                 max_drop: float | None = None, pruned: bool = False, samples: int = SAMPLES) -> None:
        if len(held) > samples:  # evenly spread over the split
            held = held.subset(np.linspace(0, len(held) - 1, samples).round().astype(int))
        self.held, self.layout, self.nc = held, layout, num_classes
        self.original_run = original if original is not None else model
        self.metric = "map50_95" if held.labelled else "recall"
        name = "mAP50-95" if held.labelled else "share of the original's detections found (IoU 0.5)"
        self.figures: dict[str, Any] = {"metric": self.metric, "metric_name": name, "heldout": held.source,
                                        "samples": len(held), "original": None, "model": None, "artifacts": {},
                                        "max_accuracy_drop": max_drop, "notes": [], "task": "detect"}
        if original is None and pruned:
            self.figures["notes"].append("The unpruned original with trained weights is not known here: the "
                                         "figures are measured against the pruned model itself.")
        self.figures["original"] = self.measure(self.original_run)
        self.figures["model"] = self.measure(model)

    def measure(self, run: Callable) -> float:
        if self.metric == "map50_95":
            value = evaluate(run, self.held, num_classes=self.nc, layout=self.layout, batch_size=1)["map50_95"]
        elif run is self.original_run:
            value = 1.0
        else:
            value = agreement_of(self.original_run, run, self.held, num_classes=self.nc, batch_size=1,
                                 layouts=(self.layout, self.layout))["recall"]
        return round(float(value), 4)

    def add(self, step: str, run: Callable) -> float:
        value = self.measure(run)
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
        return (f"{path}: {self.figures['metric_name']} {value:.4f} vs the original's {self.baseline:.4f} on "
                f"{self.figures['samples']} held-out images ({self.figures['heldout']}): {drop:.2f} points lost "
                f"> --max-accuracy-drop {max_drop:g}")
