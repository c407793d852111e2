"""Reference classifiers trained on Fashion-MNIST, and the cache of their trained weights.

==================  ==========================================  =========  =======================
name                architecture                                input      starts from
==================  ==========================================  =========  =======================
mobilenetv2-fmnist  MobileNetV2 (torchvision names), 10 classes  1x3x64x64  ImageNet weights (transfer)
resnet18-fmnist     ResNet-18 (torchvision names), 10 classes    1x3x64x64  random (seeded)
==================  ==========================================  =========  =======================

Fashion-MNIST's 28x28 grey images are upsampled to 64x64 and repeated to
three channels (ImageNet normalisation), so the networks are the standard
ones, unmodified, at an input size where latency is measurable on a board
(64 px: chosen after measuring training throughput on a 2-core CPU, where
96 px cost 2.2x the time per image; see benchmarks/train_reference.py).

Weights are trained by ``python benchmarks/train_reference.py`` (fixed
seeds) and cached in edgeprune's cache folder as ``NAME-v1.pt`` (a
state_dict, read with ``weights_only=True``) with ``NAME-v1.json`` beside it
(test accuracy, split, recipe, command). They are not shipped in the
repository: ResNet-18's are 45 MB; MobileNetV2's would be 4.5 MB in fp16, but
a binary in git stays in every clone forever, and the training command
rebuilds them. A model whose weights are not cached says so in one line,
with that command.

Example::

    model = mobilenetv2_fmnist()
    load_trained(model, "mobilenetv2-fmnist")   # ModelError naming the training command if missing
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_write_bytes, atomic_write_text, cache_dir, sha256_file
from edgeprune.errors import ModelError
from edgeprune.safeload import torch_load

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.

VERSION = "v1"
TRAIN_COMMAND = "python benchmarks/train_reference.py --model {name}"
TRAIN_MINUTES = {"mobilenetv2-fmnist": 30, "resnet18-fmnist": 45, "yolov8n-fmnist-det": 35}


def mobilenetv2_fmnist():
    from edgeprune.models.mobilenetv2 import mobilenet_v2

    return mobilenet_v2(num_classes=10)


def resnet18_fmnist():
    from edgeprune.models.resnet import resnet18

    return resnet18(num_classes=10)


def weights_path(name: str) -> Path:
    return cache_dir() / f"{name}-{VERSION}.pt"


def record_path(name: str) -> Path:
    return weights_path(name).with_suffix(".json")


def train_hint(name: str) -> str:
    minutes = TRAIN_MINUTES.get(name)
    cost = f" (about {minutes} min on 2 CPU cores; needs bash scripts/fetch-data.sh fashion-mnist)" if minutes else ""
    return f"train them once: {TRAIN_COMMAND.format(name=name)}{cost}"


def record(name: str) -> dict[str, Any] | None:
    """What the training recorded (test accuracy, split, command), or None."""
    path = record_path(name)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_trained(model, name: str):
    """Load the cached trained weights of ``name`` into ``model`` (strict)."""

    path = weights_path(name)
    if not path.is_file():
        raise ModelError(f"{name}: trained weights are not cached (looked for {path}); {train_hint(name)}")
    try:
        state = torch_load(path)
        model.load_state_dict(state, strict=True)
    except ModelError:
        raise  # the file asks for a global (safeload): that one line, not "stale"
    except Exception as exc:
        raise ModelError(f"{path}: damaged or stale weights ({type(exc).__name__}); {train_hint(name)}") from None
    return model


def save_record(name: str, info: dict[str, Any]) -> None:
    atomic_write_text(record_path(name), json.dumps(info, indent=2) + "\n")


def save_trained(model, name: str, info: dict[str, Any]) -> Path:
    """Cache ``model``'s weights as ``name``'s trained weights, with ``info`` beside them; atomically."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
    path = weights_path(name)
    atomic_write_bytes(path, buf.getvalue())
    save_record(name, {**info, "weights": path.name, "sha256": sha256_file(path)})
    return path
