"""Factories for the real Ultralytics package's models: ``--model tests.zoo.ultralytics_real:yolov8n``.

Ultralytics 8.4 imports without torchvision except for one line: at import,
``ultralytics.utils`` reads torchvision's *version* from the package metadata
(``importlib.metadata.version("torchvision")``), and fails when torchvision is
not installed. Building a ``DetectionModel`` never imports torchvision itself
(only NMS, datasets and some exporters do). torchvision cannot be installed
here (its compiled ops do not load with the CPU torch; see FACTS.md), so
:func:`import_ultralytics` answers that one metadata query during the import,
and nothing else: ``import torchvision`` still fails, so any code path that
really needs it would fail loudly.

Settings go to a temporary folder (``YOLO_CONFIG_DIR``), never the user's home.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import tempfile

TORCHVISION_FOR_TORCH_2_13 = "0.28.0"


def available() -> bool:
    return importlib.util.find_spec("ultralytics") is not None


def import_ultralytics():
    """``ultralytics.nn.tasks``, imported without torchvision (see the module docstring)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="edgeprune-ultralytics-"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "torchvision":
            try:
                return real(name)
            except importlib.metadata.PackageNotFoundError:
                return TORCHVISION_FOR_TORCH_2_13
        return real(name)

    importlib.metadata.version = version
    try:
        return importlib.import_module("ultralytics.nn.tasks")
    finally:
        importlib.metadata.version = real


def _build(cfg: str):
    import torch

    tasks = import_ultralytics()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return tasks.DetectionModel(cfg, verbose=False).eval()


def yolov8n():
    return _build("yolov8n.yaml")


def yolo11n():
    return _build("yolo11n.yaml")
