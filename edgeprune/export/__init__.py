"""Export stage: PyTorch -> ONNX -> (TFLite), quantization, verification, and the artifact record.

Modules, in the order a model goes through them:

- :mod:`~edgeprune.export.formats`: the table of formats x precisions (the single source of truth);
- :mod:`~edgeprune.export.calib`: calibration and held-out verification samples;
- :mod:`~edgeprune.export.onnx`: PyTorch -> ONNX fp32, ONNX fp16;
- :mod:`~edgeprune.export.quantize`: ONNX INT8 (NNCF or ONNX Runtime, TensorRT or CPU scheme);
- :mod:`~edgeprune.export.tflite`: ONNX -> TFLite fp32/fp16/full INT8 offline, LiteRT runner;
- :mod:`~edgeprune.export.edgetpu`: the Coral compiler and its report;
- :mod:`~edgeprune.export.detect`: a detector's outputs cut into boxes and scores, verified and
  (for INT8) exported separately, decoded for the detection-level check;
- :mod:`~edgeprune.export.artifact`: the Artifact record and the metadata stamped into files;
- :mod:`~edgeprune.export.pipeline`: ``export()``, the one wrapper every step goes through.

Importing this package is cheap; the names below load their module on first use::

    from edgeprune.export import export
    report = export("mobilenetv2", target="raspberry-pi-5", output_dir="out/")
"""
import importlib

_LAZY = {
    "export": "edgeprune.export.pipeline",
    "ExportReport": "edgeprune.export.pipeline",
    "AgreementError": "edgeprune.export.pipeline",
    "Artifact": "edgeprune.export.artifact",
    "read_metadata": "edgeprune.export.artifact",
    "FORMATS": "edgeprune.export.formats",
    "format_spec": "edgeprune.export.formats",
    "Thresholds": "edgeprune.export.formats",
    "load_calibration": "edgeprune.export.calib",
    "quantize_onnx": "edgeprune.export.quantize",
    "convert_onnx_to_tflite": "edgeprune.export.tflite",
    "run_tflite": "edgeprune.export.tflite",
    "compile_edgetpu": "edgeprune.export.edgetpu",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeprune.export' has no attribute {name!r}")


__all__ = list(_LAZY)
