"""Comparing the board's outputs with the host's, and reading them as untrusted input."""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest

from edgeprune.errors import AgentError, ShipError
from edgeprune.ship.check import (
    compare_outputs,
    decode_board_outputs,
    host_outputs,
    load_outputs,
    save_outputs,
)


def ref():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((8, 10)).astype(np.float32), rng.standard_normal((8, 4, 6)).astype(np.float32)]


def test_same_outputs_pass_and_the_figures_are_per_tensor():
    r = ref()
    rep = compare_outputs(r, [a.copy() for a in r], precision="fp32")
    assert rep["passed"] and rep["reason"] is None and len(rep["outputs"]) == 2
    assert rep["outputs"][0]["max_abs"] == 0 and rep["outputs"][0]["cosine"] == pytest.approx(1)
    assert rep["samples"] == 8


def test_kernel_rounding_passes_a_different_model_fails():
    r = ref()
    rounding = [a * (1 + 1e-6) for a in r]
    assert compare_outputs(r, rounding, precision="fp32")["passed"]
    other = [r[0] + 0.05, r[1]]  # a different model, or a broken runtime
    rep = compare_outputs(r, other, precision="fp32")
    assert not rep["passed"] and not rep["outputs"][0]["passed"] and rep["outputs"][1]["passed"]
    assert rep["reason"].startswith("output 0: max abs error 0.05") and "fp32" in rep["reason"]


def test_the_tolerance_fits_the_precision():
    r = ref()
    half = [a.astype(np.float16).astype(np.float32) for a in r]  # fp16 kernels round like this
    assert not compare_outputs(r, half, precision="fp32")["passed"]
    assert compare_outputs(r, half, precision="fp16")["passed"]
    q = [np.random.default_rng(1).integers(-128, 128, (8, 10)).astype(np.int8)]
    off_by_one = [np.clip(q[0].astype(int) + 1, -128, 127).astype(np.int8)]
    assert compare_outputs(q, off_by_one, precision="int8")["passed"]
    far = [np.clip(q[0].astype(int) + 40, -128, 127).astype(np.int8)]
    assert not compare_outputs(q, far, precision="int8")["passed"]
    with pytest.raises(ShipError, match="precision 'int4'.*fp32, fp16, int8"):
        compare_outputs(q, q, precision="int4")


def test_shape_dtype_and_non_finite_values_fail():
    r = ref()
    assert "shape" in compare_outputs(r, [r[0][:, :5], r[1]], precision="fp32")["reason"]
    assert "dtype" in compare_outputs(r, [r[0].astype(np.float64), r[1]], precision="fp32")["reason"]
    nan = r[0].copy()
    nan[3, 3] = np.nan
    assert "not finite" in compare_outputs(r, [nan, r[1]], precision="fp32")["reason"]
    assert "2 outputs on the host, 1 on the board" in compare_outputs(r, r[:1], precision="fp32")["reason"]


def doc_for(arrays, **over):
    outs = [
        {"name": f"o{i}", "dtype": a.dtype.str, "shape": list(a.shape),
         "data_b64": base64.b64encode(a.tobytes()).decode()}
        for i, a in enumerate(arrays)
    ]
    for i, o in over.items():
        outs[int(i[1:])].update(o)
    return {"outputs": outs, "outputs_file": None}


def test_decode_inline_outputs():
    r = ref()
    got, names = decode_board_outputs(doc_for(r), reference=r, where="b")
    assert names == ["o0", "o1"] and all(np.array_equal(a, b) for a, b in zip(got, r, strict=True))


@pytest.mark.parametrize(
    "over, words",
    [
        ({"o0": {"dtype": "|O"}}, "dtype"),
        ({"o0": {"dtype": ">f4"}}, "dtype"),
        ({"o0": {"shape": [8, -10]}}, "shape"),
        ({"o0": {"shape": "8x10"}}, "shape"),
        ({"o0": {"data_b64": base64.b64encode(b"x" * 12).decode()}}, "bytes"),
        ({"o0": {"data_b64": "A" * (8 * 10 * 4 * 2)}}, "bytes"),
        ({"o0": {"data_b64": "!!not base64!!"}}, "base64"),
        ({"o0": {"shape": [10**9, 10**9]}}, "bytes"),
    ],
)
def test_decode_refuses_malformed_outputs(over, words):
    r = ref()
    with pytest.raises(AgentError, match=words) as exc:
        decode_board_outputs(doc_for(r, **over), reference=r, where="agent on b")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("agent on b")


def test_a_different_count_or_shape_is_returned_for_the_check_not_trusted_blindly():
    r = ref()
    got, _ = decode_board_outputs(doc_for([r[0][:, :5], r[1]]), reference=r, where="b")
    assert got[0].shape == (8, 5)  # compare_outputs then fails it, naming the shapes
    got, _ = decode_board_outputs(doc_for(r[:1]), reference=r, where="b")
    assert "1 on the board" in compare_outputs(r, got, precision="fp32")["reason"]
    many = [np.zeros(1, np.float32)] * 1001
    with pytest.raises(AgentError, match="1001 outputs"):
        decode_board_outputs(doc_for(many), reference=r, where="b")


def test_outputs_file_round_trip_and_refusals(tmp_path):
    r = ref()
    p = save_outputs(tmp_path / "o.npz", r)
    back = load_outputs(p, max_bytes=10**6)
    assert all(np.array_equal(a, b) for a, b in zip(back, r, strict=True))
    with pytest.raises(AgentError, match="more than"):
        load_outputs(p, max_bytes=100)
    # a zip bomb: a compressed entry is refused before it is inflated
    bomb = tmp_path / "bomb.npz"
    buf = io.BytesIO()
    np.save(buf, np.zeros((4096, 4096), np.float32))
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("output_0.npy", buf.getvalue())
    with pytest.raises(AgentError, match="compressed|more than"):
        load_outputs(bomb, max_bytes=10**6)
    # pickled objects are never loaded
    obj = tmp_path / "obj.npz"
    with zipfile.ZipFile(obj, "w") as z:
        b = io.BytesIO()
        np.save(b, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        z.writestr("output_0.npy", b.getvalue())
    with pytest.raises(AgentError, match="cannot read"):
        load_outputs(obj, max_bytes=10**6)
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(AgentError, match="cannot read"):
        load_outputs(tmp_path / "junk.npz", max_bytes=10**6)
    names = tmp_path / "names.npz"
    with zipfile.ZipFile(names, "w") as z:
        z.writestr("output_0.npy", buf.getvalue()[:200])
        z.writestr("../../evil.npy", b"x")
    with pytest.raises(AgentError, match="unexpected entries"):
        load_outputs(names, max_bytes=10**8)


def test_host_outputs_batch_like_the_agent(models):
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    outs = host_outputs(models["tiny"], x)
    assert [o.shape for o in outs] == [(3, 10)]
    with pytest.raises(ShipError, match="dtype float64"):
        host_outputs(models["tiny"], x.astype(np.float64))
    with pytest.raises(ShipError, match="shape"):
        host_outputs(models["tiny"], x[:, :, :8])
