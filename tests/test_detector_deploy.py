"""Issue 19: a user's own Ultralytics detector goes through ``edgeprune deploy`` with an mAP gate.

Nothing here is a built-in: the model is a factory module this test writes
(``userdet:build``, Ultralytics' real ``DetectionModel("yolov8n.yaml", nc=1)``),
trained here with Ultralytics' own loss on a YOLO folder this test writes
(``fmnist-det``'s generator, relabelled to one class "garment"). edgeprune gets
the folder's ``data.yaml``: it fine-tunes on ``train``/``val`` and gates on
``test``. The test then runs the file the board holds with its own ONNX Runtime
loop and measures its mAP on the test images itself (pycocotools through
``detect_eval.evaluate``), and checks the deploy's figures against that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")
pytest.importorskip("pycocotools")
yaml = pytest.importorskip("yaml")

from edgeprune.models import ultra  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ultra.available(), reason="ultralytics is not installed")]

REPO = Path(__file__).resolve().parent.parent
SIZE = 64
USERDET = '''
"""A user's detector: Ultralytics YOLOv8n with one class."""
from ultralytics.nn.tasks import DetectionModel


def build():
    return DetectionModel("yolov8n.yaml", nc=1, verbose=False)
'''


def _one_class(root: Path) -> None:
    for p in root.glob("labels/*/*.txt"):
        rows = [line.split() for line in p.read_text().splitlines() if line.strip()]
        p.write_text("".join("0 " + " ".join(r[1:]) + "\n" for r in rows))
    spec = yaml.safe_load((root / "data.yaml").read_text())
    spec["names"] = {0: "garment"}
    spec.pop("nc", None)
    (root / "data.yaml").write_text(yaml.safe_dump(spec))


def _user_module(root: Path):
    sys.path.insert(0, str(root))
    try:
        ultra.import_ultralytics()  # ultralytics reads torchvision's version at import (not installed here)
        import userdet

        return userdet
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's project: userdet.py, weights.pt (trained here), data/ (a YOLO folder with data.yaml)."""
    from edgeprune.data.fmnist_det import generate
    from edgeprune.tasks.detect_data import open_detection
    from edgeprune.tasks.detect_eval import evaluate
    from edgeprune.tasks.detect_loss import prepare_supervised, train_step

    root = tmp_path_factory.mktemp("userdet")
    (root / "userdet.py").write_text(USERDET)
    generate(root / "data", counts={"train": 240, "val": 40, "test": 80})
    _one_class(root / "data")
    split = open_detection(root / "data" / "data.yaml", input_shape=(1, 3, SIZE, SIZE), num_classes=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _user_module(root).build()
        prepare_supervised(model)
        opt = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=5e-4)
        for epoch in range(10):
            model.train()
            for batch in split.train.batches(16, shuffle=True, seed=epoch, augment="flip+shift"):
                loss, _ = train_step(model, batch, num_classes=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    torch.save(model.state_dict(), root / "weights.pt")
    fig = evaluate(lambda x: model(x), split.test, num_classes=1)
    assert fig["map50_95"] > 0.03, f"the user's detector trained badly here ({fig}); the test needs a real model"
    return {"root": root, "map50_95": fig["map50_95"], "split": split}


def _cli(user, *args, timeout=1500):
    env = {**os.environ, "PYTHONPATH": f"{user['root']}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          cwd=user["root"], env=env, timeout=timeout)


def _deploy(user, *extra):
    r = user["root"]
    return _cli(user, "deploy", "-t", "local", "-m", "userdet:build", "--weights", str(r / "weights.pt"),
                "--data", str(r / "data" / "data.yaml"), "--input-shape", f"1,3,{SIZE},{SIZE}",
                "--speedup", "1.2", "--steps", "16", "--max-rounds", "2", "--threads", "1", *extra)


def test_a_user_detector_deploys_with_an_map_gate_and_the_board_holds_what_was_measured(user):
    # a gate the fine-tune cannot miss by accident: the test is of the figures, not of luck
    p = _deploy(user, "--max-accuracy-drop", "100", "-o", "out", "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    assert rep["ok"] and rep["shipped"] and not rep["forced"], rep
    out = user["root"] / "out"
    rows = {r["stage"]: r for r in rep["accuracy"]}
    assert all(r["metric"] == "map50_95" for r in rows.values()), rows
    gate = json.loads((out / "verify" / "gate.json").read_text())
    # the original in the gate is the user's weights, measured on the test split as this test measures it
    assert gate["original"] == pytest.approx(user["map50_95"], abs=1e-4), gate
    assert gate["samples"] == 80 and gate["passed"]
    ft = json.loads((out / "finetune" / "finetune.json").read_text())
    assert ft["task"] == "detect" and ft["metric_name"] == "mAP50-95" and ft["steps"] >= 1
    # the budget's allocation compared the groups by the loss of the labelled boxes (Taylor), not by magnitude
    lat = json.loads((out / "prune" / "summary.json").read_text())["latency"]
    assert lat["sensitivity"] == "taylor" and lat["importance"] == "l1", lat

    # the file the board runs now, run by this test's own ONNX Runtime loop on the held-out images
    import onnxruntime as ort

    from edgeprune._paths import sha256_file
    from edgeprune.tasks.detect_eval import evaluate

    release = rep["release"]
    shipped = Path(release["deploy_dir"]) / "current" / "model.onnx"
    assert sha256_file(shipped) == release["sha256"]
    sess = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    fig = evaluate(lambda x: [torch.from_numpy(o) for o in sess.run(None, {name: x.numpy()})],
                   user["split"].test, num_classes=1, batch_size=1)  # the file takes one image
    assert gate["final"] == pytest.approx(fig["map50_95"], abs=2e-3), (gate, fig)
    assert gate["drop"] == pytest.approx(100 * (user["map50_95"] - fig["map50_95"]), abs=0.2), gate

    # the same run with a gate of no loss at all: the board's stages are not asked again (fine-tuning and
    # export check the gate too, so they run again), and the refusal says mAP50-95
    strict = _deploy(user, "--max-accuracy-drop", "0", "-o", "out", "--json")
    if gate["drop"] > 0:
        assert strict.returncode == 2, strict.stderr[-2000:]
        err = json.loads(strict.stdout)["error"]["message"]
        assert "map50_95" in err and "points lost" in err and "--force" in err, err
    else:  # the fine-tune (with labels) beat the user's own training: nothing to refuse
        assert strict.returncode == 0, strict.stderr[-2000:]
    again = json.loads((out / "report" / "deploy.json").read_text())  # written whether it shipped or not
    assert {"measure", "prune"} <= set(again["run"]["reused"]), again["run"]


def test_bad_detection_labels_are_one_line_before_any_work(user, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(user["root"] / "data", data)
    label = sorted((data / "labels" / "train").glob("*.txt"))[3]
    label.write_text("0 0.5 0.5 1.7 0.2\n")  # a box wider than its image
    p = _cli(user, "deploy", "-t", "local", "-m", "userdet:build", "--weights", str(user["root"] / "weights.pt"),
             "--data", str(data / "data.yaml"), "--input-shape", f"1,3,{SIZE},{SIZE}", "--speedup", "1.2",
             "-o", str(tmp_path / "out"))
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and label.name in lines[0] and "internal error" not in lines[0], p.stderr
    assert not (tmp_path / "out" / "measure").exists()  # refused before the board was asked anything


def test_a_detectors_taylor_scores_are_the_loss_of_its_labelled_boxes(user, tmp_path):
    """`prune --importance taylor` on the user's detector: channels scored by Ultralytics' own loss on the
    labelled boxes of the train split (was: refused as a classifier-only score), on the model as
    `YOLO("best.pt").model` loads it (its trainer's checkpoint has requires_grad off: "no gradient reached
    group model.2.cv2.conv" in a deploy). A dead channel (its conv's weights zeroed) carries no loss, so it is
    the first to go; without labels it is one line."""
    import shutil

    from edgeprune.prune.importance import TAYLOR_ATTR, accumulate_taylor_grads
    from edgeprune.prune.pipeline import importance_batches
    from edgeprune.tasks.detect_loss import DetectionTaylorBatches
    from tests.zoo.ultralytics_real import save_checkpoint

    trained = _user_module(user["root"]).build()
    trained.load_state_dict(torch.load(user["root"] / "weights.pt", weights_only=True))
    save_checkpoint(trained, tmp_path / "best.pt", cfg="yolov8n.yaml", imgsz=SIZE)
    from ultralytics import YOLO

    module = YOLO(str(tmp_path / "best.pt")).model  # as the user loads it: every requires_grad is False
    assert not any(p.requires_grad for p in module.parameters())
    batches = importance_batches(user["split"], importance="taylor", budget=False, task="detect", module=module)
    assert isinstance(batches, DetectionTaylorBatches) and len(batches) >= 1
    conv = module.model[2].cv2.conv  # a neck conv of the real YOLOv8n
    with torch.no_grad():
        conv.weight[3].zero_()
    accumulate_taylor_grads(module, batches)
    assert not any(p.requires_grad for p in module.parameters())  # left as it was
    scores = getattr(conv, TAYLOR_ATTR)
    assert scores[3] == 0 and (scores > 0).sum() == len(scores) - 1, scores

    p = _cli(user, "prune", "-t", "local", "-m", "userdet:build", "--weights", str(user["root"] / "weights.pt"),
             "--data", str(user["root"] / "data" / "data.yaml"), "--input-shape", f"1,3,{SIZE},{SIZE}",
             "--ratio", "0.25", "--importance", "taylor", "-o", str(tmp_path / "pruned"), "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "pruned" / "summary.json").read_text())["importance"] == "taylor"

    photos = tmp_path / "photos"  # the same images, no labels
    shutil.copytree(user["root"] / "data" / "images" / "train", photos)
    p = _cli(user, "prune", "-t", "local", "-m", "userdet:build", "--weights", str(user["root"] / "weights.pt"),
             "--data", str(photos), "--input-shape", f"1,3,{SIZE},{SIZE}", "--ratio", "0.25", "--importance",
             "taylor", "--task", "detect", "-o", str(tmp_path / "no-labels"))
    lines = p.stderr.strip().splitlines()
    assert p.returncode != 0 and len(lines) == 1 and "labelled boxes" in lines[0], p.stderr
    assert not (tmp_path / "no-labels").exists()


def test_a_user_detector_deploys_to_a_farm_board(user, farm, tmp_path):
    """The same detector to a real sshd board (tests/farm): shipped, and its outputs checked on the board."""
    import uuid

    folder = f"/tmp/deploy-det-{uuid.uuid4().hex[:8]}" if farm.privileged else str(tmp_path / "deploy-b1")
    targets = tmp_path / "targets.toml"
    targets.write_text(farm.targets_toml(extra={"det-b1": {"board": "b1", "deploy_dir": folder}}))
    r = user["root"]
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(targets), "PYTHONPATH": f"{r}{os.pathsep}{REPO}"}
    args = ["deploy", "-t", "det-b1", "-m", "userdet:build", "--weights", str(r / "weights.pt"),
            "--data", str(r / "data" / "data.yaml"), "--input-shape", f"1,3,{SIZE},{SIZE}", "--ratio", "0.2",
            "--steps", "16", "--threads", "1", "--format", "onnx", "--precision", "fp32",
            "--max-accuracy-drop", "100", "-o", str(tmp_path / "out"), "--json"]
    p = subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, cwd=r,
                       env=env, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    assert rep["ok"] and rep["gate"]["passed"] and rep["gate"]["metric"] == "map50_95"
    assert rep["gate"]["original"] == pytest.approx(user["map50_95"], abs=1e-4)
    assert rep["release"]["verification"]["passed"] is True  # held-out images ran on the board and matched


def test_the_shares_of_a_detection_batch_are_one_processs_batch(user):
    """DetectionDataset.batches(part=(rank, world)): two ranks' rows and boxes, put back together, are exactly
    the batch one process gets (same images, same augmentation, every box once, re-based to its share)."""
    train = user["split"].train
    whole = list(train.batches(16, shuffle=True, seed=3, augment="flip+shift", limit=40))
    parts = [list(train.batches(16, shuffle=True, seed=3, augment="flip+shift", limit=40, part=(r, 2)))
             for r in range(2)]
    assert len(whole) == len(parts[0]) == len(parts[1]) == 3
    for (x, t), (x0, t0), (x1, t1) in zip(whole, *parts, strict=True):
        assert torch.equal(torch.cat([x0, x1]), x)
        t1 = t1.clone()
        t1[:, 0] += len(x0)
        assert torch.equal(torch.cat([t0, t1]), t), "a box lost, doubled or moved between the shares"
        assert len(t0) and len(t1)


def test_a_user_detector_deploy_fine_tunes_in_two_processes(user, tmp_path):
    """deploy --nproc-per-node 2 on the user's detector: the fine-tune stage trains under torchrun (gloo, DDP)
    with the mAP of held-out images, and the gate and ship stages take its model."""
    r = user["root"]
    p = _cli(user, "deploy", "-t", "local", "-m", "userdet:build", "--weights", str(r / "weights.pt"),
             "--data", str(r / "data" / "data.yaml"), "--input-shape", f"1,3,{SIZE},{SIZE}", "--ratio", "0.2",
             "--steps", "8", "--threads", "1", "--format", "onnx", "--precision", "fp32", "--max-accuracy-drop",
             "100", "--nproc-per-node", "2", "-o", str(tmp_path / "ddp"), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    ft = json.loads((tmp_path / "ddp" / "finetune" / "finetune.json").read_text())
    assert ft["distributed"]["world_size"] == 2 and ft["metric"] == "map50_95", ft
    assert 1 <= ft["steps"] <= 8 and len(ft["distributed"]["images_per_s_per_rank"]) == 2  # early stopping may end it
    assert ft["accuracy"]["original"] == pytest.approx(user["map50_95"], abs=1e-4)
    assert rep["ok"] and rep["gate"]["metric"] == "map50_95" and rep["gate"]["passed"], rep["gate"]
    assert rep["gate"]["original"] == pytest.approx(user["map50_95"], abs=1e-4)
