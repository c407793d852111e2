"""A model's outputs as one flat list, in one documented order, wherever outputs are compared.

Order: depth first; tuples and lists in their order; dicts in insertion
order (the order ``torch.onnx.export`` gives their values as graph
outputs), so flattened PyTorch output k is ONNX output k. Non-tensor leaves
(None, ints) are skipped.

Example::

    flatten_outputs((t0, {"boxes": t1, "feats": [t2, t3]}))   # [t0, t1, t2, t3]
"""

from __future__ import annotations

from typing import Any


def flatten_outputs(out: Any) -> list:
    """Every tensor (or array) in ``out``, depth first (see the module docstring)."""
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in flatten_outputs(o)]
    if hasattr(out, "shape"):
        return [out.detach().cpu() if hasattr(out, "detach") else out]
    return []
