"""Detector training pieces and the reference set: distillation, Ultralytics' loss, artifacts' outputs, fmnist-det.

Tiny models at 64 px (edgeprune's yolo-small with 3 classes; Ultralytics' YOLOv8n and YOLO26n built from
their YAML where ultralytics is installed) keep these fast.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("pycocotools")

from edgeprune.data import available as data_available  # noqa: E402
from edgeprune.models import ultra  # noqa: E402
from edgeprune.models.yolo import YoloSmall  # noqa: E402
from edgeprune.tasks.detect_eval import agreement_of, detections, evaluate  # noqa: E402
from edgeprune.tasks.detect_loss import distill_loss, prepare_supervised, raw_head, train_step  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 3, 64, 64)


def _tiny(nc=3):
    torch.manual_seed(0)
    return YoloSmall(nc=nc, w=(8, 16, 16, 32, 32)).eval()


def test_distillation_is_zero_for_the_teacher_and_falls_in_a_few_steps():
    teacher = _tiny()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t_out = teacher(x)
    zero, _ = distill_loss(t_out, t_out, num_classes=3)
    assert float(zero) == pytest.approx(0.0, abs=1e-5)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    student.train()
    opt = torch.optim.Adam(student.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss, items = train_step(student, x, teacher=teacher, num_classes=3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(items["loss"])
    assert losses[-1] < 0.7 * losses[0], losses
    assert set(items) >= {"distill_cls", "distill_box", "loss"}


def test_nothing_to_learn_is_a_clear_error():
    from edgeprune.errors import EdgePruneError

    with pytest.raises(EdgePruneError, match="nothing to train on"):
        train_step(_tiny().train(), (torch.zeros(1, 3, 64, 64), torch.zeros(0, 6)), num_classes=3)


@pytest.mark.skipif(not ultra.available(), reason="ultralytics is not installed")
@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_ultralytics_own_loss_and_distillation_on_a_real_model(cfg):
    from edgeprune.tasks.detect_loss import supervised_loss, ultralytics_batch

    tasks = ultra.import_ultralytics("ultralytics.nn.tasks")
    torch.manual_seed(0)
    model = tasks.DetectionModel(cfg, nc=3, verbose=False)
    teacher = copy.deepcopy(model).eval()
    prepare_supervised(model, epochs=3)
    model.train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4], [1, 2, 0.3, 0.3, 0.2, 0.3]])
    loss, items = train_step(model, (x, t), teacher=teacher, num_classes=3)
    loss.backward()
    assert np.isfinite(items["loss"]) and float(model.model[0].conv.weight.grad.abs().sum()) > 0
    assert {"box_loss", "cls_loss"} <= set(items) and {"distill_cls", "distill_box"} <= set(items)
    # the supervised term is the library's own number (per image), not a re-implementation
    with torch.no_grad():
        out = model(x)
        ours, _ = supervised_loss(model, out, x, t)
        theirs, _ = model.loss(ultralytics_batch(x, t), out)
    assert float(ours) == pytest.approx(float(theirs.sum()) / 2, rel=1e-6)
    assert len(raw_head(teacher(x))) == (2 if "26" in cfg else 1)  # YOLO26: one-to-many and one-to-one


@pytest.mark.skipif(not ultra.available(), reason="ultralytics is not installed")
def test_end_to_end_head_output_needs_no_nms():
    tasks = ultra.import_ultralytics("ultralytics.nn.tasks")
    torch.manual_seed(0)
    model = tasks.DetectionModel("yolo26n.yaml", nc=3, verbose=False).eval()
    model.end2end = True
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out[0].shape[-1] == 6  # [1, K, 6]: x1, y1, x2, y2, score, class
    dets = detections(out, num_classes=3, conf=0.0)[0]
    assert len(dets) == out[0].shape[1]  # every row kept: thresholded only, never suppressed


def _onnx_artifact(tmp_path, model):
    pytest.importorskip("onnxruntime")
    from edgeprune.export.detect import output_layout, split_onnx_outputs
    from edgeprune.export.onnx import export_onnx, run_onnx

    layout = output_layout(model, SHAPE, task="detect")
    path = export_onnx(model, SHAPE, tmp_path / "m.onnx")
    with torch.no_grad():
        whole = [o.numpy() for o in model(torch.zeros(*SHAPE))]
    shapes = [(1, p.end - p.start, *whole[p.source].shape[2:]) for p in layout]
    split_onnx_outputs(path, layout, shapes)
    return layout, lambda x: run_onnx(path, x.numpy())


def test_detections_from_a_split_onnx_artifact_match_the_model(tmp_path):
    model = _tiny()
    from edgeprune.models.stats import calibrate_batchnorm

    calibrate_batchnorm(model, SHAPE)
    layout, run = _onnx_artifact(tmp_path, model)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = detections(model(x), num_classes=3, input_shape=SHAPE, conf=0.05)[0]
    got = detections(run(x), num_classes=3, input_shape=SHAPE, layout=layout, conf=0.05)[0]
    assert len(ref) > 0 and len(got) == len(ref)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=1e-2)
    assert got.classes.tolist() == ref.classes.tolist()


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    if not data_available("fashion-mnist"):
        pytest.skip("fashion-mnist is not fetched (bash scripts/fetch-data.sh fashion-mnist)")
    pytest.importorskip("skimage")
    from edgeprune.data.fmnist_det import generate

    root = tmp_path_factory.mktemp("fdet")
    counts = {"train": 6, "val": 2, "test": 3}
    return generate(root / "a", counts=counts), generate(root / "b", counts=counts)


def test_reference_set_is_deterministic_and_its_boxes_are_inside(tiny_set):
    from PIL import Image

    from edgeprune.data.fmnist_det import BACKGROUNDS, check
    from edgeprune.tasks.detect_data import open_detection

    a, b = tiny_set
    info = json.loads((a / "info.json").read_text())
    assert info == json.loads((b / "info.json").read_text()) and info["semi_synthetic"] is True
    assert (a / "SHA256SUMS").read_text() == (b / "SHA256SUMS").read_text()  # byte for byte, every file
    assert check(a) is None
    for split in ("train", "val", "test"):
        others = [bg for s in BACKGROUNDS if s != split for bg in BACKGROUNDS[s]]
        assert not set(BACKGROUNDS[split]) & set(others)  # a background belongs to one split only
        for img in sorted((a / "images" / split).glob("*.jpg")):
            w, h = Image.open(img).size
            rows = np.loadtxt(a / "labels" / split / f"{img.stem}.txt", ndmin=2)
            assert len(rows) >= 1
            cx, cy, bw, bh = rows[:, 1:].T
            assert (cx - bw / 2 >= -1e-6).all() and (cx + bw / 2 <= 1 + 1e-6).all()  # 6 decimals
            assert (cy - bh / 2 >= -1e-6).all() and (cy + bh / 2 <= 1 + 1e-6).all()
            assert (bw * w >= 4).all() and (bh * h >= 4).all()
    split = open_detection(a / "data.yaml", input_shape=(1, 3, 96, 96), num_classes=10)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 2, 3)
    (a / "labels" / "val" / "val_00000.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert "sha256 differs" in check(a)


def test_evaluate_and_agreement_run_end_to_end_on_images(tiny_set):
    from edgeprune.tasks.detect_data import open_detection

    model = _tiny(nc=10)
    split = open_detection(tiny_set[1] / "data.yaml", input_shape=SHAPE, num_classes=10)
    fig = evaluate(lambda x: model(x), split.test, num_classes=10)
    assert 0.0 <= fig["map50_95"] <= fig["map50"] <= 1.0 and fig["images"] == 3 and "pycocotools" in fig["library"]
    same = agreement_of(lambda x: model(x), lambda x: model(x), split.test, num_classes=10, conf=0.0)
    assert same["recall"] == 1.0 and same["detections"] > 0


@pytest.mark.skipif(not ultra.available(), reason="ultralytics is not installed")
def test_the_two_nms_libraries_agree_on_a_models_outputs():
    from edgeprune.models.stats import calibrate_batchnorm
    from edgeprune.tasks.detect_eval import dense_outputs, non_max_suppression

    model = calibrate_batchnorm(_tiny(), (1, 3, 96, 96))
    with torch.no_grad():
        out = model(torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(4)))
    _, dense = dense_outputs(out, num_classes=3, input_shape=(1, 3, 96, 96))
    for a, b in zip(non_max_suppression(dense, backend="opencv"), non_max_suppression(dense, backend="ultralytics"),
                    strict=True):
        assert len(a) == len(b) > 0
        oa, ob = np.lexsort((a.classes, -a.scores)), np.lexsort((b.classes, -b.scores))
        np.testing.assert_allclose(a.boxes[oa], b.boxes[ob], atol=1e-3)
        assert a.classes[oa].tolist() == b.classes[ob].tolist()
