"""`edgeprune export` / `edgeprune quantize` as a user runs them (a real process each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_command_module_imports_only_click():
    code = ("import sys, edgeprune.cli.export_cmd; "
            "heavy = [m for m in ('torch', 'onnx', 'tensorflow', 'onnx2tf', 'nncf', 'ai_edge_litert', 'numpy') "
            "if m in sys.modules]; print(heavy)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]", out.stderr


def test_export_help_lists_options():
    proc = _cli("export", "--help")
    assert proc.returncode == 0
    for opt in ("--target", "--model", "--format", "--precision", "--calib", "--min-agreement", "--output", "--json"):
        assert opt in proc.stdout


@pytest.mark.parametrize("cmd", ["export", "quantize"])
def test_jetson_nano_int8_refused_in_one_line(tmp_path, cmd):
    extra = ["--precision", "int8"] if cmd == "export" else []
    proc = _cli(cmd, "--target", "jetson-nano", "--model", "digits-cnn", *extra, "--output", str(tmp_path / "o"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: jetson-nano: INT8 refused:")
    assert "no INT8 hardware" in lines[0] and "--precision fp16" in lines[0]
    assert not (tmp_path / "o").exists()


def test_export_json_for_orin(tmp_path):
    pytest.importorskip("torch")
    proc = _cli("export", "--target", "jetson-orin-nano", "--model", "digits-cnn", "--output", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # stdout is pure JSON: TF/NNCF chatter goes to export.log
    assert data["passed"] is True and data["precision"] == "int8" and data["format"] == "onnx"
    final = data["artifacts"][-1]
    assert {"path", "format", "precision", "sha256", "size_bytes", "agreement"} <= set(final)
    assert {"top1", "max_abs", "mean_abs", "cosine"} <= set(final["agreement"])
    assert final["agreement"]["top1"] >= 0.95
    assert data["verification"]["source"] == "digits test split (held out)"
    assert data["verdict"]["status"] == "passed" and data["accuracy"]["metric"] == "top1"
    assert (tmp_path / "export.json").is_file()


def test_quantize_local_and_min_agreement_failure(tmp_path):
    pytest.importorskip("onnx2tf")
    proc = _cli("quantize", "--target", "raspberry-pi-5", "--model", "digits-cnn", "--output", str(tmp_path),
                "--min-agreement", "top1=1.0,cosine=0.99999999", "--json")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "digits-cnn.int8.tflite" in err[0]
    assert "cosine 0.99" in err[0] and "< 1" in err[0]
    data = json.loads(proc.stdout)  # the report is still printed
    assert data["passed"] is False and data["artifacts"][-1]["precision"] == "int8"


def test_bad_min_agreement_is_a_usage_error(tmp_path):
    proc = _cli("export", "--target", "local", "--model", "digits-cnn", "--output", str(tmp_path),
                "--min-agreement", "lots")
    assert proc.returncode == 2
    assert "expected a number" in proc.stderr


def test_a_detector_shows_no_top1_figure(tmp_path):
    """top-1 means nothing for a detector's outputs: the table says n/a, the JSON says it is no classifier."""
    pytest.importorskip("torch")
    proc = _cli("export", "--target", "local", "--model", "yolo-small", "--output", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "n/a" in proc.stdout
    data = json.loads((tmp_path / "export.json").read_text())
    assert data["verification"]["classifier"] is False
