"""Parameter and MAC counts (torch-pruning's counter: one multiply-add = one MAC).

Example::

    macs, params = count_macs_params(model, (1, 3, 224, 224))
"""

from __future__ import annotations

import contextlib
import io

from edgeprune._threads import one_thread
from edgeprune.errors import require

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.


def count_macs_params(model, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(macs, params)`` of ``model`` on one input of ``input_shape``."""
    import torch

    tp = require("torch_pruning", "torch", "counting MACs")

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), one_thread():
        macs, params = tp.utils.count_ops_and_params(model, torch.zeros(*input_shape))
    return int(macs), int(params)


def calibrate_batchnorm(model, input_shape: tuple[int, ...], *, batches: int = 2, seed: int = 0):
    """Set every BatchNorm's running statistics from seeded noise inputs; weights untouched.

    A randomly initialised deep CNN in eval mode (running mean 0, var 1) lets
    activations shrink layer after layer: yolo-small's outputs were its final
    biases alone, which makes any numerical check on it vacuous. Calibrating
    the statistics (as training would) keeps every layer's output at unit
    scale. Spatial size is capped at 128 to keep it fast.
    """
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model
    n, c, h, w = input_shape
    shape = (4, c, min(h, 128), min(w, 128))
    gen = torch.Generator().manual_seed(seed)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(*shape, generator=gen))
    for bn, mom in zip(bns, momenta, strict=True):
        bn.momentum = mom
    return model.eval()
