"""The table of export formats: the single source of truth for every step.

Each (format, precision) pair that edgeprune can produce has one
:class:`FormatSpec` in :data:`FORMATS`. It says which converter makes it
(``module:function``, imported only when used), which step it is made from,
the file suffix, which runtime on this machine verifies it, what the
tensors at its inputs/outputs may be, and the default agreement with the
original PyTorch model below which the export fails.

The chain is always PyTorch -> ONNX fp32 -> (ONNX fp16 | ONNX int8 | TFLite
fp32/fp16/int8), so every artifact can be checked against the step it came
from *and* against the original model.

Default thresholds (against the original PyTorch model, on held-out inputs;
``top1`` only for classifiers, see :func:`edgeprune.checks.agreement.agreement`):

=========  ======  =======  ==========================================
precision  top1    cosine   why
=========  ======  =======  ==========================================
fp32       0.99    0.9999   only rounding differences are expected
fp16       0.97    0.999    half precision keeps nearly every top-1
int8       0.60    0.93     measured on MobileNetV2 (ImageNet weights,
                            built-in photo crops): full-INT8 TFLite
                            0.72-0.78 / 0.966, ONNX Q/DQ 0.83-0.92 /
                            0.978-0.994, while
                            a layout bug (H/W swapped) gives 0.36 / 0.78
                            and an RGB/BGR mix-up 0.42 / 0.89
=========  ======  =======  ==========================================

Example::

    >>> spec = format_spec("tflite", "int8")
    >>> spec.suffix, spec.runtime, spec.source
    ('.int8.tflite', 'litert', ('onnx', 'fp32'))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgeprune.checks.thresholds import Thresholds
from edgeprune.errors import ExportError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np


@dataclass(frozen=True)
class FormatSpec:
    """One row of the table. ``converter`` is ``module:function``; ``source`` the step it starts from."""

    format: str
    precision: str
    suffix: str
    converter: str
    source: tuple[str, str] | None  # None = made from the PyTorch model itself
    runtime: str  # what verifies it on this machine: 'onnxruntime' | 'litert'
    io: str  # what the file's inputs/outputs hold
    thresholds: Thresholds
    needs_calibration: bool = False
    extra: str = "onnx"  # the pip extra that brings its converter

    @property
    def key(self) -> tuple[str, str]:
        return (self.format, self.precision)

    def load_converter(self) -> Callable:
        module, func = self.converter.split(":")
        return getattr(importlib.import_module(module), func)


# which board runtimes load each format (a profile's runtime.supported must name one)
FORMAT_RUNTIMES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "tensorrt"),
    "tflite": ("litert", "edgetpu"),
}

FP32 = Thresholds(top1=0.99, cosine=0.9999, recall=0.98, score_corr=0.999)
FP16 = Thresholds(top1=0.97, cosine=0.999, recall=0.95, score_corr=0.99)
INT8 = Thresholds(top1=0.60, cosine=0.93, recall=0.5, score_corr=0.8)

FORMATS: dict[tuple[str, str], FormatSpec] = {
    spec.key: spec
    for spec in (
        FormatSpec(
            "onnx", "fp32", ".fp32.onnx", "edgeprune.export.onnx:convert_from_torch", None,
            "onnxruntime", "float32 NCHW in, float32 out", FP32, extra="torch",
        ),
        FormatSpec(
            "onnx", "fp16", ".fp16.onnx", "edgeprune.export.onnx:convert_fp16", ("onnx", "fp32"),
            "onnxruntime", "float32 in and out (keep_io_types); fp16 weights and math inside", FP16,
        ),
        FormatSpec(
            "onnx", "int8", ".int8.onnx", "edgeprune.export.quantize:convert_int8", ("onnx", "fp32"),
            "onnxruntime", "float32 in and out; QuantizeLinear/DequantizeLinear pairs inside", INT8,
            needs_calibration=True, extra="quantize",
        ),
        FormatSpec(
            "tflite", "fp32", ".fp32.tflite", "edgeprune.export.tflite:convert", ("onnx", "fp32"),
            "litert", "float32 NHWC in, float32 out", FP32, extra="tflite",
        ),
        FormatSpec(
            "tflite", "fp16", ".fp16.tflite", "edgeprune.export.tflite:convert", ("onnx", "fp32"),
            "litert", "float32 NHWC in and out; fp16 weights (dequantized or run fp16 by the delegate)",
            FP16, extra="tflite",
        ),
        FormatSpec(
            "tflite", "int8", ".int8.tflite", "edgeprune.export.tflite:convert", ("onnx", "fp32"),
            "litert", "NHWC; int8 throughout, I/O as the profile's io_precision (int8, uint8 or float32)",
            INT8, needs_calibration=True, extra="tflite",
        ),
    )
}


def format_spec(fmt: str, precision: str) -> FormatSpec:
    """The table row for ``fmt`` x ``precision``; an unknown pair names what exists."""
    try:
        return FORMATS[(fmt, precision)]
    except KeyError:
        known = ", ".join(f"{f} {p}" for f, p in FORMATS)
        raise ExportError(f"edgeprune cannot export {fmt} {precision}; it knows: {known}") from None


def chain(fmt: str, precision: str) -> list[FormatSpec]:
    """The steps from the PyTorch model to ``fmt`` x ``precision``, first step first."""
    steps = [format_spec(fmt, precision)]
    while steps[0].source is not None:
        steps.insert(0, format_spec(*steps[0].source))
    return steps


@dataclass
class ConvertRequest:
    """What a converter gets: the step's input, where to write, and the context.

    ``source`` is the previous step's file (a Path), or the loaded PyTorch
    model for the first step. ``calib`` is NCHW float32 (None when the
    format needs none). ``options`` carries per-format choices, e.g.
    ``{"quantizer": "ort"}`` or ``{"io_precision": "uint8"}``.
    """

    spec: FormatSpec
    source: object
    dest: Path
    input_shape: tuple[int, ...]
    calib: np.ndarray | None = None
    options: dict = field(default_factory=dict)
