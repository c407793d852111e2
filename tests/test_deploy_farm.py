"""``edgeprune deploy`` to real sshd boards (tests/farm), three at once, and a link lost while shipping.

The boards use the raspberry-pi-5 profile; these tests deploy ONNX fp32 (a
runtime the profile lists) so that no TFLite conversion lengthens the suite;
the TFLite path is exercised by the phone test below and by the local tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from edgeprune.deploy import deploy_model
from edgeprune.deploy import pipeline as deploy_pipeline
from edgeprune.ship import list_releases

pytestmark = [pytest.mark.farm, pytest.mark.timeout(900), pytest.mark.usefixtures("one_torch_thread")]

KW = dict(ratio=0.3, steps=120, fmt="onnx", precision="fp32")


@pytest.fixture
def deploy_env(farm, tmp_path, monkeypatch):
    """Targets ``dep-b1``, ``dep-b2``, ``dep-cut`` with fresh deploy folders; ``dep-broken``: b3 with a
    Python that has no numpy and no runtime (its deploy fails at the first board measurement)."""
    tag = uuid.uuid4().hex[:8]

    def folder(board: str) -> str:
        return f"/tmp/deploy-{tag}" if farm.privileged else str(tmp_path / f"deploy-{board}")

    extra = {f"dep-{b}": {"board": b, "deploy_dir": folder(b)} for b in ("b1", "b2", "cut")}
    extra["dep-broken"] = {"board": "b3", "deploy_dir": folder("b3"), "python": farm.bare_python}
    targets = tmp_path / "targets.toml"
    targets.write_text(farm.targets_toml(extra=extra))
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    return targets


def test_three_boards_at_once_and_one_failing_stops_no_other(deploy_env, tmp_path):
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(deploy_env)}
    res = subprocess.run(
        [sys.executable, "-m", "edgeprune", "deploy", "-t", "dep-b1", "-t", "dep-broken", "-t", "dep-b2",
         "-m", "digits-cnn", "--ratio", "0.3", "--steps", "120", "--format", "onnx", "--precision", "fp32",
         "-o", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:3]] == ["ok", "FAILED", "ok"], res.stdout
    assert lines[1].startswith("FAILED  dep-broken: ") and "pip install onnxruntime" in lines[1]
    summary = json.loads((tmp_path / "out" / "deploy.json").read_text())
    by = {o["target"]: o for o in summary["targets"]}
    assert summary["ok"] is False and by["dep-b1"]["ok"] and by["dep-b2"]["ok"]
    for t in ("dep-b1", "dep-b2"):
        assert list_releases(t).current == by[t]["shipped"]
        rep = json.loads((tmp_path / "out" / t / "report" / "deploy.json").read_text())
        assert rep["gate"]["passed"] and rep["release"]["id"] == by[t]["shipped"]
        assert (tmp_path / "out" / t / "report" / "report.html").is_file()
    broken = json.loads((tmp_path / "out" / "dep-broken" / "run.json").read_text())
    assert broken["stages"]["measure"]["state"] == "failed"
    assert list_releases("dep-broken").current is None


def test_a_link_lost_while_shipping_resumes_at_the_ship_stage(deploy_env, root_farm, tmp_path, monkeypatch):
    first = deploy_model("digits-cnn", target="dep-cut", output=tmp_path / "a", **KW)
    real = deploy_pipeline.STAGE_FUNCS["ship"]

    def cut_then_ship(ctx):
        root_farm.cut("cut")  # the cable is pulled as the ship stage starts
        return real(ctx)

    monkeypatch.setitem(deploy_pipeline.STAGE_FUNCS, "ship", cut_then_ship)
    try:
        with pytest.raises(Exception) as err:
            deploy_model("digits-cnn", target="dep-cut", output=tmp_path / "b", **{**KW, "ratio": 0.4})
    finally:
        root_farm.restore("cut")
    assert "dep-cut" in str(err.value)
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["stages"]["ship"]["state"] == "failed"
    assert list_releases("dep-cut").current == first["release"]["id"]  # the board still runs the first
    monkeypatch.setitem(deploy_pipeline.STAGE_FUNCS, "ship", real)
    again = deploy_model("digits-cnn", target="dep-cut", output=tmp_path / "b", **{**KW, "ratio": 0.4})
    assert again["run"]["reused"] == ["measure", "prune", "finetune", "export", "verify", "measure-final"]
    assert again["release"]["previous"] == first["release"]["id"]
    assert list_releases("dep-cut").current == again["release"]["id"]
