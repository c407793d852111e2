"""The on-board check: the artifact's outputs on the board against the host's, per output tensor.

The host runs the SAME artifact with the same runtime family (ONNX Runtime for
``.onnx``, LiteRT for ``.tflite``) on the held-out inputs
(:func:`edgeprune.ship.check.host_outputs`); the board runs it through the
agent's ``run`` command. The two must agree within a tolerance that fits the
artifact's precision (:data:`TOLERANCES`): the same file on another CPU
differs only by kernel rounding, so a wrong file, a broken runtime, swapped
layouts or stale weights fail by orders of magnitude more.

Example::

    report = compare_outputs(ref, board_outputs, precision="fp32")
    report["passed"], report["reason"]   # (False, 'output 0: max abs error 0.05 > 0.00041 allowed ...')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgeprune.checks.agreement import cosine
from edgeprune.errors import ShipError


@dataclass(frozen=True)
class Tolerance:
    """|board - host| <= atol (int_atol for integer outputs) + rtol * max|host|, per tensor."""

    atol: float
    rtol: float
    int_atol: float  # in quantization steps (LSB) for int8/uint8 outputs
    min_cosine: float  # float outputs only (integer ones carry zero-point offsets)


# Chosen from what the same file does on other kernels: fp32 differs by summation
# order (~1e-6 relative), fp16 by half-precision rounding (~1e-3), int8 by a
# requantization step or two. A different model differs by far more than these.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, int_atol=0, min_cosine=0.99999),
    "fp16": Tolerance(atol=1e-3, rtol=1e-2, int_atol=1, min_cosine=0.9995),
    "int8": Tolerance(atol=1e-2, rtol=5e-2, int_atol=2, min_cosine=0.995),
}

def tolerance(precision: str) -> Tolerance:
    try:
        return TOLERANCES[precision]
    except KeyError:
        raise ShipError(
            f"no output tolerance for precision '{precision}' (known: {', '.join(TOLERANCES)})"
        ) from None



def compare_outputs(
    reference: list[np.ndarray], board: list[np.ndarray], *, precision: str
) -> dict[str, Any]:
    """Per output tensor: shape, dtype, max abs error against its limit, cosine; and a verdict.

    Returns ``{"passed", "reason", "precision", "tolerance", "samples", "outputs": [...]}``
    (JSON-serialisable); ``reason`` is the first failure, one line.
    """
    tol = tolerance(precision)
    rows: list[dict[str, Any]] = []
    reason = None
    if len(reference) != len(board):
        reason = f"{len(reference)} outputs on the host, {len(board)} on the board"
    for i, (r, b) in enumerate(zip(reference, board, strict=False)):
        row: dict[str, Any] = {"index": i, "shape": list(r.shape), "dtype": r.dtype.str,
                               "max_abs": None, "limit": None, "cosine": None, "passed": False}
        why = None
        if b.shape != r.shape:
            why = f"shape {list(b.shape)} on the board, {list(r.shape)} on the host"
        elif b.dtype != r.dtype:
            why = f"dtype {b.dtype} on the board, {r.dtype} on the host"
        else:
            rf, bf = r.astype(np.float64), b.astype(np.float64)
            fin = np.isfinite(rf)
            if np.any(~np.isfinite(bf) & fin) or np.any(rf[~fin] != bf[~fin]):
                why = "values not finite on the board where the host's are"
            else:
                integer = np.issubdtype(r.dtype, np.integer)
                scale = float(np.abs(rf[fin]).max()) if fin.any() else 0.0
                limit = (tol.int_atol if integer else tol.atol) + tol.rtol * scale
                max_abs = float(np.abs(rf[fin] - bf[fin]).max()) if fin.any() else 0.0
                row.update(max_abs=max_abs, limit=limit)
                if max_abs > limit:
                    why = f"max abs error {max_abs:.4g} > {limit:.4g} allowed ({precision} tolerance)"
                if not integer:
                    cos = cosine(rf[fin], bf[fin])
                    row["cosine"] = cos
                    if why is None and cos < tol.min_cosine:
                        why = f"cosine {cos:.6f} < {tol.min_cosine} ({precision} tolerance)"
        row["passed"] = why is None
        if why:
            row["reason"] = why
            reason = reason or f"output {i}: {why}"
        rows.append(row)
    samples = int(reference[0].shape[0]) if reference and reference[0].ndim else 0
    return {"passed": reason is None, "reason": reason, "precision": precision,
            "tolerance": asdict(tol), "samples": samples, "outputs": rows}
