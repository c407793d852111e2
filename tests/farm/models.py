"""Tiny real models for the agent and farm tests, built with onnx.helper (no torch: fast)."""

from __future__ import annotations

from pathlib import Path


def tiny_convnet(
    path: Path, *, channels: int = 16, size: int = 32, seed: int = 0, opset: int = 17
) -> Path:
    """A 3-layer conv net (Conv-Relu-Conv-Relu-GlobalAvgPool-Gemm), input 1x3xSxS."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    inits = [
        init("w1", channels, 3, 3, 3),
        init("b1", channels),
        init("w2", channels, channels, 3, 3),
        init("b2", channels),
        init("wf", 10, channels),
        init("bf", 10),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["output0"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 15 else 7
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_tflite(path: Path) -> Path:
    """A small TFLite model (conv + dense) made with TensorFlow's converter (slow import: ~5 s)."""
    import numpy as np
    import tensorflow as tf

    class M(tf.Module):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.w = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.1)
            self.d = tf.constant(rng.standard_normal((8, 10)).astype(np.float32) * 0.1)

        @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
        def __call__(self, x):
            y = tf.nn.relu(tf.nn.conv2d(x, self.w, 1, "SAME"))
            return tf.matmul(tf.reduce_mean(y, axis=[1, 2]), self.d)

    m = M()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path
