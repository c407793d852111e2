"""The ``detect`` entry: YOLO/COCO data, letterbox, mAP (pycocotools), head distillation, the detector's own loss.

The pieces, one module each (all under :mod:`edgeprune.tasks`):

- :mod:`.detect_data`: ``--data`` for detectors (:func:`~.detect_data.open_detection` -> a DataSplit of
  :class:`~.detect_data.DetectionDataset`; bad labels are one line naming the file);
- :mod:`.letterbox`: Ultralytics' letterbox, and boxes mapped into the input and back;
- :mod:`.detect_eval`: outputs -> detections (NMS by Ultralytics or OpenCV, none for end-to-end heads),
  mAP50 / mAP50-95 by pycocotools, agreement without labels;
- :mod:`.detect_loss`: distillation on the head's raw outputs, Ultralytics' own loss, one training step;
- :mod:`edgeprune.data.fmnist_det`: the built-in semi-synthetic reference set ``fmnist-det``.

What a stage calls (signatures in each module):

- data: ``open_detection(spec, *, input_shape, num_classes=None, val_fraction=0.1, seed=0, limit=None)``;
- metric: ``evaluate(run, ds, *, num_classes=None, batch_size=16, limit=None, layout=None)`` ->
  ``{"map50_95", "map50", "images", "boxes", "detections", "library", "nms", ...}``, where ``run`` maps a
  batch (torch float NCHW) to what the model or artifact returns (``layout``: an artifact's split outputs);
- without labels: ``agreement_of(reference, candidate, ds, *, num_classes, ...)`` -> ``{"recall", ...}``;
- training: ``train_step(student, batch, *, teacher=None, num_classes=None, supervised=True)`` ->
  ``(loss, items)``; after pruning an Ultralytics model, ``prepare_supervised(model, epochs=...)``.
"""

from __future__ import annotations

from edgeprune.tasks.base import Ref, Task
from edgeprune.tasks.letterbox import PAD_VALUE

DETECT = Task(
    name="detect",
    data_formats=("YOLO folder with data.yaml (train/val/test)", "folder with images/ and labels/",
                  "COCO instances JSON + image folder", "image folder (unlabelled)", "built-in: fmnist-det"),
    preprocessing=f"letterbox to the input, keep aspect, pad {PAD_VALUE}, RGB / 255 (Ultralytics' LetterBox)",
    metric="map50_95",
    metric_name="mAP50-95 (pycocotools)",
    agreement_name="share of the original's detections (conf >= 0.25) found at IoU >= 0.5",
    open_data=Ref("edgeprune.tasks.detect_data:open_split"),
    evaluate=Ref("edgeprune.tasks.detect_eval:evaluate"),
    agreement=Ref("edgeprune.tasks.detect_eval:agreement_of"),
    distill_loss=Ref("edgeprune.tasks.detect_loss:distill_loss"),
    supervised_loss=Ref("edgeprune.tasks.detect_loss:supervised_loss"),
    train_step=Ref("edgeprune.tasks.detect_loss:train_step"),
)
