"""Run an artifact on this machine: one registry of host runners, keyed by the format table's runtime.

Every stage that runs a file here goes through :func:`host_runner`: the
export checks each step against the original, the on-board check computes
the host's reference outputs (:func:`edgeprune.ship.check.host_outputs`),
deploy prepares the held-out inputs the board runs (:func:`model_inputs`).
A runtime is found by name (:data:`HOST_RUNNERS`: ``onnxruntime``,
``litert``), as the format table names it; a file's suffix names it when no
runtime is given.

Each runner offers the two views a stage needs:

- ``model_space(x_nchw)``: float NCHW in, float outputs out in ONNX's order
  and layout (TFLite's NHWC and (u)int8 quantization undone): what the
  export compares with PyTorch;
- ``raw(x)``: the artifact's own input (its layout and dtype) in, its own
  outputs out, batched as the board's agent batches them: what the on-board
  check compares with the board.

Example::

    run = host_runner("model.tflite")
    outputs = run.model_space(x_nchw)
    board_inputs = model_inputs("model.tflite", x_nchw)   # NHWC, quantized as the file's input is
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeprune.errors import ExportError
from edgeprune.export.onnx import ORT_TYPES, onnx_session, run_onnx
from edgeprune.export.tflite import TFLiteRunner, interpreter, quantize_input

SUFFIX_RUNTIME = {".onnx": "onnxruntime", ".tflite": "litert"}


def _merge(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    """Per-batch outputs -> one array per output, as the agent's ``run`` merges them."""
    if len(parts) == 1:
        return [np.asarray(a) for a in parts[0]]
    out = []
    for k in range(len(parts[0])):
        arrs = [np.asarray(p[k]) for p in parts]
        out.append(np.concatenate(arrs) if arrs[0].ndim else np.stack(arrs))
    return out


class OnnxRunner:
    """ONNX Runtime, one CPU thread (``emulate_qdq``: see :func:`edgeprune.export.onnx.onnx_session`)."""

    def __init__(self, path: Path, *, like=None, emulate_qdq: bool = False) -> None:
        self.path = Path(path)
        self.session = onnx_session(self.path, emulate_qdq=emulate_qdq)

    def input_spec(self) -> tuple[str, list, np.dtype]:
        ins = self.session.get_inputs()
        if len(ins) != 1:
            raise ExportError(f"{self.path.name}: models with one input are supported; it has {len(ins)}")
        shape = [d if isinstance(d, int) and d > 0 else None for d in ins[0].shape]
        return ins[0].name, shape, np.dtype(ORT_TYPES.get(ins[0].type, "float32"))

    def model_space(self, x_nchw: np.ndarray) -> list[np.ndarray]:
        return run_onnx(self.session, x_nchw)

    def inputs(self, x_nchw: np.ndarray) -> np.ndarray:
        return np.asarray(x_nchw, np.float32).astype(self.input_spec()[2])

    def raw(self, x: np.ndarray, batch: int) -> list[np.ndarray]:
        name = self.input_spec()[0]
        return _merge([self.session.run(None, {name: x[i:i + batch]}) for i in range(0, len(x), batch)])


class LiteRTRunner:
    """LiteRT (ai-edge-litert), one thread; float views through :class:`edgeprune.export.tflite.TFLiteRunner`."""

    def __init__(self, path: Path, *, like=None, emulate_qdq: bool = False) -> None:
        self.path = Path(path)
        self.float_view = TFLiteRunner(self.path, like=like)
        # raw() has an interpreter of its own: the float view's signature runner keeps
        # views of its tensors, and LiteRT refuses invoke() while they are alive
        self.it = interpreter(self.path)

    def input_spec(self) -> tuple[str, list, np.dtype]:
        ins = self.it.get_input_details()
        if len(ins) != 1:
            raise ExportError(f"{self.path.name}: models with one input are supported; it has {len(ins)}")
        return ins[0]["name"], [int(v) for v in ins[0]["shape"]], np.dtype(ins[0]["dtype"])

    def model_space(self, x_nchw: np.ndarray) -> list[np.ndarray]:
        return self.float_view(x_nchw)

    def inputs(self, x_nchw: np.ndarray) -> np.ndarray:
        x = np.asarray(x_nchw, dtype=np.float32)
        det = self.it.get_input_details()[0]
        if x.ndim == 4 and tuple(det["shape"][1:]) != tuple(x.shape[1:]):
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return quantize_input(x, det)

    def raw(self, x: np.ndarray, batch: int) -> list[np.ndarray]:
        index = self.it.get_input_details()[0]["index"]
        parts = []
        for i in range(0, len(x), batch):
            self.it.set_tensor(index, x[i:i + batch])
            self.it.invoke()
            parts.append([self.it.get_tensor(d["index"]).copy() for d in self.it.get_output_details()])
        return _merge(parts)


HOST_RUNNERS = {"onnxruntime": OnnxRunner, "litert": LiteRTRunner}


def host_runner(path: str | os.PathLike[str], *, runtime: str | None = None, like=None, emulate_qdq: bool = False):
    """The runner for ``path`` on this machine: ``runtime`` (the format table's name) or the file's suffix's."""
    path = Path(path)
    name = runtime or SUFFIX_RUNTIME.get(path.suffix.lower())
    if name not in HOST_RUNNERS:
        raise ExportError(f"{path.name}: no runtime on this computer runs "
                          f"'{name or path.suffix or 'a file without extension'}' (it runs .onnx and .tflite)")
    return HOST_RUNNERS[name](path, like=like, emulate_qdq=emulate_qdq)


def model_inputs(path: str | os.PathLike[str], x_nchw) -> np.ndarray:
    """NCHW float inputs as the artifact takes them: TFLite's NHWC and (u)int8 quantization, ONNX's dtype."""
    return host_runner(path).inputs(x_nchw)
