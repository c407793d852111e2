"""The user's Ultralytics package, imported without torchvision; and the reference detector built from it.

Ultralytics 8.4 imports without torchvision except for one line: at import,
``ultralytics.utils`` reads torchvision's *version* from the package
metadata (``importlib.metadata.version("torchvision")``) and fails when
torchvision is not installed. Building a ``DetectionModel``, its loss
(``v8DetectionLoss`` / ``E2ELoss``) and its NMS
(``ultralytics.utils.nms.non_max_suppression``, which uses its own
``TorchNMS`` unless torchvision is already imported) never import
torchvision itself. torchvision cannot be installed here (its compiled ops
do not load with the CPU torch; see FACTS.md), so :func:`import_ultralytics`
answers that one metadata query during the import, and nothing else:
``import torchvision`` still fails, so any code path that really needs it
fails loudly. Where torchvision is installed the real answer is used.
(tests/zoo/ultralytics_real.py is the same stand-in for the tests.)

Settings go to a temporary folder (``YOLO_CONFIG_DIR``) unless the user set
one, ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false``: importing it never
writes into the user's home, reaches the network or installs a package
(Ultralytics pip-installs what it misses by default). Importing Ultralytics
also replaces ``PIL.Image.open`` (a bad image then tries to install pi-heif)
and ``torch.save`` process-wide; :func:`undo_patches` puts them back, after
our imports and after a user's factory (:func:`edgeprune.models.loading.call_factory`),
so that a broken image is still one line naming the file.

Example::

    tasks = import_ultralytics("ultralytics.nn.tasks")   # MissingDependencyError naming the extra when absent
    model = tasks.DetectionModel("yolov8n.yaml", nc=10, verbose=False)
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator

from edgeprune.errors import MissingDependencyError

# Lazy imports: the imports inside functions below load numpy, which importing this module does not;
# they load only when a function that needs them runs.

TORCHVISION_FOR_TORCH_2_13 = "0.28.0"
INSTALL = "pip install --no-deps ultralytics==8.4.190 opencv-python-headless"


def available() -> bool:
    """Is the ultralytics package installed (without importing it: that takes seconds)?"""
    return importlib.util.find_spec("ultralytics") is not None


def quiet_environment() -> None:
    """The environment Ultralytics reads at import: no network, no installs, settings in a temp folder."""
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="edgeprune-ultralytics-"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "False")


def undo_patches() -> None:
    """Put back what importing Ultralytics replaced process-wide (``PIL.Image.open``, ``torch.save``)."""
    patches = sys.modules.get("ultralytics.utils.patches")
    if patches is None:
        return
    pil = sys.modules.get("PIL.Image")
    original_open = getattr(patches, "_image_open", None)
    if pil is not None and original_open is not None and getattr(pil, "open", None) is getattr(patches, "image_open", None):
        pil.open = original_open
    torch = sys.modules.get("torch")
    original_save = getattr(patches, "_torch_save", None)
    if torch is not None and original_save is not None and torch.save is getattr(patches, "torch_save", None):
        torch.save = original_save


@contextlib.contextmanager
def torchvision_version_answered() -> Iterator[None]:
    """While inside: ``importlib.metadata.version("torchvision")`` answers even without torchvision.

    The one query Ultralytics makes at import (see the module docstring); every
    other name, and torchvision where it is installed, gets the real answer.
    """
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
        yield
    finally:
        importlib.metadata.version = real


def import_ultralytics(module: str = "ultralytics.nn.tasks"):
    """Import ``module`` from ultralytics (see the module docstring); MissingDependencyError when absent."""
    if not available():
        raise MissingDependencyError("ultralytics", "detect", f"Ultralytics models ({INSTALL})")
    quiet_environment()
    try:
        with torchvision_version_answered():
            return importlib.import_module(module)
    finally:
        undo_patches()


def is_ultralytics_model(module) -> bool:
    """An Ultralytics ``BaseModel`` (DetectionModel, ...), judged by its class's module (no import)."""
    return any(c.__module__.startswith("ultralytics.") for c in type(module).__mro__)


def yolov8n_fmnist_det():
    """The reference detector's architecture: Ultralytics' own yolov8n.yaml with 10 classes (random init)."""
    tasks = import_ultralytics("ultralytics.nn.tasks")
    model = tasks.DetectionModel("yolov8n.yaml", nc=10, verbose=False)
    from edgeprune.data.fashion_mnist import CLASSES

    model.names = dict(enumerate(CLASSES))
    return model.eval()


__all__ = ["available", "import_ultralytics", "is_ultralytics_model", "yolov8n_fmnist_det"]
