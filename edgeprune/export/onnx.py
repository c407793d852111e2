"""PyTorch -> ONNX, and running an ONNX file with ONNX Runtime on this machine.

The TorchScript exporter (``dynamo=False``) at opset 17 is used: it is fast
(~0.1 s for a small CNN) and gives the opset asked for (the dynamo exporter
silently moves to 18). Shapes are static, batch 1 by default, which is what
TFLite, TensorRT and the Edge TPU want.

Example::

    path = export_onnx(model, (1, 3, 224, 224), Path("out/model.onnx"))
    outs = run_onnx(path, np.zeros((1, 3, 224, 224), np.float32))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeprune._paths import atomic_file
from edgeprune.checks.outputs import flatten
from edgeprune.errors import ExportError, require
from edgeprune.export.detect import split_onnx_outputs

OPSET = 17


def export_onnx(
    model,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    opset: int = OPSET,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (an ``nn.Module``) to ``path`` atomically; returns the path.

    Outputs are named ``output0..N``; the input is ``input``. ``metadata``
    goes into the ONNX ``metadata_props``.
    """
    torch = require("torch", "torch", "ONNX export")
    onnx = require("onnx", "onnx", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(*input_shape)
    with torch.no_grad():
        out = model(dummy)
    n_out = len(flatten(out))  # torch.onnx flattens nested outputs the same way (edgeprune.checks.outputs)
    try:
        with atomic_file(path) as tmp:
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (dummy,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=["input"],
                    output_names=[f"output{i}" for i in range(n_out)],
                    do_constant_folding=True,
                )
            proto = onnx.load(str(tmp))
            if metadata:
                for key, value in metadata.items():
                    entry = proto.metadata_props.add()
                    entry.key, entry.value = key, str(value)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
    except ExportError:
        raise
    except Exception as exc:  # the exporter raises many types; name the step
        raise ExportError(f"ONNX export to {path} failed: {type(exc).__name__}: {exc}") from exc
    return path


# ONNX Runtime's input type names -> numpy dtypes
ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


def onnx_session(path: str | os.PathLike[str], *, threads: int = 1, emulate_qdq: bool = False):
    """An ONNX Runtime CPU session for ``path`` (one intra-op thread by default).

    ``emulate_qdq=True`` runs a Q/DQ graph as written (quantize, dequantize, then the float op)
    instead of fusing it into ONNX Runtime's int8 kernels. Use it to check an INT8 model that
    another runtime will execute (TensorRT on a Jetson computes exact int8 dot products): on x86
    CPUs without VNNI, ORT's int8 kernels use VPMADDUBSW, whose 16-bit intermediate sums saturate
    for signed int8 activations (measured here, AVX2: digits-cnn TensorRT-scheme Q/DQ gave cosine
    0.43 fused and 1.0 emulated), so the fused result would blame the model for this CPU's kernels.
    """
    ort = require("onnxruntime", "onnx", "running ONNX models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if emulate_qdq:
        opts.add_session_config_entry("session.disable_quant_qdq", "1")
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load it: {exc}") from None


def run_onnx(path_or_session, x: np.ndarray, *, emulate_qdq: bool = False) -> list[np.ndarray]:
    """Run an ONNX model (path or session) on ``x`` one sample at a time when its batch is fixed."""
    sess = (path_or_session if hasattr(path_or_session, "run")
            else onnx_session(path_or_session, emulate_qdq=emulate_qdq))
    inp = sess.get_inputs()[0]
    fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
    if fixed_batch and x.shape[0] != fixed_batch:
        parts = [sess.run(None, {inp.name: x[i : i + fixed_batch]}) for i in range(0, x.shape[0], fixed_batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
    return sess.run(None, {inp.name: x})


# -- converters called through the format table (edgeprune.export.formats) ----

def convert_from_torch(req) -> dict:
    """Format-table converter: PyTorch module -> ONNX fp32 at ``req.dest``.

    ``req.options["output_layout"]`` (a detector's pieces, see
    :mod:`edgeprune.export.detect`) makes each piece its own output, so that
    boxes and scores get their own INT8 scales in every later step.
    """
    export_onnx(req.source, req.input_shape, req.dest)
    info = {"opset": OPSET}
    layout = req.options.get("output_layout")
    if layout:
        split_onnx_outputs(req.dest, layout, req.options["output_shapes"])
        info["outputs_split"] = len(layout)
    return info


def convert_fp16(req) -> dict:
    """Format-table converter: ONNX fp32 -> fp16 weights and math, float32 I/O.

    Uses ONNX Runtime's own converter (``onnxruntime.transformers.float16``,
    shipped with onnxruntime: no extra package) with ``keep_io_types`` so the
    board's pre/post-processing stays float32; ops ORT has no fp16 CPU kernel
    for stay fp32 behind Cast nodes (its default block list).
    """
    onnx = require("onnx", "onnx", "ONNX fp16 conversion")
    f16 = require("onnxruntime.transformers.float16", "onnx", "ONNX fp16 conversion")
    proto = onnx.load(str(req.source))
    try:
        half = f16.convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
        # the converter appends its I/O Casts at the end of the node list: restore topological order
        from onnxruntime.transformers.onnx_model import OnnxModel

        wrapped = OnnxModel(half)
        wrapped.topological_sort()
        half = wrapped.model
        onnx.checker.check_model(half)
    except Exception as exc:
        raise ExportError(f"ONNX fp16 conversion of {req.source} failed: {type(exc).__name__}: {exc}") from exc
    with atomic_file(req.dest) as tmp:
        onnx.save(half, str(tmp))
    return {"converter": "onnxruntime.transformers.float16 (keep_io_types=True)"}
