"""Detector outputs -> detections -> mAP (pycocotools) or agreement with the original; the same for every model.

Decoding (:func:`dense_outputs`), by the outputs' structure, never by model name:

- Ultralytics / YOLOv8 layout: one ``[B, 4 + nc, A]`` tensor, boxes as
  centre x, y, width, height in input pixels, then class probabilities
  (``DetectionModel`` in eval mode returns it first, beside its raw dict);
- end-to-end (YOLO26 with ``end2end``, NMS-free): ``[B, N, 6]``, rows
  ``x1, y1, x2, y2, score, class``: no NMS, only the score threshold;
- raw head maps ``[B, 4 * reg_max + nc, H, W]`` per level (edgeprune's
  ``yolo-small``), and an exported artifact whose boxes and scores are
  separate outputs (:mod:`edgeprune.export.detect`'s split layout): decoded
  by :func:`edgeprune.export.detect.decoded` (distribution-focal-loss
  expectation, anchors at cell centres).

NMS (:func:`edgeprune.checks.nms.non_max_suppression`) is a library's, the same one for the
original, the pruned model and every artifact in one run: Ultralytics'
own with torchvision's NMS kernel, else OpenCV's ``cv2.dnn.NMSBoxesBatched``
(see :mod:`edgeprune.checks.nms` for the choice). Evaluation settings are Ultralytics'
validator's: score >= 0.001, IoU 0.7, at most 300 per image, every class
above the threshold a box may have (``multi_label``). Which one ran is in
every result (``nms``).

mAP (:func:`coco_map`) is pycocotools' ``COCOeval`` (the reference
implementation; 101-point interpolated AP, IoU 0.50:0.05:0.95), on boxes in
the source images' pixels (mapped back through each image's letterbox), so
a user's own COCO evaluation of the same predictions gives the same
figures. ``map50_95`` is COCO's AP, ``map50`` its AP at IoU 0.5.

Without labels, :func:`agreement`: the share of the original's confident
detections (score >= 0.25, Ultralytics' prediction default) that the other
model still finds: a detection of the same class with IoU >= 0.5, matched one
to one (best original detections first), scoring at least half the
threshold (0.125: a score that dips a little is not a lost object).

Example::

    m = evaluate(lambda x: model(x), split.heldout)        # {'map50_95': 0.61, 'map50': 0.88, ...}
    a = agreement_of(lambda x: original(x), lambda x: pruned(x), split.val)   # {'recall': 0.97, ...}
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgeprune.checks.nms import (
    EVAL_CONF,
    EVAL_IOU,
    MAX_DET,
    Detections,
    box_iou,
    nms_backend,
    non_max_suppression,
)
from edgeprune.errors import EdgePruneError, require
from edgeprune.export.detect import OutputPiece, decoded

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

AGREE_CONF, AGREE_IOU = 0.25, 0.5


def _flat(out) -> list:
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    return [out]


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy() if hasattr(t, "detach") else np.asarray(t)


def _probabilities(s: np.ndarray) -> np.ndarray:
    return s if (s.min() >= 0 and s.max() <= 1) else 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))


def dense_outputs(outputs, *, num_classes: int | None = None, input_shape: tuple[int, ...] | None = None,
                  layout=None) -> tuple[str, np.ndarray]:
    """``("dense", [B, 4+nc, A])`` or ``("e2e", [B, N, 6])`` from what a model or an artifact returned.

    ``layout``: an artifact's :class:`edgeprune.export.detect.OutputPiece`
    list (its outputs are those pieces, boxes and scores apart).
    """
    arrays = [_np(t) for t in _flat(outputs) if hasattr(t, "shape")]
    if layout is not None and any(p.role in ("boxes", "scores") for p in layout):
        got = decoded(arrays, layout, tuple(input_shape))
        if got is None:
            raise EdgePruneError("the artifact's outputs hold no boxes and scores to decode")
        return "dense", np.concatenate([got[0], got[1]], axis=1)
    if not arrays:
        raise EdgePruneError("the model returned no tensor")
    first = arrays[0]
    if first.ndim == 3:
        if num_classes is not None and first.shape[1] == 4 + num_classes:
            return "dense", np.concatenate([first[:, :4], _probabilities(first[:, 4:])], axis=1)
        if first.shape[2] == 6 and (num_classes is None or first.shape[1] != 4 + num_classes):
            return "e2e", first
        if num_classes is None and first.shape[1] > 4 and first.shape[2] > first.shape[1]:
            return "dense", np.concatenate([first[:, :4], _probabilities(first[:, 4:])], axis=1)
    maps = [a for a in arrays if a.ndim == 4]
    if maps and num_classes is not None and len({a.shape[1] for a in maps}) == 1 and input_shape is not None:
        c = maps[0].shape[1]
        if (c - num_classes) > 0 and (c - num_classes) % 4 == 0:
            reg = c - num_classes
            pieces, lay = [], []
            for i, a in enumerate(maps):
                pieces += [a[:, :reg], a[:, reg:]]
                lay += [OutputPiece(i, 0, reg, "boxes", f"output{i} boxes"),
                        OutputPiece(i, reg, c, "scores", f"output{i} scores")]
            got = decoded(pieces, lay, tuple(input_shape))
            if got is not None:
                return "dense", np.concatenate([got[0], got[1]], axis=1)
    shapes = ", ".join(str(tuple(a.shape)) for a in arrays[:4])
    raise EdgePruneError(f"cannot read detections from outputs shaped {shapes}: expected [B, 4+classes, anchors], "
                         f"[B, N, 6] (end-to-end) or per-level head maps [B, 4*reg_max+classes, H, W]"
                         + ("" if num_classes else " (say how many classes the model detects)"))


def _e2e(rows: np.ndarray, conf: float, max_det: int) -> list[Detections]:
    out = []
    for r in rows.astype(np.float64):
        r = r[r[:, 4] > conf][:max_det]
        out.append(Detections(r[:, :4], r[:, 4], r[:, 5].astype(np.int64)))
    return out


def detections(outputs, *, num_classes: int | None = None, input_shape: tuple[int, ...] | None = None,
               layout=None, conf: float = EVAL_CONF, iou: float = EVAL_IOU, max_det: int = MAX_DET,
               backend: str | None = None) -> list[Detections]:
    """Outputs (a model's or an artifact's) -> per-image detections in input pixels (see the module docstring)."""
    kind, arr = dense_outputs(outputs, num_classes=num_classes, input_shape=input_shape, layout=layout)
    if kind == "e2e":
        return _e2e(arr, conf, max_det)
    return non_max_suppression(arr, conf=conf, iou=iou, max_det=max_det, backend=backend)


def coco_map(ground_truth: Sequence[np.ndarray], predictions: Sequence[Detections], *,
             sizes: Sequence[tuple[int, int]], num_classes: int) -> dict[str, Any]:
    """mAP50-95 and mAP50 by pycocotools' COCOeval.

    ``ground_truth[i]``: ``(K, 6)`` ``[class, x1, y1, x2, y2, crowd]``;
    ``predictions[i]``: that image's detections, same coordinates;
    ``sizes[i]``: its (h, w). Classes with no ground-truth box are left out
    of the mean, as COCOeval does. No ground truth at all: an error.
    """
    coco_mod = require("pycocotools.coco", "detect", "mAP (pycocotools)")  # heavy: pycocotools
    cocoeval = require("pycocotools.cocoeval", "detect", "mAP (pycocotools)")
    if len(ground_truth) != len(predictions) or len(sizes) != len(predictions):
        raise EdgePruneError(f"{len(ground_truth)} ground-truth images, {len(predictions)} predicted, {len(sizes)} sizes")
    images, anns, dets = [], [], []
    for k, (gt, pred, (h, w)) in enumerate(zip(ground_truth, predictions, sizes, strict=True), 1):
        images.append({"id": k, "width": int(w), "height": int(h)})
        for c, x1, y1, x2, y2, crowd in np.asarray(gt, dtype=np.float64).reshape(-1, 6):
            anns.append({"id": len(anns) + 1, "image_id": k, "category_id": int(c) + 1,  # ids from 1: COCOeval's 0 = none
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": int(crowd)})
        for (x1, y1, x2, y2), s, c in zip(pred.boxes, pred.scores, pred.classes, strict=True):
            dets.append({"image_id": k, "category_id": int(c) + 1, "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                            float(y2 - y1)], "score": float(s)})
    if not anns:
        raise EdgePruneError("no ground-truth boxes: mAP needs labelled images")
    fig = {"images": len(images), "boxes": sum(a["iscrowd"] == 0 for a in anns), "detections": len(dets),
           "library": f"pycocotools {_version('pycocotools')} COCOeval (bbox)"}
    if not dets:
        return {"map50_95": 0.0, "map50": 0.0, **fig}
    with contextlib.redirect_stdout(io.StringIO()):  # COCO and COCOeval print their progress
        gt = coco_mod.COCO()
        gt.dataset = {"images": images, "annotations": anns,
                      "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = cocoeval.COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map50_95": max(0.0, float(ev.stats[0])), "map50": max(0.0, float(ev.stats[1])), **fig}


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def agreement(reference: Sequence[Detections], candidate: Sequence[Detections], *, conf: float = AGREE_CONF,
              iou: float = AGREE_IOU, found_conf: float | None = None) -> dict[str, Any]:
    """The share of ``reference``'s confident detections that ``candidate`` still finds (module docstring)."""
    found_conf = conf / 2 if found_conf is None else found_conf
    found = total = 0
    for ref, cand in zip(reference, candidate, strict=True):
        ref, cand = ref.above(conf), cand.above(found_conf)
        order = np.argsort(-ref.scores, kind="stable")
        total += len(order)
        if not len(order) or not len(cand):
            continue
        overlaps = box_iou(ref.boxes[order], cand.boxes)
        overlaps[ref.classes[order][:, None] != cand.classes[None, :]] = 0.0
        used = np.zeros(len(cand), dtype=bool)
        for row in overlaps:
            row = np.where(used, 0.0, row)
            j = int(row.argmax())
            if row[j] >= iou:
                used[j] = True
                found += 1
    return {"recall": found / total if total else None, "detections": total, "found": found, "conf": conf,
            "found_conf": found_conf, "iou": iou, "same_class": True}


Predict = Callable[[Any], Any]  # a batch of inputs (torch float NCHW) -> the model's or artifact's outputs


def predict(run: Predict, ds, *, num_classes: int, batch_size: int = 16, limit: int | None = None, layout=None,
            conf: float = EVAL_CONF, backend: str | None = None) -> list[Detections]:
    """``run`` over ``ds`` (a DetectionDataset): per-image detections in source pixels."""
    import torch

    n = len(ds) if limit is None else min(limit, len(ds))
    shape = (1, ds.channels, *ds.input_size)
    out: list[Detections] = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        x = ds._fetch(idx)
        with torch.no_grad():
            dets = detections(run(x), num_classes=num_classes, input_shape=shape, layout=layout, conf=conf,
                              backend=backend)
        for i, d in zip(idx, dets, strict=True):
            out.append(Detections(ds.letterbox(int(i)).to_source(d.boxes), d.scores, d.classes))
    return out


def evaluate(run: Predict, ds, *, num_classes: int | None = None, batch_size: int = 16, limit: int | None = None,
             layout=None, backend: str | None = None) -> dict[str, Any]:
    """mAP50-95 / mAP50 of ``run`` on the labelled DetectionDataset ``ds`` (pycocotools, source pixels)."""
    nc = num_classes or ds.num_classes
    preds = predict(run, ds, num_classes=nc, batch_size=batch_size, limit=limit, layout=layout, backend=backend)
    n = len(preds)
    fig = coco_map([ds.ground_truth(i) for i in range(n)], preds, sizes=ds.sizes[:n], num_classes=nc)
    return {**fig, "nms": backend or nms_backend(), "conf": EVAL_CONF, "iou": EVAL_IOU, "max_det": MAX_DET}


def agreement_of(reference: Predict, candidate: Predict, ds, *, num_classes: int, batch_size: int = 16,
                 limit: int | None = None, layouts: tuple = (None, None), conf: float = AGREE_CONF,
                 iou: float = AGREE_IOU, backend: str | None = None) -> dict[str, Any]:
    """:func:`agreement` of two models (or a model and an artifact) on the images of ``ds`` (labels unused)."""
    kw = {"num_classes": num_classes, "batch_size": batch_size, "limit": limit, "backend": backend}
    ref = predict(reference, ds, layout=layouts[0], **kw)
    cand = predict(candidate, ds, layout=layouts[1], **kw)
    return {**agreement(ref, cand, conf=conf, iou=iou), "images": len(ref), "nms": backend or nms_backend()}


__all__ = [
    "AGREE_CONF", "AGREE_IOU", "EVAL_CONF", "EVAL_IOU", "MAX_DET", "Detections", "agreement", "agreement_of",
    "coco_map", "dense_outputs", "detections", "evaluate", "nms_backend", "non_max_suppression", "predict",
]
