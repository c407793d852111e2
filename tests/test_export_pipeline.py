"""Export matrix: each format x precision the device profiles use, converted for real and run for real.

Every artifact is loaded and run in ONNX Runtime or LiteRT on held-out
inputs and compared with the original PyTorch model. Tolerances (vs PyTorch):

- fp32 ONNX: max |err| < 1e-4 and top-1 agreement 1.0; fp32 TFLite: max |err| < 1e-3.
- fp16: cosine > 0.9999 and top-1 >= 0.99.
- int8 (ONNX Q/DQ and full-INT8 TFLite): cosine > 0.99, top-1 >= 0.95, and the
  digits-cnn test accuracy within 3 points of PyTorch's.

digits-cnn (1x1x16x16, trained on the real digits, verified on the real test
split) runs the whole matrix; mobilenetv2 and yolo-small run their profiles'
default paths (see test_export_reference.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeprune._paths import sha256_file
from edgeprune.api import export_model as export
from edgeprune.errors import ExportError
from edgeprune.export.artifact import read_metadata
from edgeprune.export.pipeline import AgreementError

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

# (target, format, precision) -> what the profile says about it
MATRIX = [
    ("local", None, None),  # ONNX fp32
    ("jetson-nano", None, None),  # ONNX fp16
    ("jetson-orin-nano", None, None),  # ONNX int8, zero-point 0
    ("local", "onnx", "int8"),  # ONNX int8, CPU scheme (uint8 activations)
    ("raspberry-pi-5", "tflite", "fp32"),
    ("pixel-8", "tflite", "fp16"),
    ("raspberry-pi-4", None, None),  # TFLite full int8, int8 I/O
    ("galaxy-s23", None, None),  # TFLite full int8, float32 I/O
    ("coral-usb", None, None),  # TFLite full int8, uint8 I/O
]

_CACHE: dict = {}


@pytest.fixture(scope="module")
def digits():
    from edgeprune.load import load_model

    return load_model("digits-cnn")


def _export(digits, tmp_path_factory, target, fmt, precision):
    key = (target, fmt, precision)
    if key not in _CACHE:
        out = tmp_path_factory.mktemp(f"{target}-{fmt}-{precision}")
        _CACHE[key] = export(digits, target=target, fmt=fmt, precision=precision, output=out)
    return _CACHE[key]


@pytest.mark.parametrize("target,fmt,precision", MATRIX)
def test_matrix_artifact_runs_and_agrees(digits, tmp_path_factory, target, fmt, precision):
    report = _export(digits, tmp_path_factory, target, fmt, precision)
    final = report.final
    assert final.path.is_file()
    assert final.sha256 == sha256_file(final.path)
    assert final.size_bytes == final.path.stat().st_size
    ag = final.agreement
    acc_pt = report.verification["accuracy_pytorch"]
    assert report.verification["samples"] == 359  # the real digits test split (1797 // 5)
    if final.precision == "fp32":
        assert ag["top1"] == 1.0
        assert ag["max_abs"] < (1e-4 if final.format == "onnx" else 1e-3)
    elif final.precision == "fp16":
        assert ag["top1"] >= 0.99 and ag["cosine"] > 0.9999
    else:
        assert ag["top1"] >= 0.95 and ag["cosine"] > 0.99
        assert final.extra["accuracy"] >= acc_pt - 0.03
    # every step is checked against the previous one too
    assert report.artifacts[0].step == "onnx fp32"
    if len(report.artifacts) > 1:
        assert final.agreement_vs_previous is not None


@pytest.mark.parametrize("target,fmt,precision", MATRIX)
def test_matrix_metadata_stamped(digits, tmp_path_factory, target, fmt, precision):
    report = _export(digits, tmp_path_factory, target, fmt, precision)
    meta = read_metadata(report.final.path)
    assert meta["profile"] == target
    assert meta["precision"] == report.precision
    assert meta["model"] == "digits-cnn"
    assert len(meta["source_sha256"]) == 64
    assert meta["edgeprune_version"]
    assert "plan" in meta
    data = json.loads((report.output_dir / "export.json").read_text())
    keys = {"path", "format", "precision", "sha256", "size_bytes", "agreement"}
    assert all(keys <= set(a) for a in data["artifacts"])
    assert set(data["artifacts"][-1]["agreement"]) >= {"top1", "max_abs", "mean_abs", "cosine"}


def test_onnx_defaults_per_profile(digits, tmp_path_factory):
    assert _export(digits, tmp_path_factory, "local", None, None).final.step == "onnx fp32"
    assert _export(digits, tmp_path_factory, "jetson-nano", None, None).final.step == "onnx fp16"
    orin = _export(digits, tmp_path_factory, "jetson-orin-nano", None, None).final
    assert orin.step == "onnx int8"


def test_orin_int8_is_qdq_with_zero_points_zero(digits, tmp_path_factory):
    from edgeprune.export.quantize import zero_points

    orin = _export(digits, tmp_path_factory, "jetson-orin-nano", None, None).final
    zps = zero_points(orin.path)
    assert zps, "no QuantizeLinear/DequantizeLinear found"
    assert all(np.all(z == 0) for z in zps.values())
    assert all(z.dtype == np.int8 for z in zps.values())  # TensorRT wants signed int8
    local = _export(digits, tmp_path_factory, "local", "onnx", "int8").final
    assert any(z.dtype == np.uint8 for z in zero_points(local.path).values())  # CPU scheme


def test_onnx_fp16_keeps_float32_io(digits, tmp_path_factory):
    import onnx

    nano = _export(digits, tmp_path_factory, "jetson-nano", None, None).final
    m = onnx.load(str(nano.path))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)
    assert nano.size_bytes < 0.6 * _export(digits, tmp_path_factory, "local", None, None).final.size_bytes


@pytest.mark.parametrize("target,io", [("raspberry-pi-4", "int8"), ("galaxy-s23", "float32"), ("coral-usb", "uint8")])
def test_full_int8_tflite_has_no_float_tensors_beyond_io(digits, tmp_path_factory, target, io):
    from edgeprune.export.tflite import tensor_report

    final = _export(digits, tmp_path_factory, target, None, None).final
    rep = tensor_report(final.path)
    assert rep["input_dtypes"] == [io] and rep["output_dtypes"] == [io]
    inner_floats = [t for t in rep["float_tensors"] if not t["io"]]
    assert inner_floats == []
    if io != "float32":
        assert rep["float_tensors"] == []
    assert "float16" not in rep["dtypes"]


def test_jetson_nano_refuses_int8_with_the_reason(digits, tmp_path):
    with pytest.raises(ExportError, match="INT8 refused: .*no INT8 hardware"):
        export(digits, target="jetson-nano", precision="int8", output=tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_precision_the_board_does_not_run_is_refused(digits, tmp_path):
    with pytest.raises(ExportError, match="raspberry-pi-5 runs fp32, int8, not fp16"):
        export(digits, target="raspberry-pi-5", precision="fp16", output=tmp_path)
    with pytest.raises(ExportError, match="coral-usb runs edgetpu, litert, which load no onnx file"):
        export(digits, target="coral-usb", fmt="onnx", output=tmp_path)
    with pytest.raises(ExportError, match="jetson-nano runs tensorrt, onnxruntime, which load no tflite file"):
        export(digits, target="jetson-nano", fmt="tflite", output=tmp_path)
    with pytest.raises(ExportError, match="coral-usb runs int8, not fp32"):
        export(digits, target="coral-usb", precision="fp32", output=tmp_path)


def test_min_agreement_fails_below_threshold_and_keeps_report(digits, tmp_path):
    from edgeprune.checks.thresholds import Thresholds

    with pytest.raises(AgreementError) as info:
        export(digits, target="jetson-orin-nano", output=tmp_path,
               min_agreement=Thresholds(top1=1.0, cosine=0.99999999))
    msg = str(info.value)
    assert "digits-cnn.int8.onnx" in msg and "cosine" in msg
    data = json.loads((tmp_path / "export.json").read_text())
    assert data["passed"] is False


def test_broken_conversion_is_caught_by_default(digits, tmp_path, monkeypatch):
    """A converter that silently scrambles weights must fail the default check."""
    import onnx
    from onnx import numpy_helper

    import edgeprune.export.onnx as eonnx

    real = eonnx.convert_fp16

    def scrambling(req):
        info = real(req)
        m = onnx.load(str(req.dest))
        for init in m.graph.initializer:
            if init.data_type == onnx.TensorProto.FLOAT16 and len(init.dims) == 4:
                arr = numpy_helper.to_array(init)
                rng = np.random.default_rng(0)
                init.CopyFrom(numpy_helper.from_array(rng.permutation(arr.ravel()).reshape(arr.shape), init.name))
                break
        onnx.save(m, str(req.dest))
        return info

    monkeypatch.setattr(eonnx, "convert_fp16", scrambling)
    with pytest.raises(AgreementError, match="fp16"):
        export(digits, target="jetson-nano", output=tmp_path)


def test_user_calibration_npy_with_held_out_tail(digits, tmp_path):
    from edgeprune.models.digits import digits_data

    x, _ = digits_data("train")
    np.save(tmp_path / "calib.npy", x.numpy()[:200])
    report = export(digits, target="raspberry-pi-5", calib=str(tmp_path / "calib.npy"), calib_count=100,
                    output=tmp_path / "out")
    assert report.calibration["samples"] == 100
    assert "held out" in report.verification["source"]
    assert report.final.agreement["top1"] >= 0.95


def test_pruned_model_exports_with_plan_and_pruning_check(tmp_path):
    """A model saved by `edgeprune prune` (.ept) goes through export; the plan travels in the metadata."""
    prune = pytest.importorskip("edgeprune.api")
    prune.prune_model("digits-cnn", target="raspberry-pi-5", output=tmp_path / "pruned", ratio=0.25)
    ept = next((tmp_path / "pruned").glob("*.ept"))
    report = export(str(ept), target="raspberry-pi-5", output=tmp_path / "out")
    assert report.pruning is not None and report.pruning["base"] == "digits-cnn"
    assert 0.5 <= report.pruning["agreement"]["top1"] <= 1.0  # pruned vs original, for information
    meta = read_metadata(report.final.path)
    assert meta["plan"] and meta["plan"]["base"] == "digits-cnn"
    assert meta["source"] == str(ept)
    assert report.final.agreement["top1"] >= 0.95  # the export itself is checked against the pruned model


def test_a_pruned_model_that_lost_accuracy_is_flagged_not_silent(tmp_path):
    """Pruning 60 % of digits-cnn without fine-tuning loses accuracy: export says so in a warning."""
    prune = pytest.importorskip("edgeprune.api")
    prune.prune_model("digits-cnn", target="local", output=tmp_path / "pruned", ratio=0.6)
    ept = next((tmp_path / "pruned").glob("*.ept"))
    report = export(str(ept), target="local", output=tmp_path / "out")
    ag = report.pruning["agreement"]
    assert ag["top1"] < 0.9 or ag["cosine"] < 0.95, ag  # the premise: this plan really hurts
    assert any("fine-tune it before shipping" in w and "digits-cnn" in w for w in report.warnings)
    # ...and the headline never calls it passed (the conversion checks did pass)
    assert report.passed and report.verdict["status"] == "lost-accuracy"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Result: **NOT PASSED**" in md and "**passed**" not in md
    assert report.accuracy["original"] > report.accuracy["model"] + 0.01


def test_export_writes_a_report_a_person_can_read(tmp_path):
    """Beside export.json: report.md with every artifact and its agreement, and a plot."""
    report = export("digits-cnn", target="local", output=tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Result: **passed**" in md and report.final.path.name in md and report.final.sha256[:12] in md
    assert "digits test split" in md
    pytest.importorskip("matplotlib")
    png = tmp_path / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "report.png" in md
