"""Factories for the real timm package's models: ``--model tests.zoo.timm_real:convnext_atto``.

timm 1.0 (installed with ``--no-deps``, see scripts/setup.sh) imports
torchvision at import time, for its data transforms
(``torchvision.transforms``, subclassed at module level), datasets and
``torchvision.ops.misc.FrozenBatchNorm2d`` (checked with ``isinstance``);
building a model such as ConvNeXt never calls torchvision. torchvision cannot
be installed here (its compiled ops do not load with the CPU torch; see
FACTS.md), so :func:`import_timm` puts a stand-in ``torchvision`` in
``sys.modules`` for the duration of ``import timm`` and removes it after:

- every name looked up in the stand-in is a placeholder class: it can be
  subclassed, used as a dict key or in ``isinstance`` (never true), and
  *raises* ``ModuleNotFoundError`` naming torchvision when called, so any
  code path that really needs torchvision (timm's transforms, datasets,
  FrozenBatchNorm) fails loudly;
- after the import, ``import torchvision`` fails again as before.

Weights are random (timm's own initialisation, seeded); nothing is
downloaded (``pretrained=False``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

NEEDED = "torchvision is not installed here (it does not load with this CPU torch); timm needed it for"


class _Absent(type):
    """The type of every stand-in name: attributes are more stand-ins; calling one raises."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _absent(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise ModuleNotFoundError(f"{NEEDED} {cls.__qualname__}", name="torchvision")


def _absent(qualname: str) -> type:
    return _Absent(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _absent(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import torchvision[.anything]`` with stand-in modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0+edgeprune-stand-in"
        return module

    def exec_module(self, module):
        return None


def available() -> bool:
    return importlib.util.find_spec("timm") is not None


def import_timm():
    """``timm``, imported with the torchvision stand-in (see the module docstring)."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    real = importlib.util.find_spec("torchvision") is not None
    finder = _Finder()
    if not real:
        sys.meta_path.insert(0, finder)
    try:
        return importlib.import_module("timm")
    finally:
        if not real:
            sys.meta_path.remove(finder)
            for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
                del sys.modules[name]


def _create(name: str, **kwargs):
    import torch

    timm = import_timm()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, **kwargs).eval()


def convnext_atto():
    """timm's smallest ConvNeXt (3.7 M parameters): LayerNorm2d and channels-last LayerNorm, layer scale."""
    return _create("convnext_atto", num_classes=10)


def convnext_atto_channels_last():
    """The same with ``conv_mlp=False``: blocks permute to NHWC, channels-last ``nn.LayerNorm``, Linear MLPs."""
    return _create("convnext_atto", num_classes=10, conv_mlp=False)
