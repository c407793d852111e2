"""Detection building blocks: data users have (YOLO folders, COCO JSON), letterbox, mAP, NMS, agreement, registry.

Everything runs on files the tests write, through the real libraries (Pillow, OpenCV, pycocotools,
Ultralytics where installed). Expected mAP values come from COCO's documented definition (101-point
interpolated precision, IoU thresholds 0.50:0.05:0.95), not from this code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("pycocotools")
Image = pytest.importorskip("PIL.Image")

from edgeprune.data.dataset import DataError  # noqa: E402
from edgeprune.errors import EdgePruneError, NotBuiltError  # noqa: E402
from edgeprune.models import ultra  # noqa: E402
from edgeprune.tasks import (  # noqa: E402
    TASKS,
    get_task,  # noqa: E402
    task_of,
)
from edgeprune.tasks.detect_data import open_detection, open_split  # noqa: E402
from edgeprune.tasks.detect_eval import (  # noqa: E402
    Detections,
    agreement,
    coco_map,
    dense_outputs,
    detections,
    non_max_suppression,
)
from edgeprune.tasks.letterbox import PAD_VALUE, Letterbox  # noqa: E402

SHAPE = (1, 3, 64, 64)


def _img(path, h, w, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _yolo_tree(root, *, labels=None):
    """A data.yaml set: train 3 images, val 1, test 1; 2 classes."""
    labels = labels or {}
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        for i in range(n):
            stem = f"{split}{i}"
            _img(root / "images" / split / f"{stem}.png", 40, 80)
            text = labels.get(stem, "0 0.25 0.5 0.2 0.4\n1 0.75 0.5 0.1 0.2\n")
            if text is not None:
                (root / "labels" / split).mkdir(parents=True, exist_ok=True)
                (root / "labels" / split / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\ntest: images/test\n"
                                    "names:\n  0: cat\n  1: dog\n")
    return root / "data.yaml"


def test_yolo_yaml_split_boxes_and_letterboxed_targets(tmp_path):
    split = open_detection(_yolo_tree(tmp_path), input_shape=SHAPE, num_classes=2)
    assert (len(split.train), len(split.val), len(split.test)) == (3, 1, 1)
    assert split.heldout is split.test and split.train.classes == ["cat", "dog"]
    gt = split.train.ground_truth(0)  # source pixels of the 80x40 image
    np.testing.assert_allclose(gt[:, 1:5], [[12, 12, 28, 28], [56, 16, 64, 24]])
    x, t = split.train.get([0, 1])
    assert tuple(x.shape) == (2, 3, 64, 64) and t.shape == (4, 6)
    # 80x40 -> 64x32, padded 16 above and below: y centre 0.5 stays, heights halve
    np.testing.assert_allclose(t[0].numpy(), [0, 0, 0.25, 0.5, 0.2, 0.2], atol=1e-6)
    assert float(x[0, 0, 0, 0]) == pytest.approx(PAD_VALUE / 255) and float(x[0, 0, 32, 32]) == pytest.approx(90 / 255)
    # the same through the detect task's open_data, as the stages call it (edgeprune.load.split_for_model)
    again = get_task("detect").open_data(tmp_path / "data.yaml", input_shape=SHAPE, num_classes=2)
    assert again.train.labelled and len(again.train) == 3


def test_val_data_given_explicitly(tmp_path):
    for name, n in (("a", 4), ("b", 2)):
        for i in range(n):
            _img(tmp_path / name / "images" / f"{i}.png", 30, 30)
            (tmp_path / name / "labels").mkdir(parents=True, exist_ok=True)
            (tmp_path / name / "labels" / f"{i}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    split = get_task("detect").open_data(tmp_path / "a", input_shape=SHAPE, val_data=tmp_path / "b")
    assert (len(split.train), len(split.val)) == (4, 2) and split.to_dict()["split"] == "given"


def test_polygon_labels_count_as_their_boxes(tmp_path):
    split = open_detection(_yolo_tree(tmp_path, labels={"train0": "1 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n"}),
                           input_shape=SHAPE)
    np.testing.assert_allclose(split.train.ground_truth(0), [[1, 8, 8, 24, 24, 0]])


def test_yolo_folder_without_yaml_and_unlabelled_folder(tmp_path):
    for i in range(5):
        _img(tmp_path / "set" / "images" / f"{i}.jpg", 30, 30)
        (tmp_path / "set" / "labels").mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / "labels" / f"{i}.txt").write_text("" if i == 0 else "2 0.5 0.5 0.5 0.5\n")
    split = open_detection(tmp_path / "set", input_shape=SHAPE, num_classes=3)
    assert len(split.train) + len(split.val) == 5 and split.train.labelled and split.to_dict()["kind"] == "yolo-folder"
    for i in range(3):
        _img(tmp_path / "plain" / f"{i}.png", 20, 50)
    plain = open_detection(tmp_path / "plain", input_shape=SHAPE)
    assert not plain.train.labelled and tuple(plain.train.get([0])[0].shape) == (1, 3, 64, 64)


def test_coco_json_maps_categories_and_keeps_crowd_for_evaluation(tmp_path):
    _img(tmp_path / "val2017" / "a.jpg", 50, 100)
    _img(tmp_path / "val2017" / "b.jpg", 60, 60)
    (tmp_path / "annotations").mkdir()
    coco = {"images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
                       {"id": 9, "file_name": "b.jpg", "width": 60, "height": 60}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 5, 20, 30]},
                            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [50, 10, 40, 30], "iscrowd": 1},
                            {"id": 3, "image_id": 9, "category_id": 3, "bbox": [0, 0, 60, 60]}]}
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(coco))
    split = open_detection(path, input_shape=SHAPE, val_fraction=0.5)
    assert split.train.classes == ["car", "dog"]  # ordered by category id: 3 -> 0, 18 -> 1
    everything = sorted(tuple(map(float, r)) for d in (split.train, split.val) for i in range(len(d))
                         for r in d.ground_truth(i))
    assert everything == [(0.0, 0.0, 0.0, 60.0, 60.0, 0.0), (0.0, 50.0, 10.0, 90.0, 40.0, 1.0),
                          (1.0, 10.0, 5.0, 30.0, 35.0, 0.0)]
    a = split.train if split.train.files[0].name == "a.jpg" else split.val
    _, t = a.get([0])
    assert len(t) == 1  # the crowd box is not a training target


@pytest.mark.parametrize(("stem", "text", "expect"), [
    ("train1", "0 0.5 0.5 0.2\n", "train1.txt line 1: expected 'class cx cy w h'"),
    ("train1", "0 0.5 0.5 0.2 0.2\n0 0.9 0.5 0.4 0.2\n", "train1.txt line 2: box 0.9 0.5 0.4 0.2 is outside"),
    ("val0", "5 0.5 0.5 0.2 0.2\n", "val0.txt line 1: class 5 is not in data.yaml's names (0-1)"),
    ("test0", None, "test0.png: no label file"),
    ("train2", "0 0.5 0.5 abc 0.2\n", "train2.txt line 1: expected"),
])
def test_bad_yolo_labels_are_one_line_naming_the_file(tmp_path, stem, text, expect):
    with pytest.raises(DataError) as err:
        open_detection(_yolo_tree(tmp_path, labels={stem: text}), input_shape=SHAPE)
    msg = str(err.value)
    assert expect in msg and "\n" not in msg, msg


@pytest.mark.parametrize(("ann", "expect"), [
    ({"id": 4, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]}, "annotation 4: category_id 99 is not in"),
    ({"id": 5, "image_id": 1, "category_id": 1, "bbox": [30, 1, 50, 5]}, "annotation 5: bbox [30, 1, 50, 5] is outside"),
    ({"id": 6, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}, "annotation 6: image_id 2 is not in 'images'"),
    ({"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]}, "annotation 7: bbox must be [x, y, width, height]"),
])
def test_bad_coco_annotations_are_one_line(tmp_path, ann, expect):
    _img(tmp_path / "x.png", 40, 40)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.png"}], "categories": [{"id": 1, "name": "a"}],
                                "annotations": [ann]}))
    with pytest.raises(DataError) as err:
        open_detection(path, input_shape=SHAPE)
    assert expect in str(err.value) and "instances.json" in str(err.value) and "\n" not in str(err.value)


def test_letterbox_round_trip_of_boxes():
    rng = np.random.default_rng(1)
    for _ in range(50):
        src = (int(rng.integers(10, 900)), int(rng.integers(10, 900)))
        dst = (int(rng.integers(32, 640)), int(rng.integers(32, 640)))
        lb = Letterbox.fit(src, dst)
        x1, y1 = rng.uniform(0, src[1] / 2), rng.uniform(0, src[0] / 2)
        box = np.array([[x1, y1, x1 + rng.uniform(1, src[1] / 2), y1 + rng.uniform(1, src[0] / 2)]])
        inside = lb.to_input(box)
        assert (inside[:, [0, 2]] >= lb.left - 1e-9).all() and (inside[:, [0, 2]] <= lb.left + lb.new[1] + 1e-9).all()
        np.testing.assert_allclose(lb.to_source(inside), box, rtol=1e-12, atol=1e-9)
        assert lb.new[0] == dst[0] or lb.new[1] == dst[1]  # aspect kept: one side fills the input


@pytest.mark.skipif(not ultra.available(), reason="ultralytics is not installed")
def test_letterbox_pixels_match_ultralytics():
    augment = ultra.import_ultralytics("ultralytics.data.augment")
    rng = np.random.default_rng(0)
    for h, w in [(100, 200), (333, 250), (37, 301), (64, 64)]:
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        theirs = augment.LetterBox((64, 96), auto=False, scaleup=True)(image=img)
        assert np.array_equal(Letterbox.fit((h, w), (64, 96)).image(img), theirs)


def _gt():
    return [np.array([[0, 10, 10, 50, 50, 0], [1, 60, 60, 100, 120, 0]], dtype=float)]


def test_map_known_answers_from_cocoeval():
    gt, size = _gt(), [(200, 200)]
    perfect = [Detections(gt[0][:, 1:5].copy(), np.array([0.9, 0.8]), np.array([0, 1]))]
    fig = coco_map(gt, perfect, sizes=size, num_classes=2)
    assert fig["map50_95"] == pytest.approx(1.0) and fig["map50"] == pytest.approx(1.0)
    # class 0 shifted 8 px: IoU 32*40 / (2*40*40 - 32*40) = 0.667 -> matched at 0.50..0.65 (4 of 10 thresholds)
    shifted = gt[0][:, 1:5].copy()
    shifted[0] += [8, 0, 8, 0]
    fig = coco_map(gt, [Detections(shifted, np.array([0.9, 0.8]), np.array([0, 1]))], sizes=size, num_classes=2)
    assert fig["map50"] == pytest.approx(1.0) and fig["map50_95"] == pytest.approx((0.4 + 1.0) / 2)
    # a false positive scoring above the true one: precision 1/2 at full recall -> AP 0.5 for that class
    boxes = np.vstack([[150, 150, 190, 190], gt[0][0, 1:5]])
    fig = coco_map([gt[0][:1]], [Detections(boxes, np.array([0.9, 0.8]), np.array([0, 0]))], sizes=size,
                   num_classes=2)
    assert fig["map50"] == pytest.approx(0.5) and fig["map50_95"] == pytest.approx(0.5)
    assert coco_map(gt, [Detections.empty()], sizes=size, num_classes=2)["map50_95"] == 0.0


def _dense():
    """[1, 4+2, 4]: two overlapping class-0 boxes, one class-1 box on the same spot, one far away."""
    d = np.zeros((1, 6, 4))
    d[0, :4] = np.array([[30, 30, 40, 40], [32, 30, 40, 40], [31, 30, 40, 40], [100, 100, 20, 20]]).T
    d[0, 4] = [0.9, 0.8, 0.0, 0.6]
    d[0, 5] = [0.0, 0.0, 0.7, 0.0]
    return d


@pytest.mark.parametrize("backend", ["opencv", "ultralytics"])
def test_nms_keeps_one_box_per_object_and_class(backend):
    if backend == "ultralytics" and not ultra.available():
        pytest.skip("ultralytics is not installed")
    d = non_max_suppression(_dense(), backend=backend)[0]
    got = sorted(zip(d.classes.tolist(), np.round(d.scores, 3).tolist(), strict=True))
    assert got == [(0, 0.6), (0, 0.9), (1, 0.7)]
    top = d.boxes[np.argmax(d.scores)]
    np.testing.assert_allclose(top, [10, 10, 50, 50])


def test_decoding_dense_end_to_end_and_raw_maps():
    kind, arr = dense_outputs(_dense(), num_classes=2)
    assert kind == "dense" and arr.shape == (1, 6, 4)
    rows = np.array([[[10, 10, 50, 50, 0.9, 1], [0, 0, 5, 5, 0.0005, 0]]])
    e2e = detections(rows, num_classes=2)[0]  # end-to-end: thresholded, no NMS
    assert len(e2e) == 1 and e2e.classes.tolist() == [1]
    import torch

    reg, nc = 16, 2
    maps = [torch.zeros(1, 4 * reg + nc, s, s) for s in (8, 4)]
    maps[0][0, 4 * reg, 3, 5] = 10.0  # one confident class-0 cell; uniform box bins -> 7.5 cells each side
    dets = detections(tuple(maps), num_classes=nc, input_shape=(1, 3, 64, 64), conf=0.5)[0]
    assert len(dets) == 1 and dets.classes.tolist() == [0]
    np.testing.assert_allclose(dets.boxes[0], np.array([5.5 - 7.5, 3.5 - 7.5, 5.5 + 7.5, 3.5 + 7.5]) * 8, atol=1e-4)


def test_agreement_counts_the_originals_confident_detections():
    ref = [Detections(np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], float),
                      np.array([0.9, 0.8, 0.1]), np.array([0, 1, 0]))]
    same = agreement(ref, ref)
    assert same["recall"] == 1.0 and same["detections"] == 2  # the 0.1 one is not confident
    moved = [Detections(np.array([[5, 0, 15, 10], [20, 20, 40, 40]], float), np.array([0.9, 0.2]), np.array([0, 1]))]
    got = agreement(ref, moved)  # IoU 5/15 < 0.5 for the first; the second dips to 0.2 (>= 0.125): still found
    assert got["recall"] == 0.5 and got["iou"] == 0.5 and got["conf"] == 0.25
    wrong = [Detections(ref[0].boxes[:2], np.array([0.9, 0.8]), np.array([1, 0]))]
    assert agreement(ref, wrong)["recall"] == 0.0


def test_registry_and_task_of():
    import torch

    assert set(TASKS) >= {"classify", "detect"} and TASKS["detect"].metric == "map50_95"
    with pytest.raises(NotBuiltError, match="segment"):
        get_task("segment")
    with pytest.raises(EdgePruneError, match="did you mean detect"):
        get_task("detcet")
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    assert task_of(clf, input_shape=(1, 3, 8, 8)) == "classify"
    assert task_of(clf, override="detect") == "detect"
    from edgeprune.models.yolo import YoloSmall

    assert task_of(YoloSmall(nc=3), input_shape=(1, 3, 64, 64)) == "detect"
    assert TASKS["detect"].open_data.resolve() is open_split
