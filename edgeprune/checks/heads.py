"""Detection heads that say how they run: Ultralytics' ``Detect`` protocol, found by structure.

An Ultralytics detection head (``Detect`` and its subclasses in 8.x:
YOLOv8, YOLO11, YOLO26's NMS-free head, segment/pose/OBB heads, RT-DETR's
decoder) reads a few flags that its exporter sets before
``torch.onnx.export`` (``ultralytics/engine/exporter.py``):

- ``export = True``: the head returns its decoded predictions alone
  (``Tensor[1, 4 + classes, anchors]``) instead of
  ``(predictions, {"boxes", "scores", "feats"})``;
- ``format``: the file format (``onnx``, ``tflite``);
- ``dynamic = False``, ``shape = None``: anchors are built once, for this
  input size, and baked into the graph;
- ``max_det``: at most the number of anchors;
- ``end2end`` (YOLO26, a head with a second, one-to-one branch
  ``one2one_cv2``): the file holds that branch's NMS-free detections,
  ``Tensor[1, max_det, 6]`` (x1, y1, x2, y2, score, class) from a top-k.
  Ultralytics turns it off where the format cannot run top-k (Edge TPU),
  and for LiteRT INT8: "static activation quantization collapses the
  end2end class-index output" (class indices 0-79 beside pixels in one int8
  scale). edgeprune turns it off for every INT8 file (ONNX INT8 too, for
  the same cause); those files hold the one-to-many branch's decoded
  predictions, for NMS on the board.

:func:`shipping_form` applies the same rules, on a copy, so that what
edgeprune exports is what Ultralytics' own exporter would write.
Heads are found by structure, not by class name
(:func:`edgeprune.checks.outputs.detection_heads`).

Example::

    ship = shipping_form(model, fmt="onnx", precision="fp32", input_shape=(1, 3, 320, 320))
    ship(torch.zeros(1, 3, 320, 320)).shape     # YOLO26: end-to-end, (1, 300, 6); YOLOv8: (1, 84, 2100)
"""

from __future__ import annotations

import copy
from typing import Any

from edgeprune.checks.outputs import detection_heads

DEFAULT_MAX_DET = 300  # Ultralytics' default
NO_TOPK_FORMATS = ("edgetpu",)  # Ultralytics: formats without top-k support export the one-to-many branch


def has_end2end(head: Any) -> bool:
    """Does ``head`` have YOLO26's one-to-one (NMS-free) branch?"""
    return getattr(head, "one2one_cv2", None) is not None


def end2end_for(fmt: str, precision: str) -> bool:
    """Whether a file of this format and precision holds the end-to-end branch (Ultralytics' rules)."""
    return fmt not in NO_TOPK_FORMATS and precision != "int8"


def _anchors(head: Any, input_shape: tuple[int, ...]) -> int:
    h, w = input_shape[-2:]
    return sum(int(h / float(s)) * int(w / float(s)) for s in head.stride)


def _set(head: Any, *, fmt: str, precision: str, input_shape: tuple[int, ...]) -> None:
    head.export = True
    head.format = fmt
    head.dynamic = False
    head.shape = None  # anchors are rebuilt for this input size
    if hasattr(head, "max_det"):
        head.max_det = min(DEFAULT_MAX_DET, _anchors(head, input_shape))
    if has_end2end(head):
        head.end2end = end2end_for(fmt, precision)


def shipping_form(model: Any, *, fmt: str, precision: str, input_shape: tuple[int, ...]) -> Any:
    """``model`` as a file of ``fmt``/``precision`` will hold it: a copy with its heads set, or ``model`` itself.

    A model without Ultralytics heads is returned unchanged (no copy). The
    copy shares nothing with ``model``, whose own flags stay as they were
    (pruning traces every branch in eval mode; see :mod:`edgeprune.prune.groups`).
    """
    heads = detection_heads(model)
    if not heads:
        return model
    ship = copy.deepcopy(model).eval()
    for head in detection_heads(ship):
        _set(head, fmt=fmt, precision=precision, input_shape=tuple(input_shape))
    return ship


def same_form(model: Any, like: Any) -> Any:
    """``model`` (e.g. the unpruned base) in the form ``like`` was given by :func:`shipping_form`."""
    ours, theirs = detection_heads(model), detection_heads(like)
    if not ours or len(ours) != len(theirs) or not any(getattr(h, "export", False) for h in theirs):
        return model
    ship = copy.deepcopy(model).eval()
    for head, ref in zip(detection_heads(ship), theirs, strict=True):
        for name in ("export", "format", "dynamic", "max_det"):
            if hasattr(ref, name):
                setattr(head, name, getattr(ref, name))
        # not ``like``'s ``shape``: once ``like`` has run, it says its anchors are built for that input, and
        # this head's (empty, or built for another size) would be taken as built: 0 anchors, a RuntimeError
        head.shape = None
        if has_end2end(head) and has_end2end(ref):
            head.end2end = ref.end2end
    return ship


def describe(model: Any) -> dict | None:
    """What the heads of a shipping form output, for export.json (None without Ultralytics heads)."""
    heads = [h for h in detection_heads(model) if getattr(h, "export", False)]
    if not heads:
        return None
    head = heads[-1]
    e2e = bool(has_end2end(head) and head.end2end)
    return {
        "head": type(head).__name__,
        "end2end": e2e,
        "output": (f"[1, {head.max_det}, 6]: x1, y1, x2, y2, score, class of the NMS-free one-to-one branch"
                   if e2e else f"[1, 4 + {head.nc}, anchors]: boxes (centre x, y, width, height, pixels) and class "
                   "probabilities of the one-to-many branch, for NMS on the board"),
        "max_det": getattr(head, "max_det", None),
        "classes": int(head.nc),
    }


__all__ = ["describe", "end2end_for", "has_end2end", "same_form", "shipping_form"]
