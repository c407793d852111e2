"""ONNX INT8: post-training static quantization to a Q/DQ graph.

Two quantizers, two schemes:

- ``quantizer="ort"``: ONNX Runtime's ``quantize_static`` after
  ``quant_pre_process`` (shape inference + graph optimisation), QDQ format,
  per-channel int8 weights, MinMax calibration.
- ``quantizer="nncf"``: NNCF's ``nncf.quantize`` on the ONNX model
  (``QuantizationPreset.PERFORMANCE``: symmetric, zero-points 0).

- ``scheme="tensorrt"`` (profiles whose runtime is TensorRT, e.g.
  jetson-orin-nano): int8 activations *and* weights, symmetric, every
  zero-point 0 -- TensorRT builds INT8 engines only from symmetric Q/DQ.
- ``scheme="cpu"`` (ONNX Runtime on a CPU): uint8 asymmetric activations,
  int8 symmetric per-channel weights -- the fastest INT8 on x86/ARM CPUs.

The default quantizer depends on the scheme (:data:`DEFAULT_QUANTIZER`), as
measured by benchmarks/bench_export.py on the same 128 calibration crops:

- TensorRT scheme -> NNCF: the board builds its own engine from the Q/DQ
  graph, so what matters here is agreement, and NNCF keeps far more of it
  (MobileNetV2: top-1 0.89 vs 0.67, cosine 0.987 vs 0.950 for ORT's MinMax).
- CPU scheme -> ONNX Runtime's quantize_static: the model runs on ORT, and
  ORT's own Q/DQ layout runs 3.3x faster there than NNCF's (MobileNetV2,
  1 thread: 4.4 vs 14.7 ms; NNCF's is slower than fp32) at agreement
  that still passes the INT8 thresholds (top-1 0.83, cosine 0.978; NNCF
  0.92 / 0.994).

``quantizer="ort"|"nncf"`` (``--quantizer``) overrides it.

Detectors (``float_tail=True``, set by the export for ``task == "detect"``):
the ops between the last conv/Gemm/MatMul and each output -- the decode:
sigmoid, the concat of levels, the split into boxes and scores, anchor
arithmetic -- stay float (:func:`float_tail`), so boxes in pixels and
probabilities never share an INT8 scale inside the graph; the convs are
quantized as usual. Both TensorRT and ONNX Runtime run such mixed graphs
(a Q/DQ graph is mixed by construction).

For the TensorRT scheme NNCF's unsigned (uint8, zero-point 0) quantizers of
non-negative tensors are rewritten to int8 (:func:`_uint8_to_int8`):
TensorRT takes int8 Q/DQ only. Zero-points of the result can be checked
with :func:`zero_points`.

Example::

    quantize_onnx(Path("m.fp32.onnx"), Path("m.int8.onnx"), calib, scheme="tensorrt")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgeprune._paths import atomic_file
from edgeprune.errors import ExportError, require

# Lazy imports: the imports inside functions below load onnx, onnxruntime, which importing this module does not;
# they load only when a function that needs them runs.

QUANTIZERS = ("ort", "nncf")
SCHEMES = ("tensorrt", "cpu")
DEFAULT_QUANTIZER = {"tensorrt": "nncf", "cpu": "ort"}


def scheme_for_runtime(runtime: str) -> str:
    return "tensorrt" if runtime == "tensorrt" else "cpu"


def _input_name(path: Path) -> str:
    onnx = require("onnx", "onnx", "ONNX quantization")
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return next(i.name for i in graph.input if i.name not in inits)


def float_tail(path: Path) -> list[str]:
    """Names of the nodes between the last weighted op (Conv, Gemm, MatMul) and the graph outputs."""
    onnx = require("onnx", "onnx", "ONNX quantization")
    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    stop = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    tail, stack = set(), [o.name for o in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.op_type in stop or node.name in tail:
            continue
        tail.add(node.name)
        stack.extend(node.input)
    return sorted(tail)


def _ort(src: Path, dst: Path, calib: np.ndarray, scheme: str, exclude: list[str]) -> dict:
    q = require("onnxruntime.quantization", "quantize", "ONNX INT8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = _input_name(src)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calib[i : i + 1] for i in range(len(calib)))

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {name: x}

    symmetric = scheme == "tensorrt"
    with tempfile.TemporaryDirectory(prefix="edgeprune-q-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the original if it fails
            pre = src
        q.quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QInt8 if symmetric else q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
            # TensorRT: int8 Q/DQ only, biases stay float (it fuses them itself)
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           "QuantizeBias": not symmetric},
        )
    return {"quantizer": "onnxruntime quantize_static (QDQ, per-channel, MinMax)", "scheme": scheme,
            "activations": "int8 symmetric" if symmetric else "uint8 asymmetric", "float_nodes": len(exclude)}


def _nncf(src: Path, dst: Path, calib: np.ndarray, scheme: str, exclude: list[str]) -> dict:
    onnx = require("onnx", "quantize", "ONNX INT8 quantization")
    nncf = require("nncf", "quantize", "NNCF INT8 quantization")
    name = _input_name(src)
    model = onnx.load(str(src))
    dataset = nncf.Dataset([calib[i : i + 1] for i in range(len(calib))], lambda x: {name: x})
    preset = nncf.QuantizationPreset.PERFORMANCE if scheme == "tensorrt" else nncf.QuantizationPreset.MIXED
    ignored = nncf.IgnoredScope(names=exclude, validate=False) if exclude else None
    qmodel = nncf.quantize(model, dataset, preset=preset, subset_size=len(calib),
                           **({"ignored_scope": ignored} if ignored else {}))
    changed = _uint8_to_int8(qmodel) if scheme == "tensorrt" else 0
    onnx.save(qmodel, str(dst))
    return {"quantizer": f"nncf {nncf.__version__} ({preset.value} preset)", "scheme": scheme,
            "uint8_requantized_to_int8": changed, "float_nodes": len(exclude)}


def _uint8_to_int8(model) -> int:
    """Rewrite unsigned zero-point-0 Q/DQ pairs as signed int8 (TensorRT takes int8 only).

    NNCF quantizes non-negative tensors (a [0, 1] image input, post-ReLU)
    as uint8 with zero-point 0 and no way to force signedness on its CPU
    hardware config. [0, 255 s] is covered by int8 [0, 127] with scale
    s * 255 / 127: the same range at half the resolution, which the
    agreement check then measures. Returns how many quantizers changed.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    pairs = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is not None and numpy_helper.to_array(zp).dtype == np.uint8:
                pairs[node.input[2]] = node.input[1]
    for zp_name in pairs:
        zp = numpy_helper.to_array(inits[zp_name])
        if np.any(zp != 0):
            raise ExportError(f"quantizer {zp_name} is asymmetric (zero-point != 0): not TensorRT-compatible")
        inits[zp_name].CopyFrom(numpy_helper.from_array(np.zeros(zp.shape, np.int8), zp_name))
    for scale_name in set(pairs.values()):
        scale = numpy_helper.to_array(inits[scale_name])
        inits[scale_name].CopyFrom(numpy_helper.from_array((scale * (255.0 / 127.0)).astype(scale.dtype), scale_name))
    # recorded uint8 value types would now contradict the graph
    keep = [v for v in model.graph.value_info if v.type.tensor_type.elem_type != 2]  # 2 = UINT8
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return len(pairs)


def quantize_onnx(src: Path, dst: Path, calib: np.ndarray, *, scheme: str = "cpu",
                  quantizer: str | None = None, float_tail: bool = False) -> dict:
    """Quantize ONNX ``src`` to a Q/DQ INT8 model at ``dst``; returns what was done.

    ``quantizer=None`` picks the scheme's default (:data:`DEFAULT_QUANTIZER`);
    ``float_tail`` keeps the ops after the last weighted op float (detectors).
    """
    quantizer = quantizer or DEFAULT_QUANTIZER.get(scheme, "ort")
    if quantizer not in QUANTIZERS:
        raise ExportError(f"unknown quantizer '{quantizer}': use one of {', '.join(QUANTIZERS)}")
    if scheme not in SCHEMES:
        raise ExportError(f"unknown INT8 scheme '{scheme}': use one of {', '.join(SCHEMES)}")
    if calib is None or len(calib) == 0:
        raise ExportError("ONNX INT8 quantization needs calibration samples (--calib)")
    dst = Path(dst)
    try:
        exclude = globals()["float_tail"](Path(src)) if float_tail else []
        with atomic_file(dst) as tmp:
            info = (_ort if quantizer == "ort" else _nncf)(Path(src), tmp, np.ascontiguousarray(calib, np.float32),
                                                          scheme, exclude)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"INT8 quantization of {src} with {quantizer} failed: {type(exc).__name__}: {exc}") from exc
    info["nonzero_zero_points"] = sum(1 for z in zero_points(dst).values() if np.any(z != 0))
    return info


def zero_points(path: Path) -> dict[str, np.ndarray]:
    """Every QuantizeLinear/DequantizeLinear zero-point initializer of ``path``, by name."""
    onnx = require("onnx", "onnx", "reading ONNX models")
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = node.input[2]
            if zp in inits:
                out[zp] = numpy_helper.to_array(inits[zp])
    return out


def convert_int8(req) -> dict:
    """Format-table converter: ONNX fp32 -> ONNX INT8 Q/DQ (options: scheme, quantizer)."""
    return quantize_onnx(
        Path(req.source), req.dest, req.calib,
        scheme=req.options.get("scheme", "cpu"),
        quantizer=req.options.get("quantizer"),
        float_tail=bool(req.options.get("float_tail")),
    )
