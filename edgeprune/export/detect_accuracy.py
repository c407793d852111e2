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

from edgeprune.checks.accuracy import AccuracyCheck
from edgeprune.tasks.detect_eval import agreement_of, evaluate

SAMPLES = 500


class DetectAccuracy(AccuracyCheck):
    """Figures for one export of a detector; ``run`` callables map a torch NCHW batch to output pieces.

    The classifier's check with the detector's figure: ``add``, ``drop`` and ``gate`` are
    :class:`~edgeprune.checks.accuracy.AccuracyCheck`'s, ``measure`` takes a run, not logits.
    """

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
