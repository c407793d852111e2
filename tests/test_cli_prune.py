"""``edgeprune prune`` and ``edgeprune models``, run in-process through ``edgeprune.cli.main``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.boards.profiles import load_profile

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

from edgeprune.cli import main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_command_modules_import_only_click():
    code = (
        "import sys, edgeprune.cli.prune_cmd, edgeprune.cli.models_cmd; "
        "bad = [m for m in ('torch', 'onnx', 'torch_pruning', 'numpy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_prune_digits_writes_model_plan_onnx_summary(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "prune",
        "--target",
        "local",
        "--model",
        "digits-cnn",
        "--ratio",
        "0.5",
        "--output",
        str(tmp_path),
        "--json",
    )
    assert code == 0, err
    s = json.loads(out)
    for key in ("model", "plan", "onnx", "summary"):
        assert Path(s[key]).is_file()
    assert s["input_shape"] == [1, 1, 16, 16] and s["align"] == load_profile("local").alignment()
    assert s["params_after"] < s["params_before"] and s["macs_after"] < s["macs_before"]
    assert s["onnx_check"]["passed"] and s["onnx_check"]["max_abs"] <= s["onnx_check"]["tolerance"]
    assert s["accuracy_before"] >= 0.95 and 0.0 < s["accuracy_after"] <= 1.0
    assert s.pop("ok") is True and json.loads(Path(s["summary"]).read_text()) == s
    # The saved model loads back, and its plan applies again to the base model.
    code, out, err = run(
        capsys,
        "prune",
        "--target",
        "local",
        "--model",
        "digits-cnn",
        "--plan",
        s["plan"],
        "--output",
        str(tmp_path / "again"),
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["params_after"] == s["params_after"]
    # A pruned model can be pruned again; its file then holds both plans.
    code, out, err = run(
        capsys,
        "prune",
        "--target",
        "local",
        "--model",
        s["model"],
        "--ratio",
        "0.5",
        "--output",
        str(tmp_path / "twice"),
        "--json",
    )
    assert code == 0, err
    twice = json.loads(out)
    assert twice["earlier_plans"] == 1 and twice["params_before"] == s["params_after"]
    assert twice["params_after"] < s["params_after"]
    from edgeprune.load import load_model

    lm = load_model(twice["model"])
    assert len(lm.earlier_plans) == 1 and lm.base == "digits-cnn"


def test_prune_yolo_small_human_output(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "prune",
        "-t",
        "raspberry-pi-5",
        "-m",
        "yolo-small",
        "--ratio",
        "0.3",
        "--input-shape",
        "1,3,128,128",
        "-o",
        str(tmp_path),
    )
    assert code == 0, err
    assert "ONNX matches PyTorch" in out and (tmp_path / "model.ept").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["rewrites"]) == 8 and summary["align"] == load_profile("raspberry-pi-5").alignment()


def test_bad_model_file_is_one_line(capsys, tmp_path):
    code, _, err = run(
        capsys,
        "prune",
        "-t",
        "local",
        "-m",
        str(tmp_path / "missing.ept"),
        "--ratio",
        "0.3",
        "-o",
        str(tmp_path / "o"),
    )
    assert code == 1 and err == f"error: {tmp_path / 'missing.ept'}: file not found\n"
    code, _, err = run(
        capsys, "prune", "-t", "local", "-m", "resnet-18", "--ratio", "0.3", "-o", str(tmp_path)
    )
    assert code == 1 and "did you mean resnet18" in err and err.count("\n") == 1


def test_models_lists_the_builtins(capsys):
    code, out, _ = run(capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert set(rows) == {"resnet18", "mobilenetv2", "yolo-small", "digits-cnn", "fmnist-cnn", "mobilenetv2-fmnist",
                         "resnet18-fmnist", "yolov8n-fmnist-det"}
    assert rows["yolo-small"]["task"] == "detect" and rows["resnet18"]["params"] == 11689512
    code, out, _ = run(capsys, "models")
    assert code == 0 and "mobilenetv2" in out and "data set" in out and "weights" in out


def test_prune_a_python_factory_with_weights(capsys, tmp_path, monkeypatch):
    import textwrap

    import torch

    (tmp_path / "userzoo.py").write_text(
        textwrap.dedent("""
        import torch.nn as nn

        def net():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3))
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import userzoo

    torch.manual_seed(0)
    torch.save(userzoo.net().state_dict(), tmp_path / "w.pt")
    code, out, err = run(
        capsys,
        "prune",
        "-t",
        "local",
        "-m",
        "userzoo:net",
        "--weights",
        str(tmp_path / "w.pt"),
        "--input-shape",
        "1,3,32,32",
        "--ratio",
        "0.5",
        "-o",
        str(tmp_path / "o"),
        "--json",
    )
    assert code == 0, err
    s = json.loads(out)
    assert s["base"] == "userzoo:net" and s["groups_pruned"] >= 1 and s["onnx_check"]["passed"]
    from edgeprune.load import load_model

    lm = load_model(s["model"], trust_factory="userzoo:net")  # a factory base runs only when named
    assert lm.input_shape == (1, 3, 32, 32) and lm.module[6].groups == 4
