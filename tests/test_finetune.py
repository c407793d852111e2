"""edgeprune finetune: distillation recovers a pruned digits-cnn, resumes after an interruption, gates, reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgeprune.api import finetune_model  # noqa: E402
from edgeprune.checks.accuracy import AccuracyDropError  # noqa: E402
from edgeprune.errors import EdgePruneError, ModelError  # noqa: E402
from edgeprune.finetune import Interrupted  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """digits-cnn with 60 % of its channels removed: it loses accuracy (the premise of every test here)."""
    from edgeprune.api import prune_model

    out = tmp_path_factory.mktemp("pruned")
    summary = prune_model("digits-cnn", target="local", ratio=0.6, output=out)
    assert summary["accuracy_after"] < summary["accuracy_before"] - 0.1, summary
    return out / "model.ept"


def test_finetune_recovers_a_pruned_model(pruned, tmp_path):
    report = finetune_model(pruned, data="digits", output=tmp_path, epochs=3, threads=1)
    acc = report["accuracy"]
    assert acc["original"] >= 0.95
    assert acc["finetuned"] >= acc["pruned"] + 0.1  # recovered most of what pruning lost
    assert acc["finetuned"] >= acc["original"] - 0.03
    assert report["agreement_with_original"]["finetuned"] > report["agreement_with_original"]["pruned"]
    # measured on data fine-tuning never saw, and the JSON says so
    assert report["heldout"] == {"split": "test", "samples": 359, "note": "never trained on nor used for early stopping"}
    assert report["data"]["sizes"] == {"train": 1294, "val": 144, "test": 359}
    assert report["teacher"].startswith("builtin:digits-cnn") and report["metric"] == "top1"
    assert report["images_per_s"] > 0 and report["best_epoch"] is not None and report["steps"] == 3 * 21
    saved = json.loads((tmp_path / "finetune.json").read_text())
    assert saved["accuracy"] == report["accuracy"]
    # the fine-tuned model.ept loads with the same plan and gives the reported accuracy
    from edgeprune.load import load_model
    from edgeprune.models.digits import digits_accuracy

    lm, orig = load_model(str(tmp_path / "model.ept")), load_model(str(pruned))
    assert lm.plan.to_dict() == orig.plan.to_dict()
    assert abs(digits_accuracy(lm.module) - acc["finetuned"]) < 1e-4  # JSON rounds to 4 places
    md = (tmp_path / "report.md").read_text()
    assert "after BatchNorm recalibration" in md and "fine-tuned (best checkpoint)" in md and "test split" in md


def _stop_at(step):
    def on_event(kind, info):
        if kind == "step" and info["step"] == step:
            raise KeyboardInterrupt

    return on_event


def test_resume_after_an_interruption_ends_where_an_uninterrupted_run_does(pruned, tmp_path):
    args = dict(data="digits", steps=30, threads=1)
    straight = finetune_model(pruned, output=tmp_path / "a", **args)
    with pytest.raises(Interrupted, match=r"interrupted at step 17; checkpoint saved .*run the same command again"):
        finetune_model(pruned, output=tmp_path / "b", on_event=_stop_at(17), **args)
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file() and not (tmp_path / "b" / "model.ept").exists()
    resumed = finetune_model(pruned, output=tmp_path / "b", **args)
    assert resumed["resumed_from_step"] == 17 and straight["resumed_from_step"] is None
    figures = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in straight["history"]]
    assert resumed["steps"] == straight["steps"]
    assert [{k: v for k, v in h.items() if k != "elapsed_s"} for h in resumed["history"]] == figures
    assert resumed["accuracy"] == straight["accuracy"] and resumed["best"] == straight["best"]
    from edgeprune.load import load_model

    a = load_model(str(tmp_path / "a" / "model.ept")).module.state_dict()
    b = load_model(str(tmp_path / "b" / "model.ept")).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same weights, bit for bit


def test_other_arguments_start_over(pruned, tmp_path):
    with pytest.raises(Interrupted):
        finetune_model(pruned, data="digits", steps=10, output=tmp_path, threads=1, on_event=_stop_at(2))
    fresh = finetune_model(pruned, data="digits", steps=10, lr=0.005, patience=100, output=tmp_path, threads=1)
    assert fresh["resumed_from_step"] is None and fresh["steps"] == 10


def test_gate_fails_after_writing_the_figures(pruned, tmp_path):
    with pytest.raises(AccuracyDropError, match=r"points lost > --max-accuracy-drop 0\.5") as info:
        finetune_model(pruned, data="digits", output=tmp_path, steps=3, lr=1e-6, max_accuracy_drop=0.5, threads=1)
    assert info.value.exit_code == 2
    saved = json.loads((tmp_path / "finetune.json").read_text())
    assert saved["passed"] is False and saved["drop_points"] > 0.5
    assert "Result: **FAILED**" in (tmp_path / "report.md").read_text()


def test_unlabelled_data_is_measured_by_agreement(pruned, tmp_path):
    from edgeprune.models.digits import digits_data

    x, _ = digits_data("train")
    np.save(tmp_path / "x.npy", x.numpy())  # model inputs, no labels
    report = finetune_model(pruned, data=str(tmp_path / "x.npy"), output=tmp_path / "out", epochs=2, threads=1)
    assert report["metric"] == "agreement" and report["heldout"]["split"] == "val"
    assert report["accuracy"]["original"] == 1.0  # the original agrees with itself
    assert report["accuracy"]["finetuned"] > report["accuracy"]["pruned"]
    assert "early stopping read it" in report["heldout"]["note"]


def test_time_budget_ends_on_time(pruned, tmp_path):
    report = finetune_model(pruned, data="digits", output=tmp_path, time_budget=0.01, threads=1)
    assert report["stopped"] == "time budget" and report["steps"] >= 1


def test_explicit_teacher_and_adamw(pruned, tmp_path):
    report = finetune_model(pruned, data="digits", output=tmp_path, steps=5, teacher="digits-cnn",
                            optimizer="adamw", threads=1)
    assert report["teacher"] == "builtin:digits-cnn" and report["recipe"]["lr"] == 1e-3


def test_refusals_are_one_line(pruned, tmp_path):
    with pytest.raises(ModelError, match="not a pruned model; finetune takes the model.ept"):
        finetune_model("digits-cnn", data="digits", output=tmp_path / "a")
    with pytest.raises(EdgePruneError, match="give one of --epochs, --steps or --time-budget"):
        finetune_model(pruned, data="digits", output=tmp_path / "b", epochs=1, steps=1)
    if not torch.cuda.is_available():
        with pytest.raises(EdgePruneError, match=r"--device cuda: no CUDA GPU here"):
            finetune_model(pruned, data="digits", output=tmp_path / "c", device="cuda")
    with pytest.raises(ModelError, match=r"--teacher resnet18: it takes input \(1, 3, 224, 224\), the pruned model \(1, 1, 16, 16\)"):
        finetune_model(pruned, data="digits", output=tmp_path / "d", teacher="resnet18", steps=1)


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "edgeprune", "finetune", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_cli_json_gate_and_resume_message(pruned, tmp_path):
    ok = _cli("-m", str(pruned), "--data", "digits", "-o", "out", "--steps", "8", "--patience", "9", "--threads", "1", "--json",
              cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["steps"] == 8 and "\x1b[" not in ok.stderr  # no progress bar off a terminal
    again = _cli("-m", str(pruned), "--data", "digits", "-o", "out", "--steps", "8", "--patience", "9", "--threads", "1",
                 cwd=tmp_path)
    assert again.returncode == 0 and "already fine-tuned with these arguments" in again.stderr
    bad = _cli("-m", str(pruned), "--data", "digits", "-o", "gated", "--steps", "2", "--lr", "1e-7",
               "--max-accuracy-drop", "0.1", "--threads", "1", "--json", cwd=tmp_path)
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["passed"] is False
    assert bad.stderr.strip().splitlines()[-1].startswith("error: ") and "--max-accuracy-drop 0.1" in bad.stderr


def test_training_on_real_fashion_mnist_learns(tmp_path):
    """The loop on the real fetched data set: a tiny CNN beats chance by far on the held-out test split."""
    from edgeprune.data import available, load_data
    from edgeprune.finetune.loop import Recipe, predict, score, train

    if not available("fashion-mnist"):
        pytest.skip("fashion-mnist not fetched: bash scripts/fetch-data.sh fashion-mnist")
    split = load_data("fashion-mnist", input_shape=(1, 1, 28, 28), normalize="unit", num_classes=10, limit=3000)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, 2, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10))
    result = train(net, split, recipe=Recipe(epochs=5, lr=0.1, batch_size=32, augment="none"), ckpt_dir=tmp_path)
    test = score(predict(net, split.test), split.test)
    assert test["samples"] == 3000 and test["top1"] > 0.7, test  # chance: 0.1
    assert result["metric"] == "top1" and (tmp_path / "best.pt").is_file()


def test_python_api_mirrors_the_cli(pruned, tmp_path):
    import edgeprune

    split = edgeprune.load_data("digits", input_shape=(1, 1, 16, 16))
    report = edgeprune.finetune_model(pruned, data=split, output=tmp_path, steps=4, threads=1)
    assert report["data"]["source"] == "digits" and (tmp_path / "model.ept").is_file()
