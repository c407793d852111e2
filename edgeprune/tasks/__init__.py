"""What a model does, as a registry entry: its data, its preprocessing, its metric, its losses, its gate.

``TASKS`` maps a task name to a :class:`Task`. A stage asks the model's
task for what differs between a classifier and a detector, instead of
branching on a string:

==========  ==============================  ==========================  ==================================
task        data (``--data``)               preprocessing               metric (gate) / without labels
==========  ==============================  ==========================  ==================================
classify    class folders, image folders,   resize, normalise           top-1 accuracy points /
            .npy/.npz, factories, built-ins (:mod:`edgeprune.data`)     top-1 agreement with the original
detect      YOLO folder + data.yaml, COCO   letterbox, pad 114, RGB/255 mAP50-95 points (pycocotools) /
            JSON, image folders, fmnist-det (:mod:`.letterbox`)         share of the original's detections
                                                                        found at IoU 0.5 (conf 0.25)
==========  ==============================  ==========================  ==================================

Each entry's functions are references (``Ref``) imported on first call, so
importing this package stays cheap (no torch). ``segment`` has a place
(:data:`PLANNED`) but no entry yet: asking for it is a one-line
:class:`~edgeprune.errors.NotBuiltError`.

The classify entry names what exists today (edgeprune.finetune.loop's KL
distillation and top-1, edgeprune.data's loaders) without moving it.

:func:`task_of` reads the task from the model: ``--task`` when given; an
Ultralytics model's head class (``Detect`` -> detect, ``Segment`` ->
segment, ``Classify`` -> classify, ...) or a ``task`` attribute; otherwise
the structure of its outputs on one input (one ``[N, C]`` tensor ->
classify; ``[N, 4 + classes, anchors]``, ``[N, K, 6]`` or per-level maps ->
detect).

Example::

    task = TASKS[task_of(model, input_shape=(1, 3, 320, 320))]
    split = task.open_data("data.yaml", input_shape=(1, 3, 320, 320))
    task.evaluate(lambda x: model(x), split.heldout)["map50_95"]
"""

from __future__ import annotations

from typing import Any

from edgeprune.errors import EdgePruneError, NotBuiltError, did_you_mean
from edgeprune.tasks.base import Ref, Task
from edgeprune.tasks.classify import CLASSIFY
from edgeprune.tasks.detect import DETECT

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFY, DETECT)}
PLANNED = ("segment",)  # named so that --task segment says "not built yet", not "unknown"

# An Ultralytics head's class -> task (ultralytics.nn.tasks.guess_model_task reads the same classes).
_ULTRALYTICS_HEADS = {"Detect": "detect", "v10Detect": "detect", "YOLOEDetect": "detect", "WorldDetect": "detect",
                      "RTDETRDecoder": "detect", "Segment": "segment", "YOLOESegment": "segment", "Pose": "pose",
                      "OBB": "obb", "Classify": "classify"}


def get_task(name: str) -> Task:
    """The registry entry ``name``; one-line errors for a planned or an unknown task."""
    if name in TASKS:
        return TASKS[name]
    if name in PLANNED or name in ("pose", "obb"):
        raise NotBuiltError(f"task '{name}' is not built yet (built: {', '.join(TASKS)})")
    hint = did_you_mean(name, TASKS) or f"tasks: {', '.join(TASKS)}"
    raise EdgePruneError(f"unknown task '{name}': {hint}")


def _declared(module) -> str | None:
    """What the model itself says: an Ultralytics head class, or a ``task`` attribute."""
    layers = getattr(module, "model", None)
    try:
        head = layers[-1] if layers is not None else None
    except (TypeError, IndexError, KeyError):
        head = None
    if head is not None:
        for cls in type(head).__mro__:
            if cls.__module__.startswith("ultralytics.") and cls.__name__ in _ULTRALYTICS_HEADS:
                return _ULTRALYTICS_HEADS[cls.__name__]
    task = getattr(module, "task", None)
    return task if isinstance(task, str) and task else None


def _flat(out) -> list:
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    return [out]


def detector_classes(module) -> int | None:
    """A detector's class count, as its head says it (Ultralytics' ``nc``), else None."""
    layers = getattr(module, "model", None)
    try:
        head = layers[-1] if layers is not None else None
    except (TypeError, IndexError, KeyError):
        head = None
    nc = getattr(head, "nc", None) if head is not None else getattr(module, "nc", None)
    return int(nc) if isinstance(nc, int) and nc > 0 else None


def task_from_outputs(outputs) -> str:
    """'classify' for one ``[N, C]`` tensor, else 'detect' (the structures of the module docstring)."""
    tensors = [t for t in _flat(outputs) if hasattr(t, "ndim")]
    if len(tensors) == 1 and tensors[0].ndim == 2:
        return "classify"
    if tensors and all(t.ndim == 2 for t in tensors):
        return "classify"  # several heads of logits: still a classifier's outputs
    return "detect"


def task_of(module, *, override: str | None = None, input_shape: tuple[int, ...] | None = None,
            outputs: Any = None) -> str:
    """The task of ``module``: ``override`` (``--task``), what the model says, else its outputs' structure.

    ``outputs`` (what the model returned on one input) saves a forward
    pass; otherwise the model runs once on zeros of ``input_shape``.
    """
    if override:
        return get_task(override).name
    declared = _declared(module)
    if declared is not None:
        return get_task(declared).name
    if outputs is None:
        if input_shape is None:
            raise EdgePruneError("cannot tell the model's task: give --task (classify or detect) or an input shape")
        import torch

        was = getattr(module, "training", False)
        module.eval()
        with torch.no_grad():
            outputs = module(torch.zeros(*input_shape))
        module.train(was)
    return task_from_outputs(outputs)


__all__ = ["CLASSIFY", "DETECT", "PLANNED", "TASKS", "Ref", "Task", "detector_classes", "get_task",
           "task_from_outputs", "task_of"]
