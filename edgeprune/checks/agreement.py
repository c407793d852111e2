"""Agreement between a reference model's outputs and a converted one's: overall, per output, per detection.

Every step (pruned vs original, exported vs PyTorch, quantized vs float) is
checked on held-out inputs with:

- :func:`agreement`: four numbers over all outputs together (``top1``,
  ``max_abs``, ``mean_abs``, ``cosine``), kept for the summary line;
- :func:`per_output`: the same for *each* output tensor separately. This is
  what the export gates on: a figure over all outputs flattened together is
  dominated by the largest values and hides a broken small output. A YOLO
  head's decoded ``[1, 4 + classes, anchors]`` holds boxes (0-640 px) and
  class probabilities (0-1); full INT8 gave it one scale (~2.5) and every
  class score became 0, while the cosine over the whole tensor stayed 0.9998
  (benchmarks/RESULTS.md, zoo section);
- :func:`detection_agreement`: for detectors, the share of the float
  model's confident detections that the converted model still finds (IoU
  >= 0.5) and the correlation of their scores.

Definitions:

- ``top1``: fraction of samples whose arg-max class agrees (classifiers: the
  first output with shape ``(N, C)``); for other outputs, the fraction of
  samples whose cosine similarity is at least 0.99.
- ``cosine``: mean per-sample cosine similarity of the outputs flattened.
  An all-zero output against a non-zero reference scores 0 (it once scored
  1: a collapsed output looked perfect); two all-zero outputs score 1.

Example::

    >>> import numpy as np
    >>> a = [np.array([[1.0, 2.0], [3.0, 1.0]])]
    >>> agreement(a, a)["top1"]
    1.0
    >>> per_output([np.ones((2, 3))], [np.zeros((2, 3))])[0]["cosine"]
    0.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeprune.checks.nms import box_iou, non_max_suppression
from edgeprune.checks.outputs import flatten_numpy
from edgeprune.errors import ExportError

CONF = 0.25  # a confident detection (Ultralytics' default prediction threshold)
IOU = 0.5
MAX_DET = 100
MIN_CONFIDENT = 10  # fewer anchors than this above ``conf``: an untrained model, use its best MAX_DET


def _as_list(outputs) -> list[np.ndarray]:
    """Outputs as a flat list of arrays, nested ones in ONNX's order (edgeprune.checks.outputs)."""
    return flatten_numpy(outputs)


def cosines(rf: np.ndarray, cf: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``rf`` with the same row of ``cf`` (samples x values): the one
    cosine of edgeprune. An all-zero row against a non-zero one scores 0; two all-zero rows score 1."""
    rf, cf = np.asarray(rf, np.float64), np.asarray(cf, np.float64)
    nr, nc = np.linalg.norm(rf, axis=1), np.linalg.norm(cf, axis=1)
    denom = nr * nc
    cos = (rf * cf).sum(axis=1) / np.maximum(denom, 1e-300)
    return np.where(denom > 0, cos, np.where((nr == 0) & (nc == 0), 1.0, 0.0))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`cosines` of two whole tensors, flattened."""
    return float(cosines(np.ravel(a)[None], np.ravel(b)[None])[0])


def agreement(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, float]:
    """Compare two lists of outputs (same shapes, batch first), all outputs together.

    A converted model whose outputs do not line up with the reference's
    (another count, another shape) is an :class:`~edgeprune.errors.ExportError`.
    """
    ref, cand = _as_list(reference), _as_list(candidate)
    if len(ref) != len(cand):
        raise ExportError(f"{len(ref)} reference outputs but {len(cand)} candidate outputs: "
                          "the converted model's outputs do not match the original's")
    for i, (r, c) in enumerate(zip(ref, cand, strict=True)):
        if r.shape != c.shape:
            raise ExportError(f"output {i}: shape {c.shape} differs from the reference's {r.shape}")
    n = ref[0].shape[0]
    rf = np.concatenate([r.reshape(n, -1).astype(np.float64) for r in ref], axis=1)
    cf = np.concatenate([c.reshape(n, -1).astype(np.float64) for c in cand], axis=1)
    diff = np.abs(rf - cf)
    cos = cosines(rf, cf)
    first = ref[0]
    if first.ndim == 2 and first.shape[1] > 1:
        top1 = float(np.mean(first.argmax(axis=1) == cand[0].argmax(axis=1)))
    else:
        top1 = float(np.mean(cos >= 0.99))
    return {
        "top1": top1,
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "cosine": float(cos.mean()),
        "samples": int(n),
    }


def per_output(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
) -> list[dict]:
    """:func:`agreement` for each output separately, with its name, role, shape and value range.

    The range (of the reference) shows why outputs need their own INT8
    scales: boxes in pixels beside probabilities.
    """
    ref, cand = _as_list(reference), _as_list(candidate)
    if len(ref) != len(cand):
        raise ExportError(f"{len(ref)} reference outputs but {len(cand)} candidate outputs: "
                          "the converted model's outputs do not match the original's")
    rows = []
    for i, (r, c) in enumerate(zip(ref, cand, strict=True)):
        row = {
            "name": names[i] if names else f"output{i}",
            "role": roles[i] if roles else "output",
            "shape": list(r.shape[1:]),
            "range": [float(r.min()), float(r.max())] if r.size else [0.0, 0.0],
        }
        row.update(agreement([r], [c]))
        rows.append(row)
    return rows


def detect(boxes: np.ndarray, scores: np.ndarray, conf: float, *, max_det: int = MAX_DET, iou: float = IOU):
    """One sample's detections: ``(corners (K, 4), classes (K,), scores (K,))`` after class-wise NMS.

    ``boxes`` is ``(4, A)`` centre/size, ``scores`` ``(classes, A)``; one class per anchor (its best), as
    Ultralytics' non-multi-label NMS; scores at or above ``conf`` count. The NMS is
    :func:`edgeprune.checks.nms.non_max_suppression`, the one the mAP evaluation uses.
    """
    dense = np.concatenate([boxes, scores], axis=0)[None]
    d = non_max_suppression(dense, conf=float(np.nextafter(conf, -np.inf)), iou=iou, max_det=max_det,
                            multi_label=False)[0]
    return d.boxes, d.classes, d.scores


def _rows(boxes: np.ndarray, scores: np.ndarray, conf: float, max_det: int) -> np.ndarray:
    """An NMS-free head's rows scoring at least ``conf`` (the ``max_det`` best, ties in row order) as corners."""
    best = scores.max(0)
    keep = np.where(best >= conf)[0]
    keep = keep[np.argsort(-best[keep], kind="stable")][:max_det]
    cx, cy, w, h = boxes[:, keep]
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 1.0 if sa == sb and np.array_equal(a, b) else 0.0
    return float(np.mean((a - a.mean()) * (b - b.mean())) / (sa * sb))


def detection_agreement(
    ref_boxes: np.ndarray,
    ref_scores: np.ndarray,
    cand_boxes: np.ndarray,
    cand_scores: np.ndarray,
    *,
    conf: float = CONF,
    iou: float = IOU,
    max_det: int = MAX_DET,
    end2end: bool = False,
) -> dict:
    """How many of the float model's confident detections the converted model still finds.

    Inputs are batches: boxes ``(N, 4, anchors)`` (centre x, y, width,
    height), scores ``(N, classes, anchors)`` (probabilities). Per sample,
    the reference's detections are those scoring ``>= conf`` after NMS (at
    most ``max_det``); where fewer than 10 anchors reach ``conf`` (an
    untrained or random-weight model), its ``max_det`` best count instead, so
    the figure still means something (``relative_threshold`` says so). The candidate's detections are found
    the same way at half that threshold (a score that dips a little is not a
    lost detection). ``recall``: the share of reference detections matched
    one to one by a candidate detection with IoU >= ``iou``, of any class:
    near-equal class scores (an untrained head) swap their arg-max under
    rounding alone, and whether the scores themselves survived is what
    ``score_corr`` and the scores' own cosine measure;
    ``score_corr``: Pearson correlation of each anchor's best class score,
    over all anchors and samples (0 when the candidate's scores are constant,
    e.g. collapsed to 0 by a shared INT8 scale).

    ``end2end``: the anchors are an NMS-free head's final rows (YOLO26's
    top-k, already in the reference's row order, :func:`edgeprune.export.detect.match_rows`),
    read as the model means them and as the mAP evaluation reads them
    (:mod:`edgeprune.tasks.detect_eval`), with no NMS: the reference's
    detections are its rows at or above the threshold (the ``max_det``
    best), the candidate's every row at or above half of it.

    A reference detection whose box is empty (x2 <= x1 or y2 <= y1: a
    diverged or barely trained head inverts boxes) is not counted
    (``empty_boxes``): it has no area to overlap, so no conversion, however
    exact, could be said to find it. An exact ONNX file of a YOLO26n at 320 px,
    two fine-tuning steps from trained-like weights (scores 4e-5 apart, boxes
    0.05 px), was refused at recall 0.96 because of them.
    """
    found = total = empty = 0
    relative = False
    for rb, rs, cb, cs in zip(ref_boxes, ref_scores, cand_boxes, cand_scores, strict=True):
        best = rs.max(0)
        threshold = conf
        if int((best >= conf).sum()) < MIN_CONFIDENT:
            threshold = min(conf, float(np.sort(best)[-min(max_det, best.size)]))
            relative = relative or threshold < conf
        if end2end:
            r_box, c_box = _rows(rb, rs, threshold, max_det), _rows(cb, cs, threshold / 2, cb.shape[-1])
        else:
            r_box = detect(rb, rs, threshold, max_det=max_det, iou=iou)[0]
            c_box = detect(cb, cs, threshold / 2, max_det=max_det * 2, iou=iou)[0]
        valid = (r_box[:, 2] > r_box[:, 0]) & (r_box[:, 3] > r_box[:, 1])
        empty += int((~valid).sum())
        r_box = r_box[valid]  # an empty box (x2 <= x1 or y2 <= y1) is no detection: nothing to find
        used = np.zeros(len(c_box), dtype=bool)
        for box in r_box:
            total += 1
            cand = np.where(~used)[0]
            if cand.size:
                overlaps = box_iou(box[None], c_box[cand])[0]
                j = int(overlaps.argmax())
                if overlaps[j] >= iou:
                    used[cand[j]] = True
                    found += 1
    return {
        "recall": found / total if total else 1.0,
        "detections": int(total),
        "score_corr": _corr(ref_scores.max(1).ravel(), cand_scores.max(1).ravel()),
        "conf": conf,
        "relative_threshold": relative,  # the float model had fewer than max_det above conf
        "empty_boxes": empty,  # the float model's detections with an empty box, not counted
        "iou": iou,
    }
