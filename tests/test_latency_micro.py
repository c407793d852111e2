"""Micro-models: one layer in the board's format, the same layer the exporter would make."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from edgeprune.latency.layers import LayerShape  # noqa: E402
from edgeprune.latency.micro import build_micro_models, input_shape_nchw  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPES = [
    LayerShape("conv", 16, 24, (3, 3), (1, 1), (1, 1), hw=(20, 20)),
    LayerShape("conv", 16, 32, (3, 3), (2, 2), (1, 1), hw=(20, 20), bias=False),
    LayerShape("conv", 24, 24, (3, 3), (2, 2), (1, 1), groups=24, hw=(20, 20)),
    LayerShape("conv", 16, 32, (3, 3), (1, 1), (1, 1), groups=4, hw=(10, 10)),
    LayerShape("conv", 32, 16, (1, 1), hw=(10, 10)),
    LayerShape("linear", 64, 10),
    LayerShape("linear", 32, 48, hw=(5, 1)),
]


def _torch_layer(shape: LayerShape, weights: dict[str, np.ndarray]) -> nn.Module:
    if shape.kind == "linear":
        m = nn.Linear(shape.cin, shape.cout, bias=shape.bias)
        w = weights["w"]
        m.weight.data = torch.from_numpy(w if w.shape == (shape.cout, shape.cin) else w.T.copy())
    else:
        m = nn.Conv2d(shape.cin, shape.cout, shape.kernel, shape.stride, shape.padding,
                      shape.dilation, shape.groups, bias=shape.bias)
        m.weight.data = torch.from_numpy(weights["w"].copy())
    if shape.bias:
        m.bias.data = torch.from_numpy(weights["b"].copy())
    return m.eval()


def test_onnx_micro_models_compute_the_layer(tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgeprune.export.onnx import onnx_session

    files = build_micro_models(SHAPES, fmt="onnx", precision="fp32", folder=tmp_path)
    assert len(files) == len(SHAPES) and len({p.name for p in files.values()}) == len(SHAPES)
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        path = files[shape.key()]
        weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
        x = rng.standard_normal(input_shape_nchw(shape)).astype(np.float32)
        got = onnx_session(path).run(None, {"x": x})[0]
        with torch.no_grad():
            want = _torch_layer(shape, weights)(torch.from_numpy(x)).numpy()
        assert got.shape == want.shape, shape
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=shape.key())


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_onnx_fp16_and_int8_micro_models_load_and_run(tmp_path, precision):
    from edgeprune.export.onnx import onnx_session

    files = build_micro_models(SHAPES[:2] + SHAPES[-2:-1], fmt="onnx", precision=precision,
                               folder=tmp_path)
    for key, path in files.items():
        sess = onnx_session(path)
        ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
        assert ("QuantizeLinear" in ops) == (precision == "int8"), key
        shape = next(s for s in SHAPES if s.key() == key)
        x = np.zeros(input_shape_nchw(shape), np.float32)
        assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape[1] == shape.cout


@pytest.fixture(scope="module")
def tflite_int8(tmp_path_factory):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    folder = tmp_path_factory.mktemp("micro-tfl")
    return build_micro_models(SHAPES, fmt="tflite", precision="int8", folder=folder)


def _ops(path):
    from edgeprune.export.tflite import tensor_report

    return tensor_report(path)["ops"]


def test_tflite_int8_micro_models_are_the_layer_alone(tflite_int8):
    from ai_edge_litert.interpreter import Interpreter

    for shape in SHAPES:
        path = tflite_int8[shape.key()]
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        assert inp["dtype"] == np.int8 and out["dtype"] == np.int8  # no (de)quantize at the edges
        ops = _ops(path)
        assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops, ops
        want = {"conv": "DEPTHWISE_CONV_2D" if shape.depthwise else "CONV_2D"}.get(shape.kind)
        assert want is None or want in ops, (shape.key(), ops)
        if shape.kind == "conv":
            assert list(out["shape"]) == [1, *shape.out_hw, shape.cout]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tflite_micro_model_matches_onnx2tf_of_the_same_layer(tflite_int8, tmp_path, index):
    """The operators (and their tensor shapes) LiteRT runs for a micro-model are those onnx2tf
    makes of the same PyTorch layer inside an exported model: SAME or explicit PAD + VALID."""
    pytest.importorskip("onnx2tf")
    from edgeprune.export.onnx import export_onnx
    from edgeprune.export.tflite import convert_onnx_to_tflite

    shape = SHAPES[index]
    layer = _torch_layer(shape, {"w": np.ones((shape.cout, shape.cin // shape.groups, *shape.kernel),
                                                np.float32), "b": np.zeros(shape.cout, np.float32)})
    onnx_path = export_onnx(layer, input_shape_nchw(shape), tmp_path / "layer.onnx")
    calib = np.random.default_rng(0).standard_normal((4, *input_shape_nchw(shape)[1:])).astype(np.float32)
    ref = tmp_path / "layer.int8.tflite"
    convert_onnx_to_tflite(onnx_path, ref, precision="int8", calib=calib, io_precision="int8",
                           workdir=tmp_path)
    core = [o for o in _ops(ref) if o not in ("QUANTIZE", "DEQUANTIZE")]
    assert core == _ops(tflite_int8[shape.key()]), shape.key()
