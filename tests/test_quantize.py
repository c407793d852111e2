"""ONNX INT8: both quantizers, both schemes, zero-points, and the uint8 -> int8 rewrite for TensorRT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeprune.errors import ExportError

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    from edgeprune.export.onnx import export_onnx
    from edgeprune.load import load_model
    from edgeprune.models.digits import digits_data

    lm = load_model("digits-cnn")
    path = export_onnx(lm.module, lm.input_shape, tmp_path_factory.mktemp("q") / "digits.onnx")
    xt, _ = digits_data("train")
    xv, yv = digits_data("test")
    return path, xt.numpy()[:128], xv.numpy(), yv.numpy()


@pytest.mark.parametrize("quantizer", ["ort", "nncf"])
@pytest.mark.parametrize("scheme", ["tensorrt", "cpu"])
def test_quantizers_and_schemes(digits_onnx, tmp_path, quantizer, scheme):
    from edgeprune.checks.agreement import agreement
    from edgeprune.export.onnx import run_onnx
    from edgeprune.export.quantize import quantize_onnx, zero_points

    src, calib, xv, yv = digits_onnx
    dst = tmp_path / f"{quantizer}-{scheme}.onnx"
    info = quantize_onnx(src, dst, calib, scheme=scheme, quantizer=quantizer)
    zps = zero_points(dst)
    assert zps
    if scheme == "tensorrt":
        assert info["nonzero_zero_points"] == 0
        assert all(z.dtype == np.int8 for z in zps.values())
    # TensorRT-scheme models are checked as TensorRT computes them (Q/DQ emulated in float):
    # this CPU's AVX2 int8 kernels saturate on signed activations (edgeprune.export.onnx).
    ref, out = run_onnx(src, xv), run_onnx(dst, xv, emulate_qdq=scheme == "tensorrt")
    ag = agreement(ref, out)
    assert ag["top1"] >= 0.97 and ag["cosine"] > 0.99
    assert float(np.mean(out[0].argmax(1) == yv)) >= float(np.mean(ref[0].argmax(1) == yv)) - 0.03
    assert dst.stat().st_size < 0.4 * Path(src).stat().st_size


def test_ort_cpu_scheme_uses_uint8_activations(digits_onnx, tmp_path):
    from edgeprune.export.quantize import quantize_onnx, zero_points

    src, calib, *_ = digits_onnx
    quantize_onnx(src, tmp_path / "c.onnx", calib, scheme="cpu", quantizer="ort")
    assert any(z.dtype == np.uint8 for z in zero_points(tmp_path / "c.onnx").values())


def test_uint8_rewrite_keeps_outputs(digits_onnx, tmp_path):
    """NNCF's uint8 zero-point-0 quantizers rewritten to int8 (TensorRT) still compute nearly the same."""
    import onnx

    from edgeprune.checks.agreement import agreement
    from edgeprune.export.onnx import run_onnx
    from edgeprune.export.quantize import _uint8_to_int8, quantize_onnx, zero_points

    src, calib, xv, _ = digits_onnx
    quantize_onnx(src, tmp_path / "cpu.onnx", calib, scheme="cpu", quantizer="nncf")
    model = onnx.load(str(tmp_path / "cpu.onnx"))
    if not any(z.dtype == np.uint8 and not z.any() for z in zero_points(tmp_path / "cpu.onnx").values()):
        pytest.skip("NNCF made no uint8 zero-point-0 quantizer here")
    n = _uint8_to_int8(model)
    assert n > 0
    onnx.save(model, str(tmp_path / "signed.onnx"))
    assert all(z.dtype != np.uint8 for z in zero_points(tmp_path / "signed.onnx").values())
    ag = agreement(run_onnx(tmp_path / "cpu.onnx", xv), run_onnx(tmp_path / "signed.onnx", xv))
    assert ag["top1"] >= 0.97 and ag["cosine"] > 0.999


def test_errors_name_the_problem(digits_onnx, tmp_path):
    from edgeprune.export.quantize import quantize_onnx

    src, calib, *_ = digits_onnx
    with pytest.raises(ExportError, match="unknown quantizer 'tensorrt'"):
        quantize_onnx(src, tmp_path / "x.onnx", calib, quantizer="tensorrt")
    with pytest.raises(ExportError, match="needs calibration samples"):
        quantize_onnx(src, tmp_path / "x.onnx", calib[:0])
