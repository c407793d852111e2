"""Accuracy at every stage on the user's own labelled images: prune, fine-tune, export; the gate; the headline.

The user's data here is a real folder of PNG files, one sub-folder per class
(scikit-learn's digits, 16x16 grey), as a user would bring their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgeprune.api import export_model as export  # noqa: E402
from edgeprune.checks.accuracy import AccuracyDropError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory):
    """All 1,797 digits as PNG files in class folders digit-0/ .. digit-9/ (a user's labelled folder).

    Classes are the sorted folder names (torchvision's ImageFolder convention), so they must sort in
    the model's class order.
    """
    from PIL import Image

    from edgeprune.models.digits import digits_data

    root = tmp_path_factory.mktemp("digits") / "images"
    names = [f"digit-{k}" for k in range(10)]
    for split in ("train", "test"):
        x, y = digits_data(split)
        for i, (img, label) in enumerate(zip(x.numpy(), y.numpy(), strict=True)):
            d = root / names[label]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((img[0] * 255).round().astype(np.uint8), "L").save(d / f"{split}-{i}.png")
    return root


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    from edgeprune.api import prune_model

    out = tmp_path_factory.mktemp("pruned")
    prune_model("digits-cnn", target="local", ratio=0.6, output=out)
    return out / "model.ept"


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


def test_a_user_folder_through_prune_finetune_export(digit_folders, tmp_path):
    """Done-when of issue 11: prune, fine-tune and export on a labelled folder, accuracy at every stage."""
    data = ["--data", str(digit_folders)]
    p = _cli("prune", "-t", "local", "-m", "digits-cnn", "--ratio", "0.6", "--importance", "taylor", *data,
             "-o", "pruned", "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    assert s["data"]["kind"] == "class-folders" and s["data"]["sizes"]["val"] == 179  # 10 % of each class
    assert s["accuracy_before"] > 0.9 and s["accuracy_after"] < s["accuracy_before"]  # measured on held-out images
    f = _cli("finetune", "-m", "pruned/model.ept", *data, "-o", "finetuned", "--epochs", "3", "--threads", "1",
             "--json", cwd=tmp_path)
    assert f.returncode == 0, f.stderr
    ft = json.loads(f.stdout)
    assert ft["heldout"]["split"] == "val" and ft["data"]["sizes"] == s["data"]["sizes"]  # the same split
    assert ft["accuracy"]["finetuned"] > ft["accuracy"]["pruned"] + 0.05
    e = _cli("export", "-t", "local", "-m", "finetuned/model.ept", *data, "--max-accuracy-drop", "3", "-o", "export",
             "--json", cwd=tmp_path)
    assert e.returncode == 0, e.stderr
    ex = json.loads(e.stdout)
    acc = ex["accuracy"]
    assert acc["samples"] == 179 and acc["metric"] == "top1"  # the held-out split fine-tuning never trained on
    assert acc["original"] > 0.9 and abs(acc["artifacts"]["onnx fp32"] - acc["model"]) < 0.01
    assert abs(acc["model"] - ft["accuracy"]["finetuned"]) < 0.01
    assert ex["verdict"]["status"] == "passed"
    assert "Result: **passed**" in (tmp_path / "export" / "report.md").read_text()


def test_export_gate_fails_a_pruned_model_with_the_figures(pruned, digit_folders, tmp_path):
    with pytest.raises(AccuracyDropError, match=r"points lost > --max-accuracy-drop 1") as info:
        export(str(pruned), target="local", output=tmp_path, data=str(digit_folders), max_accuracy_drop=1)
    assert info.value.exit_code == 2
    saved = json.loads((tmp_path / "export.json").read_text())
    assert saved["passed"] is False and saved["verdict"]["status"] == "failed"
    assert saved["accuracy"]["original"] - saved["accuracy"]["artifacts"]["onnx fp32"] > 0.01
    md = (tmp_path / "report.md").read_text()
    assert md.splitlines()[2].startswith("Result: **FAILED**") and "**passed**" not in md


def test_export_accuracy_on_every_artifact_of_an_int8_chain(digit_folders, tmp_path):
    report = export("digits-cnn", target="jetson-orin-nano", output=tmp_path, data=str(digit_folders))
    acc = report.accuracy
    assert set(acc["artifacts"]) == {a.step for a in report.artifacts}
    assert acc["model"] is None and acc["original"] > 0.9  # not pruned: the model is the original
    assert report.calibration["source"].endswith("train split")  # calibrated on data the check never uses
    assert all(a.extra["accuracy_vs_original"] == acc["artifacts"][a.step] for a in report.artifacts)


def test_unlabelled_folder_measures_agreement_with_the_original(pruned, tmp_path):
    from PIL import Image

    from edgeprune.models.digits import digits_data

    x, _ = digits_data("test")
    (tmp_path / "flat").mkdir()
    for i, img in enumerate(x.numpy()):
        Image.fromarray((img[0] * 255).round().astype(np.uint8), "L").save(tmp_path / "flat" / f"{i}.png")
    report = export(str(pruned), target="local", output=tmp_path / "out", data=str(tmp_path / "flat"))
    acc = report.accuracy
    assert acc["metric"] == "agreement" and acc["original"] == 1.0 and acc["model"] < 1.0
    assert report.verdict["status"] == "lost-accuracy"


def test_headline_never_passed_over_a_failure():
    from edgeprune.export.report import headline

    base = {"passed": True, "verdict": {"status": "lost-accuracy", "reason": "top-1 0.1 vs 0.9"}}
    assert "passed**" not in headline(base) and "NOT PASSED" in headline(base)
    assert headline({"passed": False, "verdict": {"status": "failed", "reason": "x"}}).startswith("Result: **FAILED**")
    assert headline({"passed": True, "verdict": {"status": "passed", "reason": None}}).startswith("Result: **passed**")


def test_prune_taylor_needs_data_for_a_model_without_its_own(tmp_path):
    from edgeprune.api import prune_model
    from edgeprune.errors import PruneError

    with pytest.raises(PruneError, match=r"--importance taylor needs data: give --data"):
        prune_model("resnet18", target="local", ratio=0.3, importance="taylor", output=tmp_path,
                    input_shape=(1, 3, 32, 32))


def test_reference_model_without_weights_says_how_to_train_it(tmp_path):
    proc = _cli("prune", "-t", "local", "-m", "mobilenetv2-fmnist", "--ratio", "0.3", "-o", "x", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trained weights are not cached" in lines[0]
    assert "python benchmarks/train_reference.py --model mobilenetv2-fmnist" in lines[0]


def test_models_lists_data_set_and_accuracy(tmp_path):
    proc = _cli("models", "--json", cwd=tmp_path)
    rows = {r["name"]: r for r in json.loads(proc.stdout)["models"]}
    assert rows["mobilenetv2-fmnist"]["dataset"] == "fashion-mnist" and rows["resnet18-fmnist"]["input_shape"] == [1, 3, 64, 64]
    assert rows["digits-cnn"]["dataset"] == "digits"
    assert "train_reference.py" in rows["mobilenetv2-fmnist"]["weights"] or rows["mobilenetv2-fmnist"]["accuracy"]


def test_labels_in_another_class_order_are_called_out(tmp_path):
    """Class folders named zero/ one/ ... sort alphabetically: the labels no longer match the model's classes."""
    from edgeprune.models.digits import digits_data

    x, y = digits_data("test")
    np.savez(tmp_path / "shifted.npz", x=(x.numpy()[:, 0] * 255).round().astype(np.uint8), y=(y.numpy() + 1) % 10)
    report = export("digits-cnn", target="local", output=tmp_path / "out", data=str(tmp_path / "shifted.npz"))
    assert any("do the labels follow the model's class order?" in w for w in report.warnings)


def test_prune_takes_a_data_split_or_batches_for_taylor(tmp_path):
    from edgeprune.api import prune_model
    from edgeprune.data import load_data

    split = load_data("digits", input_shape=(1, 1, 16, 16), normalize="unit")
    a = prune_model("digits-cnn", target="local", ratio=0.3, importance="taylor", data=split, output=tmp_path / "a")
    b = prune_model("digits-cnn", target="local", ratio=0.3, importance="taylor",
                    data=split.train.batches(64, limit=512), output=tmp_path / "b")
    assert a["data"]["source"] == "digits" and a["accuracy_after"] == b["accuracy_after"]  # the same 512 images
