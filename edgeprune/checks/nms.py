"""Non-maximum suppression for detectors: a library's, the same one everywhere detections are compared.

Ultralytics' own ``ultralytics.utils.nms.non_max_suppression`` (without
its time limit, which drops detections on a busy machine) when ultralytics
and torchvision's compiled NMS kernel both load, else OpenCV's
``cv2.dnn.NMSBoxesBatched`` when OpenCV is installed, else Ultralytics' on
its own. Without torchvision, Ultralytics falls back to ``TorchNMS.nms``, a
Python loop over boxes: at the validator's score threshold an untrained
YOLOv8n at 320 px has 30 000 candidates an image and took 11.7 s an image
here (OpenCV's C++ NMS gives the same boxes: tests/test_tasks_detect_train.py).
Which one ran is in every result (``nms``). The mAP evaluation
(:mod:`edgeprune.tasks.detect_eval`) and the conversion check's detection
agreement (:mod:`edgeprune.checks.agreement`) both call
:func:`non_max_suppression`, so original, pruned model and every artifact
go through one NMS. Defaults are Ultralytics' validator's: score > 0.001,
IoU 0.7, at most 300 per image.

Example::

    dets = non_max_suppression(dense)   # dense [B, 4 + nc, A]: xywh in pixels, then class probabilities
    dets[0].boxes, dets[0].scores, dets[0].classes
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import numpy as np

from edgeprune.errors import EdgePruneError, require
from edgeprune.models.ultra import available, import_ultralytics

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

EVAL_CONF, EVAL_IOU, MAX_DET = 0.001, 0.7, 300  # Ultralytics' validator
MAX_NMS = 30_000  # candidates per image before NMS (Ultralytics' max_nms)


@dataclass
class Detections:
    """One image's detections: ``boxes`` (K, 4) x1, y1, x2, y2; ``scores`` (K,); ``classes`` (K,) int."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, conf: float) -> Detections:
        keep = self.scores >= conf
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


@functools.lru_cache(maxsize=1)
def _torchvision_nms() -> bool:
    """Whether torchvision's compiled NMS runs here (Ultralytics uses it once torchvision is imported)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torch
        import torchvision

        torchvision.ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
        return True
    except Exception:  # installed but broken: its compiled ops do not load with this torch
        return False


@functools.lru_cache(maxsize=1)
def nms_backend() -> str:
    """'ultralytics' with torchvision's NMS kernel, else 'opencv' where OpenCV is installed, else 'ultralytics'
    where it is (see the module docstring), else 'opencv' (which then says what to install)."""
    if available() and _torchvision_nms():
        return "ultralytics"
    if importlib.util.find_spec("cv2") is not None:
        return "opencv"
    return "ultralytics" if available() else "opencv"


def _nms_ultralytics(dense: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool):
    import torch

    nms = import_ultralytics("ultralytics.utils.nms")  # heavy: ultralytics
    # max_time_img: Ultralytics stops NMS after 2 s + 0.05 s per image and drops the rest of the batch; on a
    # loaded machine that changed mAP by 2.6 points between two runs of the same model. No time limit here.
    out = nms.non_max_suppression(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)), conf, iou,
                                  multi_label=multi_label, max_det=max_det, max_nms=MAX_NMS, max_time_img=1e9)
    return [Detections(o[:, :4].numpy().astype(np.float64), o[:, 4].numpy().astype(np.float64),
                       o[:, 5].numpy().astype(np.int64)) for o in out]


def _nms_opencv(dense: np.ndarray, conf: float, iou: float, max_det: int, multi_label: bool):
    cv2 = require("cv2", "detect", "NMS for detectors (OpenCV)")  # heavy: OpenCV
    result = []
    for p in dense.astype(np.float64):
        boxes, scores = p[:4].T, p[4:].T  # (A, 4) xywh, (A, nc)
        if multi_label:
            i, j = np.nonzero(scores > conf)
            s = scores[i, j]
        else:
            j = scores.argmax(1)
            s = scores[np.arange(len(j)), j]
            i = np.nonzero(s > conf)[0]
            j, s = j[i], s[i]
        if len(s) > MAX_NMS:
            top = np.argsort(-s, kind="stable")[:MAX_NMS]
            i, j, s = i[top], j[top], s[top]
        if not len(s):
            result.append(Detections.empty())
            continue
        xywh = boxes[i]
        rects = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, 2:]], axis=1)
        keep = np.asarray(cv2.dnn.NMSBoxesBatched(rects.tolist(), s.tolist(), j.tolist(), conf, iou), dtype=np.int64)
        keep = keep.reshape(-1)[np.argsort(-s[keep.reshape(-1)], kind="stable")][:max_det]
        x1y1 = rects[keep, :2]
        result.append(Detections(np.concatenate([x1y1, x1y1 + rects[keep, 2:]], axis=1), s[keep], j[keep]))
    return result


def non_max_suppression(dense: np.ndarray, *, conf: float = EVAL_CONF, iou: float = EVAL_IOU,
                        max_det: int = MAX_DET, multi_label: bool = True, backend: str | None = None
                        ) -> list[Detections]:
    """Per image of ``dense`` ``[B, 4+nc, A]`` (xywh px, probabilities): detections after class-wise NMS."""
    backend = backend or nms_backend()
    fn = {"ultralytics": _nms_ultralytics, "opencv": _nms_opencv}.get(backend)
    if fn is None:
        raise EdgePruneError(f"NMS backend '{backend}': choose ultralytics or opencv")
    return fn(dense, conf, iou, max_det, multi_label)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (K, 4) with every box in ``b`` (L, 4), corners."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)
