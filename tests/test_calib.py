"""Calibration data: images folder, .npy (NCHW or NHWC), Python factory; counts, warnings, shape errors."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

from edgeprune.errors import ExportError
from edgeprune.export.calib import (
    DEFAULT_COUNT,
    MIN_RECOMMENDED,
    CalibrationWarning,
    builtin_samples,
    load_calibration,
)

SHAPE = (1, 3, 32, 32)


def test_npy_nchw_and_nhwc(tmp_path):
    a = np.random.default_rng(0).random((40, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a.transpose(0, 2, 3, 1))
    ca, _ = load_calibration(str(tmp_path / "a.npy"), input_shape=SHAPE)
    cb, _ = load_calibration(str(tmp_path / "b.npy"), input_shape=SHAPE)
    assert ca.data.shape == (40, 3, 32, 32) and ca.data.dtype == np.float32
    np.testing.assert_array_equal(ca.data, cb.data)


def test_shape_mismatch_names_both_shapes(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((10, 3, 28, 28), np.float32))
    with pytest.raises(ExportError) as info:
        load_calibration(str(tmp_path / "bad.npy"), input_shape=SHAPE)
    msg = str(info.value)
    assert "(3, 28, 28)" in msg and "(1, 3, 32, 32)" in msg and "bad.npy" in msg


def test_too_few_samples_warns(tmp_path):
    np.save(tmp_path / "few.npy", np.zeros((5, 3, 32, 32), np.float32))
    with pytest.warns(CalibrationWarning, match=f"only 5 calibration samples.*fewer than {MIN_RECOMMENDED}"):
        calib, verify = load_calibration(str(tmp_path / "few.npy"), input_shape=SHAPE)
    assert len(calib) == 5 and verify is None and calib.warnings


def test_default_count_and_held_out_tail(tmp_path):
    a = np.arange(300, dtype=np.float32)[:, None, None, None] * np.ones((1, 3, 32, 32), np.float32)
    np.save(tmp_path / "many.npy", a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough samples: no warning
        calib, verify = load_calibration(str(tmp_path / "many.npy"), input_shape=SHAPE)
    assert len(calib) == DEFAULT_COUNT
    assert verify is not None and len(verify) == 64
    assert set(calib.data[:, 0, 0, 0]).isdisjoint(set(verify.data[:, 0, 0, 0]))  # held out


def test_images_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(CalibrationWarning):
        calib, _ = load_calibration(str(tmp_path), input_shape=SHAPE, normalize="unit")
    assert calib.data.shape == (3, 3, 32, 32)
    assert 0.0 <= calib.data.min() and calib.data.max() <= 1.0
    with pytest.warns(CalibrationWarning):
        grey, _ = load_calibration(str(tmp_path), input_shape=(1, 1, 16, 16), normalize="unit")
    assert grey.data.shape == (3, 1, 16, 16)
    with pytest.warns(CalibrationWarning):
        imnet, _ = load_calibration(str(tmp_path), input_shape=SHAPE, normalize="imagenet")
    assert imnet.data.min() < 0  # mean-subtracted


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="no images"):
        load_calibration(str(tmp_path), input_shape=SHAPE)


def test_python_factory(tmp_path, monkeypatch):
    (tmp_path / "mycalib.py").write_text(
        "import numpy as np\n"
        "def pairs():\n"
        "    for i in range(40):\n"
        "        yield np.full((3, 32, 32), i, np.float32), i % 10\n"
        "def wrong():\n"
        "    return np.zeros((4, 1, 32, 32), np.float32)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    calib, _ = load_calibration("mycalib:pairs", input_shape=SHAPE)
    assert calib.data.shape == (40, 3, 32, 32)
    with pytest.raises(ExportError, match=r"mycalib:wrong.*\(1, 32, 32\).*\(1, 3, 32, 32\)"):
        load_calibration("mycalib:wrong", input_shape=SHAPE)
    with pytest.raises(ExportError, match="cannot import"):
        load_calibration("nosuchmodule_xyz:fn", input_shape=SHAPE)
    sys.modules.pop("mycalib", None)


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="not a folder of images, a .npy file"):
        load_calibration(str(tmp_path / "nothing.bin"), input_shape=SHAPE)


def test_builtin_samples_are_real_and_distinct():
    pytest.importorskip("sklearn")
    cal = builtin_samples(SHAPE, 16, split="calib", normalize="unit")
    ver = builtin_samples(SHAPE, 16, split="verify", normalize="unit")
    assert cal.data.shape == (16, 3, 32, 32)
    assert cal.data.std() > 0.05  # photos, not constants
    flat_c = {c.tobytes() for c in cal.data}
    assert not any(v.tobytes() in flat_c for v in ver.data)
