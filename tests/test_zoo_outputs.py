"""Nested outputs: one flatten order (edgeprune.checks.outputs), and it is ONNX's.

ONNX output ``k`` must be ``flatten(model(x))[k]`` for every check that
compares a file with PyTorch to compare the same tensors: checked here on a
model returning tuples, lists and dicts nested (keys out of alphabetical
order, a ``None`` and a tensor returned twice), exported by the same
``export_onnx`` every stage uses, and run in ONNX Runtime.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402

from edgeprune.checks.outputs import compared, flatten, flatten_numpy  # noqa: E402
from edgeprune.export.onnx import export_onnx, run_onnx  # noqa: E402


class Nested(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        a = self.conv(x)
        return (
            a + 1,
            {"z": a * 2, "a": [a * 3, (a * 4, {"q": a * 5, "none": None})], "m": {"k2": a * 6, "k1": a * 7}},
            [a * 8, a],
            a,
        )


def test_flatten_is_depth_first_in_insertion_order_and_is_onnx_order(tmp_path):
    model = Nested().eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        a = model.conv(x)
        flat = flatten(model(x))
    factors = [float((t / a).flatten()[1]) if i else None for i, t in enumerate(flat)]
    assert len(flat) == 10  # None is no output
    assert [round(f) for f in factors[1:]] == [2, 3, 4, 5, 6, 7, 8, 1, 1]
    onnx_out = run_onnx(export_onnx(model, (1, 3, 8, 8), tmp_path / "n.onnx"), x.numpy())
    assert len(onnx_out) == len(flat)
    for k, (ref, got) in enumerate(zip(flatten_numpy(model(x)), onnx_out, strict=True)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5, err_msg=f"ONNX output {k}")


def test_flatten_takes_numpy_and_skips_what_is_no_tensor():
    arr = np.ones(3)
    assert flatten({"b": [arr, 3, "text"], "a": None}) == [arr]
    assert flatten_numpy((torch.zeros(2), arr))[0].dtype == np.float32


def test_compared_leaves_out_only_what_a_detection_head_returns_of_its_inputs():
    class Head(torch.nn.Module):  # Ultralytics' head protocol, reduced
        export, dynamic, format, nc, stride = False, False, None, 2, torch.tensor([8.0])

        def __init__(self) -> None:
            super().__init__()
            self.cls = torch.nn.Conv2d(4, 2, 1)

        def forward(self, feats):
            y = self.cls(feats[0])
            return y if self.export else (y.sigmoid(), {"scores": y, "feats": feats})

    class Det(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = torch.nn.Conv2d(3, 4, 3, padding=1), Head()

        def forward(self, x):
            return self.head([self.body(x)])

    model = Det().eval()
    x = torch.randn(1, 3, 8, 8)
    out = flatten(model(x))
    kept = compared(model, x)
    assert len(out) == 3 and len(kept) == 2  # the sigmoid and the raw scores; not the head's input map
    assert [tuple(t.shape) for t in kept] == [(1, 2, 8, 8), (1, 2, 8, 8)]
