"""A zoo of model code as popular libraries write it (our own code, random weights, offline).

Each entry reproduces block types users bring from model zoos: Ghost modules
(cat + slice), ViT attention (qkv reshaped into heads), ConvNeXt (channels-last
LayerNorm, Linear pointwise convs, layer scale), YOLOv8/YOLO11 as Ultralytics
builds them (C2f, C3k2, C2PSA, the ``f``/``i`` forward loop, a decoded head),
RegNet (grouped convs + SE), MobileNetV3 (hard-swish, SE) and EfficientNet
(SE, drop-path). ``ZOO`` maps a short name to its ``--model`` factory and a
small input shape for tests.
"""

from __future__ import annotations

ZOO: dict[str, tuple[str, tuple[int, ...]]] = {
    "ghostnet": ("tests.zoo.ghost:ghostnet", (1, 3, 64, 64)),
    "vit": ("tests.zoo.vit:vit_tiny", (1, 3, 64, 64)),
    "convnext": ("tests.zoo.convnext:convnext_tiny", (1, 3, 64, 64)),
    "yolov8n": ("tests.zoo.yolo_ultra:yolov8n", (1, 3, 128, 128)),
    "yolo11n": ("tests.zoo.yolo_ultra:yolo11n", (1, 3, 128, 128)),
    "regnet": ("tests.zoo.regnet:regnety_400mf_like", (1, 3, 64, 64)),
    "mobilenetv3": ("tests.zoo.mobilenetv3:mobilenet_v3_small", (1, 3, 64, 64)),
    "efficientnet": ("tests.zoo.efficientnet:efficientnet_b0_like", (1, 3, 64, 64)),
}


def build(name: str):
    """The zoo model ``name`` in eval mode, seeded."""
    import importlib

    import torch

    spec, _ = ZOO[name]
    mod, fn = spec.split(":")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return getattr(importlib.import_module(mod), fn)().eval()
