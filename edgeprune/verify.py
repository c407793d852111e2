"""Agreement between a reference model's outputs and a converted one's.

Every step (pruned vs original, exported vs PyTorch, quantized vs float) is
checked with the same four numbers, computed over held-out inputs:

- ``top1``: fraction of samples whose arg-max class agrees (classifiers: the
  first output with shape ``(N, C)``); for other outputs, the fraction of
  samples whose cosine similarity is at least 0.99.
- ``max_abs`` / ``mean_abs``: absolute error over all outputs.
- ``cosine``: mean per-sample cosine similarity of all outputs flattened.

Example::

    >>> import numpy as np

from edgeprune.errors import ExportError
    >>> a = [np.array([[1.0, 2.0], [3.0, 1.0]])]
    >>> agreement(a, a)["top1"]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeprune.errors import ExportError


def _as_list(outputs) -> list[np.ndarray]:
    if isinstance(outputs, np.ndarray):
        return [outputs]
    return [np.asarray(o) for o in outputs]


def agreement(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict[str, float]:
    """Compare two lists of outputs (same shapes, batch first).

    A converted model whose outputs do not line up with the reference's
    (another count, another shape) is an :class:`~edgeprune.errors.ExportError`.
    """
    ref, cand = _as_list(reference), _as_list(candidate)
    if len(ref) != len(cand):
        raise ExportError(f"{len(ref)} reference outputs but {len(cand)} candidate outputs: "
                          "the converted model's outputs do not match the original's")
    for i, (r, c) in enumerate(zip(ref, cand, strict=True)):
        if r.shape != c.shape:
            raise ExportError(f"output {i}: shape {c.shape} differs from the reference's {r.shape}")
    n = ref[0].shape[0]
    rf = np.concatenate([r.reshape(n, -1).astype(np.float64) for r in ref], axis=1)
    cf = np.concatenate([c.reshape(n, -1).astype(np.float64) for c in cand], axis=1)
    diff = np.abs(rf - cf)
    denom = np.linalg.norm(rf, axis=1) * np.linalg.norm(cf, axis=1)
    cos = np.where(denom > 0, (rf * cf).sum(axis=1) / np.maximum(denom, 1e-300), 1.0)
    first = ref[0]
    if first.ndim == 2 and first.shape[1] > 1:
        top1 = float(np.mean(first.argmax(axis=1) == cand[0].argmax(axis=1)))
    else:
        top1 = float(np.mean(cos >= 0.99))
    return {
        "top1": top1,
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "cosine": float(cos.mean()),
        "samples": int(n),
    }
