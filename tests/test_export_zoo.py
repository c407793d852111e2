"""Export defects the zoo and the built-ins hit: padded MaxPools in INT8, detector scores in INT8, input shapes.

- A ResNet-style stem (conv, ReLU, ``MaxPool(3, 2, 1)``): onnx2tf pads the pool
  with -FLT_MAX and full-INT8 calibration turns that into an int8 scale near
  1e36 that XNNPACK refuses. The padding is made explicit with a finite value
  (exactly the same outputs, checked in ONNX Runtime); where no value is safe
  the export fails naming the cause.
- A YOLO head with one decoded ``[1, 4 + classes, anchors]`` output: exported
  whole to full-INT8 TFLite, every class score becomes 0 while the cosine over
  the whole tensor stays ~0.99; the per-output and detection checks fail it.
  Exported split (the default for INT8 detectors), boxes and scores get their
  own scales and the detections survive.
- ``--input-shape``: the shape used and where it came from are in export.json.

The zoo detector has random weights (class logits centred at -2, BatchNorm
calibrated: tests/zoo/yolo_ultra.py:yolov8n_export); a deep random network
amplifies INT8 rounding, so its split export is checked against loose but
meaningful thresholds (``SANE``), which the collapsed export fails by far.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgeprune.api import export_model as export  # noqa: E402
from edgeprune.checks.thresholds import Thresholds  # noqa: E402
from edgeprune.errors import ExportError  # noqa: E402
from edgeprune.export.pipeline import AgreementError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
DETECTOR = "tests.zoo.yolo_ultra:yolov8n_export"
SHAPE = (1, 3, 128, 128)
SANE = Thresholds(top1=0.0, cosine=0.5, recall=0.3, score_corr=0.5)


@pytest.fixture(autouse=True)
def _zoo_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


class _Stem(torch.nn.Module):
    """conv -> BN -> activation -> MaxPool(3, 2, 1) -> conv -> pooled logits."""

    def __init__(self, act):
        super().__init__()
        nn = torch.nn
        self.conv, self.bn, self.act = nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), act
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.head = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.head(self.pool(self.act(self.bn(self.conv(x))))).mean((2, 3))


@pytest.mark.parametrize("act,rewritten", [
    (torch.nn.ReLU(), 1), (torch.nn.ReLU6(), 1), (torch.nn.SiLU(), 1), (torch.nn.Hardswish(), 1),
    (torch.nn.Identity(), 0),
])
def test_padded_maxpool_gets_a_finite_pad_value_with_identical_outputs(tmp_path, act, rewritten):
    import onnx

    from edgeprune.export.onnx import export_onnx, run_onnx
    from edgeprune.export.tflite import _finite_maxpool_padding

    torch.manual_seed(0)
    model = _Stem(act).eval()
    path = export_onnx(model, (1, 3, 32, 32), tmp_path / "stem.onnx")
    proto = onnx.load(str(path))
    done, left = _finite_maxpool_padding(proto)
    assert (done, len(left)) == (rewritten, 1 - rewritten)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp_path / "padded.onnx"))
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    a, b = run_onnx(path, x)[0], run_onnx(tmp_path / "padded.onnx", x)[0]
    assert np.array_equal(a, b)  # the same function, bit for bit
    if rewritten:
        pads = [n for n in proto.graph.node if n.op_type == "Pad"]
        assert len(pads) == 1 and all(v == 0 for a_ in proto.graph.node if a_.op_type == "MaxPool"
                                      for at in a_.attribute if at.name == "pads" for v in at.ints)


def test_unbounded_padded_maxpool_int8_fails_naming_the_cause(tmp_path):
    """No activation before the pool: no safe pad value, so the INT8 file is refused with the reason."""
    from edgeprune.models import LoadedModel

    torch.manual_seed(0)
    lm = LoadedModel(module=_Stem(torch.nn.Identity()).eval(), input_shape=(1, 3, 32, 32), name="stem",
                     source="test", task="classify")
    with pytest.raises(ExportError, match=r"int8 scale of .*MaxPool.*-FLT_MAX") as exc:
        export(lm, target="raspberry-pi-4", output=tmp_path, calib_count=16, verify_count=8)
    assert "\n" not in str(exc.value)


def test_decoded_detector_int8_collapse_fails_and_the_split_export_keeps_the_scores(tmp_path):
    from edgeprune.export.tflite import interpreter

    with pytest.raises(AgreementError) as exc:
        export(DETECTOR, target="raspberry-pi-5", output=tmp_path / "whole", input_shape=SHAPE,
               calib_count=32, verify_count=8, min_agreement=SANE, detector_outputs="keep")
    final = exc.value.report.artifacts[-1]
    rows = {r["role"]: r for r in final.extra["outputs"]}
    assert final.agreement["cosine"] > 0.98  # what the old check looked at: it passed
    assert rows["scores"]["cosine"] < 0.05 and final.extra["detection"]["recall"] < 0.05
    assert "output0 scores' cosine" in str(exc.value) and "confident detections" in str(exc.value)

    report = export(DETECTOR, target="raspberry-pi-5", output=tmp_path / "split", input_shape=SHAPE,
                    calib_count=32, verify_count=8, min_agreement=SANE)
    final = report.final
    rows = {r["role"]: r for r in final.extra["outputs"]}
    assert rows["scores"]["cosine"] > 0.8 and rows["boxes"]["cosine"] > 0.98
    assert final.extra["detection"]["recall"] > 0.3 and final.extra["detection"]["score_corr"] > 0.7
    it = interpreter(final.path)  # XNNPACK on
    outs = it.get_output_details()
    assert sorted(tuple(o["shape"]) for o in outs) == [(1, 4, 336), (1, 80, 336)] or sorted(
        tuple(o["shape"]) for o in outs) == [(1, 336, 4), (1, 336, 80)]
    scales = sorted(o["quantization"][0] for o in outs)
    assert scales[1] / scales[0] > 50  # pixels and probabilities: their own scales
    data = json.loads((tmp_path / "split" / "export.json").read_text())
    assert [o["role"] for o in data["outputs"]] == ["boxes", "scores"]
    md = (tmp_path / "split" / "report.md").read_text()
    assert "| output0 scores | scores |" in md and "Detections: it finds" in md
    assert data["verification"]["outputs_split"] and any("own INT8 scale" in n for n in data["notes"])


def test_onnx_int8_detector_is_split_with_the_decode_kept_float(tmp_path):
    import onnx

    report = export(DETECTOR, target="local", fmt="onnx", precision="int8", output=tmp_path,
                    input_shape=SHAPE, calib_count=32, verify_count=8, min_agreement=SANE)
    final = report.final
    graph = onnx.load(str(final.path)).graph
    assert [o.name for o in graph.output] == ["output0", "output1"]
    assert final.extra["float_nodes"] > 0  # sigmoid, split, anchor arithmetic stay float
    rows = {r["role"]: r for r in final.extra["outputs"]}
    assert rows["scores"]["cosine"] > 0.8 and final.extra["detection"]["recall"] > 0.3
    fp32 = report.artifacts[0]
    assert fp32.extra["detection"]["recall"] > 0.99 and fp32.agreement["max_abs"] < 1e-2


def test_export_input_shape_is_used_and_its_source_stated(tmp_path):
    import subprocess

    out = tmp_path / "given"
    run = subprocess.run(
        [sys.executable, "-m", "edgeprune", "export", "-t", "local", "-m", DETECTOR, "--input-shape", "1,3,96,96",
         "-o", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads((out / "export.json").read_text())
    assert data["input_shape"] == [1, 3, 96, 96] and data["input_shape_source"] == "--input-shape"
    assert "1x3x96x96 (from --input-shape)" in run.stdout
    report = export(DETECTOR, target="local", output=tmp_path / "default", verify_count=4)
    assert report.input_shape == [1, 3, 224, 224] and "default" in report.input_shape_source
    assert any("pass --input-shape" in w for w in report.warnings)
    builtin = export("digits-cnn", target="local", output=tmp_path / "builtin", verify_count=4)
    assert builtin.input_shape_source == "the built-in digits-cnn's own size" and not builtin.warnings


def test_split_outputs_of_a_model_that_also_uses_them_internally(tmp_path):
    """Ultralytics' eval output (y, [x0, x1, x2]): each raw map is an output *and* feeds the decode."""
    import importlib

    from edgeprune.export.detect import OutputCheck, output_layout, pieces, split_onnx_outputs
    from edgeprune.export.onnx import export_onnx, run_onnx
    from edgeprune.prune.groups import flat_tensors

    model = importlib.import_module("tests.zoo.yolo_ultra").yolov8n()
    layout = output_layout(model, SHAPE, task="detect")
    assert [p.role for p in layout] == ["boxes", "scores"] * 4 and layout[0].decoded and not layout[2].decoded
    x = torch.randn(2, *SHAPE[1:])
    with torch.no_grad():
        ref = pieces([t.numpy() for t in flat_tensors(model(x))], layout)
    path = export_onnx(model, SHAPE, tmp_path / "y.onnx")
    check = OutputCheck(layout, [(1, *r.shape[1:]) for r in flat_tensors(model(torch.zeros(SHAPE)))], True, SHAPE)
    split_onnx_outputs(path, layout, check.artifact_shapes())
    got = run_onnx(path, x.numpy())
    assert len(got) == 8
    for r, g in zip(ref, got, strict=True):
        assert r.shape == g.shape and np.abs(r - g).max() <= 1e-3 * max(1.0, np.abs(r).max())
    assert check.figures(ref, got)["detection"]["recall"] > 0.99


class _Gelu(torch.nn.Module):
    """Exact GELU (ONNX Erf, as in every ViT and ConvNeXt): TFLite has no Erf kernel."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.act = torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.Conv2d(16, 8, 3, 1, 1), torch.nn.GELU()

    def forward(self, x):
        return self.b(self.act(self.a(x))).mean((2, 3))


@pytest.mark.parametrize("precision,max_err", [("fp32", 1e-4), ("int8", None)])
def test_exact_gelu_converts_to_tflite(tmp_path, precision, max_err):
    from edgeprune.models import LoadedModel

    torch.manual_seed(0)
    lm = LoadedModel(module=_Gelu().eval(), input_shape=(1, 3, 32, 32), name="gelu", source="test", task="classify")
    report = export(lm, target="raspberry-pi-5", precision=precision, output=tmp_path, calib_count=32,
                    verify_count=8, min_agreement=Thresholds(top1=0.0, cosine=0.9))
    assert report.final.step == f"tflite {precision}"
    if max_err is not None:
        assert report.final.agreement["max_abs"] < max_err
