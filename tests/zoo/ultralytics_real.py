"""Factories for the real Ultralytics package's models: ``--model tests.zoo.ultralytics_real:yolov8n``.

Also what a user who trained a detector has: :func:`save_checkpoint` writes a
``best.pt`` the way Ultralytics' trainer does (its checkpoint dict, then its
own ``strip_optimizer``), loaded back with ``YOLO("best.pt").model``.

Ultralytics is imported through :func:`edgeprune.models.ultra.import_ultralytics`
(this machine has no torchvision; see that module), the one way edgeprune
itself imports it. Settings go to a temporary folder, never the user's home.
"""

from __future__ import annotations

from edgeprune.models import ultra

available = ultra.available


def import_ultralytics():
    """``ultralytics.nn.tasks``, imported without torchvision (:mod:`edgeprune.models.ultra`)."""
    return ultra.import_ultralytics("ultralytics.nn.tasks")


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


def yolo26n():
    return _build("yolo26n.yaml")


def trained_like(model, input_shape: tuple[int, ...]):
    """Give a freshly built detector two traits of trained weights (it is NOT trained), in place.

    A model straight from its YAML is no stand-in for a user's trained one in
    a numerical check: its deep random layers shrink activations to nothing
    in eval mode, and its class biases sit at the initial prior (every score
    ~1e-4, which any INT8 sigmoid rounds to 0). So: BatchNorm statistics are
    measured on real photo crops (edgeprune's built-in samples, as training
    on photos would set them), and class biases are centred at -2, so that
    some anchors score high. Weights otherwise stay random.
    """
    import torch
    from torch import nn

    from edgeprune.export.calib import builtin_samples

    photos = torch.from_numpy(builtin_samples(tuple(input_shape), 16, split="calib", normalize="unit").data)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the batches
    model.train()
    with torch.no_grad():
        for i in range(0, len(photos), 8):
            model(photos[i : i + 8])
    model.eval()
    for head in model.modules():
        if not (hasattr(head, "nc") and hasattr(head, "reg_max")):  # a detection head
            continue
        for name in ("cv3", "one2one_cv3"):
            for branch in getattr(head, name, None) or []:
                if isinstance(branch[-1], nn.Conv2d):
                    branch[-1].bias.data[:] = -2.0
    return model


def save_checkpoint(model, path, *, cfg: str, imgsz: int) -> None:
    """Write ``path`` as Ultralytics' trainer saves ``best.pt``: its checkpoint dict, then its own strip_optimizer."""
    import copy
    import datetime

    import torch

    import_ultralytics()
    from ultralytics import __version__
    from ultralytics.utils.torch_utils import strip_optimizer

    ckpt = {
        "epoch": 0,
        "best_fitness": 0.0,
        "model": None,  # the trainer saves the EMA copy, in half precision
        "ema": copy.deepcopy(model).half(),
        "updates": 1,
        "optimizer": None,
        "train_args": {"model": cfg, "imgsz": imgsz, "task": "detect", "data": "user.yaml"},
        "train_metrics": {},
        "date": datetime.datetime.now().isoformat(),
        "version": __version__,
    }
    torch.save(ckpt, str(path))
    strip_optimizer(str(path))
