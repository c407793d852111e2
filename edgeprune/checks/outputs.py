"""A model's outputs as one flat list, in the order the ONNX file has them.

Models return nested values: Ultralytics' ``DetectionModel`` in eval mode
returns ``(Tensor[1, 84, A], {"boxes", "scores", "feats": [3 maps]})``,
and YOLO26 ``(Tensor[1, 84, A], {"one2many": {...}, "one2one": {...}})``.
:func:`flatten` turns any of them into a list of tensors, depth first:

- a tensor is one output;
- a tuple or list: its items, in order;
- a dict: its values in insertion order (its keys are not kept);
- anything else (``None``, a number, a string) is no output and is skipped.

That is the order ``torch.onnx.export`` gives a model's outputs (it flattens
tuples, lists and dicts the same way and drops ``None``), so ONNX output
``k`` is ``flatten(model(x))[k]`` (tests/test_zoo_outputs.py exports a
nested model and checks it), and every later format keeps ONNX's order.
A tensor returned twice (YOLO26's two heads share their ``feats``) is two
outputs, as in the ONNX file.

Which outputs a check compares:

- pruning (:func:`compared`: the group analysis' "model output" channels,
  the output-shape check and the surgery check) compares every output the
  model returns in eval mode except the maps a detection head returns only
  for its training loss: an Ultralytics head returns its own *inputs*
  (``feats``, the neck's P3-P5 maps) beside its predictions; they are no
  output of the file a user ships, and counting them as outputs would keep
  the whole neck's output channels unpruned. What is compared is the decoded
  prediction tensor and, for every head branch (YOLO26's one-to-many and
  one-to-one), its raw box and class maps, so a wrong cut in either branch
  shows;
- a file to ship holds what Ultralytics' own exporter writes
  (:func:`edgeprune.checks.heads.shipping_form`: the decoded prediction
  tensor, or YOLO26's end-to-end detections), and the export compares
  exactly the outputs of that form, in PyTorch and in every file.

Example::

    flatten((y, {"boxes": b, "scores": s, "feats": [p3, p4, p5]}))   # [y, b, s, p3, p4, p5]
    compared(model, x)                                                # [y, b, s]
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # no tensor exists before torch is imported: this module never imports it
    return torch is not None and isinstance(x, torch.Tensor)


def flatten(out: Any) -> list:
    """Every tensor (or numpy array) in ``out`` (nested tuples, lists, dicts), depth first, dicts in insertion order."""
    if _is_tensor(out) or isinstance(out, np.ndarray):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten(o)]
    return []


PROTOCOL = ("export", "dynamic", "format", "nc", "stride")  # Ultralytics' head attributes (edgeprune.checks.heads)


def detection_heads(model: Any) -> list[Any]:
    """The modules of ``model`` that follow Ultralytics' head protocol (attributes :data:`PROTOCOL`)."""
    modules = getattr(model, "modules", None)
    if modules is None:
        return []
    return [m for m in modules() if all(hasattr(m, a) for a in PROTOCOL)]


def compared(model: Any, x: Any) -> list:
    """The outputs of ``model(x)`` that pruning's checks compare: :func:`flatten`, without the maps a
    detection head takes as input and returns only for training (see the module docstring).

    Runs in the caller's grad mode (the group analysis needs autograd)."""
    heads = detection_heads(model)
    if not heads:
        return flatten(model(x))
    inputs: list = []  # the tensors themselves: kept alive, their ids cannot be reused before the comparison
    hooks = [h.register_forward_pre_hook(lambda _m, args: inputs.extend(flatten(args))) for h in heads]
    try:
        out = flatten(model(x))
    finally:
        for hook in hooks:
            hook.remove()
    seen = {id(t) for t in inputs}
    return [t for t in out if id(t) not in seen]


def flatten_numpy(out: Any) -> list[np.ndarray]:
    """:func:`flatten`, each tensor as a numpy array (detached, on the CPU)."""
    return [t if isinstance(t, np.ndarray) else t.detach().cpu().numpy() for t in flatten(out)]


__all__ = ["compared", "detection_heads", "flatten", "flatten_numpy"]
