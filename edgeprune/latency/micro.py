"""Micro-models: one layer each, in the board's own format and precision, for the latency table.

A table entry is the p50 of a model holding one layer of a given shape, as
the board's runtime runs it, minus the runtime's fixed cost per call (the
batch's baseline model). So a Pi's entries are TFLite INT8 layers run by
LiteRT/XNNPACK, a CPU's are ONNX fp32 layers run by ONNX Runtime.

How each format is built (all offline, no per-model process):

- ONNX fp32: one ``Conv`` (or ``Gemm`` for a Linear on one token, ``MatMul``
  + ``Add`` on several), written with ``onnx.helper`` (opset 17, as the
  exporter writes whole models);
- ONNX fp16: that model through the exporter's own fp16 converter
  (:func:`edgeprune.export.onnx.convert_fp16`, float32 I/O);
- ONNX int8: that model through the exporter's own quantizer
  (:func:`edgeprune.export.quantize.quantize_onnx`: Q/DQ, per-channel), with
  a few random calibration samples (timing does not depend on the values);
- TFLite fp32/fp16/int8: all shapes of a call converted in ONE TensorFlow
  process (this one): a ``tf.function`` with the layer (``conv2d``,
  ``depthwise_conv2d``, ``matmul``) and ``TFLiteConverter`` (full integer
  with a random representative set for int8, int8 I/O: the layer alone, no
  quantize/dequantize at its edges). This is ~0.2 s a layer, where onnx2tf
  takes 5-7 s a model. Padding follows what onnx2tf makes of a PyTorch conv:
  ``SAME`` where it is equivalent (stride 1, symmetric pads of (k-1)/2),
  otherwise an explicit ``PAD`` then a ``VALID`` conv
  (``tests/test_latency_micro.py`` compares the operators with a real
  onnx2tf conversion).

Weights repeat a 4,099-value random pattern: the runtime cannot exploit it
(no value-dependent kernels on these paths), and gzip shrinks the batch
archive to a fraction of the raw size.

Example::

    files = build_micro_models([LayerShape("conv", 64, 32, (3, 3), hw=(56, 56), padding=(1, 1))],
                               fmt="onnx", precision="fp32", folder=Path("micro"))
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edgeprune.errors import ExportError, require
from edgeprune.export.formats import ConvertRequest, format_spec
from edgeprune.export.onnx import convert_fp16
from edgeprune.export.quantize import quantize_onnx
from edgeprune.export.tflite import tflite_bytes
from edgeprune.latency.layers import LayerShape

# Lazy imports: the imports inside functions below load onnx, which importing this module does not;
# they load only when a function that needs them runs.

SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
OPSET = 17
_PATTERN = 4099


def _values(n: int, seed: int = 0, scale: float = 0.05) -> np.ndarray:
    pattern = np.random.default_rng(seed).standard_normal(_PATTERN).astype(np.float32) * scale
    return np.resize(pattern, n)


def file_name(shape: LayerShape, suffix: str) -> str:
    return hashlib.sha256(shape.key().encode()).hexdigest()[:20] + suffix


def input_shape_nchw(shape: LayerShape) -> tuple[int, ...]:
    if shape.kind == "linear":
        return (1, shape.cin) if shape.hw[0] == 1 else (1, shape.hw[0], shape.cin)
    return (1, shape.cin, *shape.hw)


# -- ONNX ------------------------------------------------------------------------


def onnx_micro(shape: LayerShape, path: Path) -> Path:
    """ONNX fp32 model holding the layer ``shape`` alone."""
    onnx = require("onnx", "onnx", "building latency micro-models")
    from onnx import TensorProto, helper, numpy_helper

    x_shape = list(input_shape_nchw(shape))
    inits, nodes = [], []
    if shape.kind == "conv":
        w = _values(shape.cout * (shape.cin // shape.groups) * shape.kernel[0] * shape.kernel[1])
        w = w.reshape(shape.cout, shape.cin // shape.groups, *shape.kernel)
        inits.append(numpy_helper.from_array(w, "w"))
        ins = ["x", "w"]
        if shape.bias:
            inits.append(numpy_helper.from_array(_values(shape.cout, 1), "b"))
            ins.append("b")
        nodes.append(helper.make_node(
            "Conv", ins, ["y"], kernel_shape=list(shape.kernel), strides=list(shape.stride),
            pads=[shape.padding[0], shape.padding[1], shape.padding[0], shape.padding[1]],
            dilations=list(shape.dilation), group=shape.groups,
        ))
        y_shape = [1, shape.cout, *shape.out_hw]
    elif len(x_shape) == 2:  # one token: what torch exports for a classifier's Linear
        inits.append(numpy_helper.from_array(_values(shape.cout * shape.cin).reshape(shape.cout, shape.cin), "w"))
        ins = ["x", "w"]
        if shape.bias:
            inits.append(numpy_helper.from_array(_values(shape.cout, 1), "b"))
            ins.append("b")
        nodes.append(helper.make_node("Gemm", ins, ["y"], transB=1))
        y_shape = [1, shape.cout]
    else:
        inits.append(numpy_helper.from_array(_values(shape.cin * shape.cout).reshape(shape.cin, shape.cout), "w"))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y0" if shape.bias else "y"]))
        if shape.bias:
            inits.append(numpy_helper.from_array(_values(shape.cout, 1), "b"))
            nodes.append(helper.make_node("Add", ["y0", "b"], ["y"]))
        y_shape = [1, shape.hw[0], shape.cout]
    graph = helper.make_graph(
        nodes, "edgeprune_micro",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _onnx_precision(shape: LayerShape, fp32: Path, precision: str, dest: Path, scheme: str) -> Path:
    if precision == "fp32":
        fp32.replace(dest)
        return dest
    if precision == "fp16":
        convert_fp16(ConvertRequest(spec=format_spec("onnx", "fp16"), source=fp32, dest=dest,
                                    input_shape=input_shape_nchw(shape)))
        return dest
    if precision == "int8":
        calib = np.random.default_rng(0).standard_normal((2, *input_shape_nchw(shape)[1:])).astype(np.float32)
        quantize_onnx(fp32, dest, calib, scheme=scheme)
        return dest
    raise ExportError(f"no ONNX micro-models in precision '{precision}'")


# -- TFLite -----------------------------------------------------------------------


def _tf_layer(tf, shape: LayerShape) -> Callable:
    """A tf.function computing the layer on an NHWC (or token) input, as onnx2tf would build it."""
    rng_w = _values
    if shape.kind == "linear":
        w = tf.constant(rng_w(shape.cin * shape.cout).reshape(shape.cin, shape.cout))
        b = tf.constant(rng_w(shape.cout, 1)) if shape.bias else None
        spec = tf.TensorSpec(list(input_shape_nchw(shape)), tf.float32)

        @tf.function(input_signature=[spec])
        def linear(x):
            y = tf.matmul(x, w) if len(spec.shape) == 2 else tf.einsum("btc,cd->btd", x, w)
            return y + b if b is not None else y

        return linear
    kh, kw = shape.kernel
    ph, pw = shape.padding
    same = shape.stride == (1, 1) and all(
        shape.padding[i] * 2 == shape.dilation[i] * (shape.kernel[i] - 1) for i in (0, 1)
    )
    b = tf.constant(rng_w(shape.cout, 1)) if shape.bias else None
    spec = tf.TensorSpec([1, shape.hw[0], shape.hw[1], shape.cin], tf.float32)
    if shape.depthwise:
        w = tf.constant(rng_w(kh * kw * shape.cin).reshape(kh, kw, shape.cin, 1))
    else:
        w = tf.constant(rng_w(kh * kw * (shape.cin // shape.groups) * shape.cout).reshape(
            kh, kw, shape.cin // shape.groups, shape.cout))

    @tf.function(input_signature=[spec])
    def conv(x):
        if not same and (ph or pw):
            x = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
        pad = "SAME" if same else "VALID"
        if shape.depthwise:
            y = tf.nn.depthwise_conv2d(x, w, [1, *shape.stride, 1], pad, dilations=list(shape.dilation))
        else:
            y = tf.nn.conv2d(x, w, list(shape.stride), pad, dilations=list(shape.dilation))
        return tf.nn.bias_add(y, b) if b is not None else y

    return conv


def _layer_tflite(tf, shape: LayerShape, precision: str, io_precision: str) -> bytes:
    """One layer alone as a TFLite file, converted as the exporter converts (:func:`.tflite_bytes`)."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ExportError(f"no TFLite micro-models in precision '{precision}'")
    fn = _tf_layer(tf, shape)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    in_shape = [int(d) for d in fn.input_signature[0].shape]
    rng = np.random.default_rng(0)
    return tflite_bytes(tf, conv, precision, lambda: (rng.standard_normal(in_shape).astype(np.float32)
                                                      for _ in range(3)), io_precision)


# -- the entry point ---------------------------------------------------------------


def build_micro_models(
    shapes: Iterable[LayerShape],
    *,
    fmt: str,
    precision: str,
    folder: Path,
    io_precision: str = "int8",
    scheme: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """One micro-model file per distinct shape in ``folder``; returns {shape key: file}.

    ``io_precision`` (TFLite int8): the micro-models' I/O type (int8 keeps
    the layer alone: no quantize/dequantize at its edges). ``scheme``: the ONNX
    INT8 scheme (``cpu`` or ``tensorrt``). ``progress(done, total)`` is called
    after each model.
    """
    if fmt not in SUFFIX:
        raise ExportError(f"no micro-models for format '{fmt}' (known: {', '.join(SUFFIX)})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = list({s.key(): s for s in shapes}.values())
    out: dict[str, Path] = {}
    tf = None
    if fmt == "tflite":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        tf = require("tensorflow", "tflite", "building TFLite latency micro-models")
        tf.get_logger().setLevel("ERROR")
    for i, shape in enumerate(todo):
        dest = folder / file_name(shape, SUFFIX[fmt])
        try:
            if fmt == "onnx":
                tmp = folder / f".{dest.stem}.fp32.onnx"
                onnx_micro(shape, tmp)
                _onnx_precision(shape, tmp, precision, dest, scheme)
                tmp.unlink(missing_ok=True)
            else:
                dest.write_bytes(_layer_tflite(tf, shape, precision, io_precision))
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(
                f"cannot build the {fmt} {precision} micro-model for {shape.key()}: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            ) from exc
        out[shape.key()] = dest
        if progress is not None:
            progress(i + 1, len(todo))
    return out
