"""The on-board check's two sides: the host's reference outputs, and the board's outputs read as untrusted.

The comparison itself (tolerances per precision, per output tensor) is
:mod:`edgeprune.checks.onboard`, the checks' room. Here: the host runs the
SAME artifact with the same runtime family (:func:`host_outputs`), and
what the board sends back is decoded as untrusted (:func:`decode_board_outputs`,
:func:`load_outputs`): dtypes from a fixed little-endian list, shapes of
non-negative ints, byte counts that match the shapes, a total under a cap,
``.npz`` entries stored uncompressed (no zip bomb) and loaded without pickle.

Example::

    ref = host_outputs("model.onnx", x)
    report = compare_outputs(ref, board_outputs, precision="fp32")
    report["passed"], report["reason"]   # (False, 'output 0: max abs error 0.05 > 0.00041 allowed ...')
"""

from __future__ import annotations

import base64
import binascii
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.checks.onboard import TOLERANCES, Tolerance, compare_outputs, tolerance
from edgeprune.errors import AgentError, ExportError, ShipError
from edgeprune.export.runners import SUFFIX_RUNTIME, host_runner
from edgeprune.safeload import np_load

__all__ = ["TOLERANCES", "Tolerance", "compare_outputs", "decode_board_outputs", "host_outputs",
           "load_outputs", "save_outputs", "tolerance"]


# What a board may send: little-endian numeric dtypes (numpy's dtype.str).
DTYPES = frozenset(
    {"<f2", "<f4", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1"}
)
MAX_OUTPUTS = 1000


# -- the host's reference ----------------------------------------------------------


def _fit(path: Path, x: np.ndarray, shape: list, dtype: np.dtype, name: str) -> int:
    """The batch size to feed, after checking ``x`` fits the input (as the agent checks it)."""
    if x.dtype != dtype:
        raise ShipError(f"{path.name}: check inputs have dtype {x.dtype}; its input {name} takes {dtype}")
    if x.ndim != len(shape) or x.ndim == 0 or any(
        s is not None and s != v for s, v in zip(shape[1:], x.shape[1:], strict=False)
    ):
        raise ShipError(
            f"{path.name}: check inputs have shape {list(x.shape)}; its input {name} takes {shape}"
        )
    batch = shape[0] or len(x)
    if len(x) == 0 or len(x) % batch:
        raise ShipError(f"{path.name}: {len(x)} check inputs do not split into batches of {batch}")
    return batch


def host_outputs(artifact: str | os.PathLike[str], inputs: np.ndarray, *, runtime: str | None = None) -> list[np.ndarray]:
    """The artifact's raw outputs on this machine, batched exactly as the board's agent does.

    ``inputs`` are what the model takes (dtype and layout of its input); an
    Edge TPU or TensorRT artifact cannot run here: pass the reference yourself.

    Example::

        ref = host_outputs("model.onnx", np.load("heldout.npy"))
    """
    path = Path(artifact)
    x = np.asarray(inputs)
    if runtime in ("edgetpu",) or (runtime == "tensorrt" and path.suffix.lower() != ".onnx"):
        raise ShipError(
            f"{path.name}: the {runtime} runtime does not run on this computer; "
            "pass reference_outputs computed from the artifact it was compiled from"
        )
    if path.suffix.lower() not in SUFFIX_RUNTIME:
        raise ShipError(f"{path.name}: ships .onnx or .tflite files, got '{path.suffix or 'no extension'}'")
    try:
        run = host_runner(path)
        name, shape, dtype = run.input_spec()
    except ExportError as exc:
        raise ShipError(str(exc).replace("models with one input are supported", "the on-board check feeds "
                                         "models with one input")) from None
    return run.raw(x, _fit(path, x, shape, dtype, name))


# -- the board's outputs, untrusted ---------------------------------------------------


def _shape(value: Any, where: str, i: int) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) > 16
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in value)
    ):
        raise AgentError(f"{where}: output {i} has no valid shape (a list of at most 16 sizes)")
    return tuple(value)


def decode_board_outputs(
    doc: dict[str, Any],
    *,
    reference: list[np.ndarray],
    where: str,
    file: Path | None = None,
    max_bytes: int | None = None,
) -> tuple[list[np.ndarray], list[str]]:
    """(arrays, names) from the agent's ``run`` document (inline) or its downloaded ``file``.

    Shapes and counts may differ from the reference (the comparison reports
    that); what must hold is the format, and the total under ``max_bytes``
    (default: twice the reference's bytes plus 1 MiB).
    """
    cap = max_bytes if max_bytes is not None else 2 * sum(r.nbytes for r in reference) + 2**20
    outs = doc.get("outputs")
    if not isinstance(outs, list):
        raise AgentError(f"{where}: 'outputs' must be a list")
    if len(outs) > MAX_OUTPUTS:
        raise AgentError(f"{where}: {len(outs)} outputs, more than {MAX_OUTPUTS}; refused")
    described, total = [], 0
    for i, d in enumerate(outs):
        if not isinstance(d, dict):
            raise AgentError(f"{where}: output {i} is not an object")
        if d.get("dtype") not in DTYPES:
            raise AgentError(f"{where}: output {i} has dtype {str(d.get('dtype'))[:20]!r}, not a "
                             "little-endian numeric dtype; refused")
        shape = _shape(d.get("shape"), where, i)
        dtype = np.dtype(d["dtype"])
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        total += nbytes
        if total > cap:
            raise AgentError(f"{where}: outputs would be over {cap} bytes; refused")
        described.append((str(d.get("name", f"output_{i}"))[:200], dtype, shape, nbytes, d.get("data_b64")))
    names = [n for n, *_ in described]
    if file is not None:
        arrays = load_outputs(file, max_bytes=cap)
        if len(arrays) != len(described):
            raise AgentError(f"{where}: the outputs file holds {len(arrays)} arrays, the JSON names {len(described)}")
        for i, (a, (_, dtype, shape, _, _)) in enumerate(zip(arrays, described, strict=True)):
            if a.dtype != dtype or a.shape != shape:
                raise AgentError(f"{where}: output {i} in the file does not match its description")
        return arrays, names
    arrays = []
    for i, (_, dtype, shape, nbytes, data) in enumerate(described):
        if not isinstance(data, str) or len(data) > 4 * (nbytes // 3 + 2):
            raise AgentError(f"{where}: output {i} has {len(data) if isinstance(data, str) else 'no'} "
                             f"inline bytes for {nbytes} expected; refused")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise AgentError(f"{where}: output {i} is not valid base64") from None
        if len(raw) != nbytes:
            raise AgentError(f"{where}: output {i} has {len(raw)} bytes, its shape needs {nbytes}")
        arrays.append(np.frombuffer(raw, dtype).reshape(shape).copy())
    return arrays, names


def save_outputs(path: str | os.PathLike[str], arrays: list[np.ndarray]) -> Path:
    """Write ``arrays`` as ``output_0 .. output_K`` in an uncompressed ``.npz``."""
    path = Path(path)
    with open(path, "wb") as fh:
        np.savez(fh, **{f"output_{i}": np.asarray(a) for i, a in enumerate(arrays)})
    return path


def load_outputs(path: str | os.PathLike[str], *, max_bytes: int) -> list[np.ndarray]:
    """Read an ``.npz`` of ``output_0 .. output_K`` that a board wrote (untrusted)."""
    where = f"outputs file {Path(path).name}"
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise AgentError(f"{where}: cannot read it: {exc}") from None
    names = [i.filename for i in infos]
    if len(names) > MAX_OUTPUTS or sorted(names) != sorted(f"output_{k}.npy" for k in range(len(names))):
        raise AgentError(f"{where}: unexpected entries {names[:5]}; refused")
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        raise AgentError(f"{where}: compressed entries; refused (the agent writes them stored)")
    if sum(i.file_size for i in infos) > max_bytes:
        raise AgentError(f"{where}: more than {max_bytes} bytes; refused")
    try:
        with np_load(path, error=AgentError) as z:
            return [np.array(z[f"output_{k}"]) for k in range(len(names))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, AgentError) as exc:  # AgentError: a pickle in it
        raise AgentError(f"{where}: cannot read it: {str(exc)[:200]}") from None
