"""``edgeprune deploy`` on ``--target local`` (this machine as the board): stages, resume, the gate, reports.

A local target ``here`` has its deploy folder under tmp_path. The model is
digits-cnn (trained in seconds) on the digits data set; the gate is measured
on its 359 held-out test images, which neither pruning's checks nor
fine-tuning (its own train/val split of the train images) ever see.
Fine-tuning runs a few steps only, to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeprune._paths import sha256_file
from edgeprune.deploy import GateError, deploy_model
from edgeprune.deploy import pipeline as deploy_pipeline
from edgeprune.ship import list_releases

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(600)]

STEPS = 120  # fine-tuning steps (~5 epochs of the digits train split): digits-cnn comes back within the gate


def _here(tmp: Path) -> Path:
    targets = tmp / "targets.toml"
    targets.write_text(f'[here]\nprofile = "local"\npython = "{sys.executable}"\n'
                       f'deploy_dir = "{tmp / "board"}"\n')
    return targets


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(_here(tmp_path)))
    return tmp_path


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """One complete deploy, shared by the tests that only read it: (tmp, report)."""
    tmp = tmp_path_factory.mktemp("deploy")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPRUNE_TARGETS", str(_here(tmp)))
        rep = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=tmp / "out")
        yield tmp, rep


def _current(board: Path) -> str | None:
    link = board / "current"
    return os.readlink(link).split("/", 1)[1] if link.is_symlink() else None


def test_deploy_ships_a_verified_release_with_its_manifest(shipped):
    tmp, rep = shipped
    out = tmp / "out"
    assert rep["ok"] is True
    assert [s["name"] for s in rep["stages"]] == list(deploy_pipeline.STAGES[:-1])
    assert all(s["state"] == "done" for s in rep["stages"]), rep["stages"]
    for stage in ("measure", "prune", "finetune", "export", "verify", "measure-final", "ship", "report"):
        assert (out / stage).is_dir(), stage
    # the gate: the shipped file against the original on the held-out test split
    gate = rep["gate"]
    assert gate["passed"] and not gate["forced"] and gate["samples"] == 359
    assert gate["drop"] <= 1.0 and gate["original"] > 0.95
    assert "digits test split" in gate["heldout"]
    # the board runs the release; its manifest says what it is
    rel = rep["release"]
    assert _current(tmp / "board") == rel["id"]
    artifact = Path(json.loads((out / "run.json").read_text())["stages"]["export"]["result"]["artifact"])
    board_model = tmp / "board" / "current" / "model.onnx"
    assert board_model.read_bytes() == artifact.read_bytes() and rel["sha256"] == sha256_file(artifact)
    m = json.loads((tmp / "board" / "releases" / rel["id"] / "manifest.json").read_text())
    assert m["artifact"]["sha256"] == rel["sha256"] and len(m["source_model_sha256"]) == 64
    assert m["profile"] == "local" and m["format"] == "onnx" and m["precision"] == "fp32"
    assert m["plan"]["groups"] and all(g["keep"] <= g["channels"] for g in m["plan"]["groups"])
    assert m["latency_ms"] > 0 and m["accuracy"]["shipped"] == gate["final"] and m["forced"] is False
    assert m["check"]["passed"] and m["check"]["samples"] == 32
    # every stage's figures made it into the report
    assert rep["latency"]["final_ms"] > 0 and rep["latency"]["unpruned_ms"] > 0
    stages = {r["stage"] for r in rep["accuracy"]}
    assert {"original (PyTorch)", "pruned (PyTorch)", "fine-tuned (PyTorch)", "shipped, onnx fp32"} <= stages
    assert [r["stage"] for r in rep["size"]] == ["unpruned", "pruned", "shipped"]
    assert rep["size"][2]["params"] < rep["size"][0]["params"]
    assert rep["channels"] and rep["board"].get("runtime") == "onnxruntime"
    files = {p.name for p in (out / "report").iterdir()}
    assert files == {"deploy.json", "report.html", "report.md"}
    assert json.loads((out / "report" / "deploy.json").read_text())["release"]["id"] == rel["id"]
    assert (out / "report" / "report.md").read_text().startswith("# edgeprune deploy: digits-cnn to here")


def test_the_same_command_again_reuses_every_stage_and_measures_nothing(shipped, monkeypatch):
    tmp, first = shipped
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(tmp / "targets.toml"))
    again = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=tmp / "out")
    assert again["run"]["reused"] == list(deploy_pipeline.STAGES[:-1])
    assert again["run"]["board_measurements"] == 0
    assert again["release"]["id"] == first["release"]["id"]  # not shipped twice
    assert len(list_releases("here").releases) == 1
    assert json.loads((tmp / "out" / "run.json").read_text())["runs"] == 2


def test_an_interrupted_deploy_resumes_at_the_stage_it_stopped(here, monkeypatch):
    real = deploy_pipeline.STAGE_FUNCS["export"]

    def interrupted(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(deploy_pipeline.STAGE_FUNCS, "export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    run = json.loads((here / "out" / "run.json").read_text())
    assert run["stages"]["export"]["state"] == "interrupted"
    assert not (here / "board" / "current").exists()  # nothing shipped
    failed = json.loads((here / "out" / "report" / "deploy.json").read_text())
    assert failed["ok"] is False and failed["error"]["kind"] == "interrupted"
    monkeypatch.setitem(deploy_pipeline.STAGE_FUNCS, "export", real)
    rep = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    assert rep["run"]["reused"] == ["measure", "prune", "finetune"]
    by = {s["name"]: s for s in rep["stages"]}
    assert by["measure"]["board_measurements"] == 0 and by["measure"]["note"].startswith("reused: ")
    assert rep["ok"] and _current(here / "board") == rep["release"]["id"]


def test_a_reused_ship_stage_ships_again_when_the_board_no_longer_runs_it(here):
    """Issue 23: with ``current`` deleted (or the model replaced) on the board, a rerun ships again."""
    board = here / "board"
    first = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    (board / "current").unlink()
    again = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    assert again["run"]["reused"] == list(deploy_pipeline.STAGES[:-2])  # all but ship
    assert again["ok"] and _current(board) == again["release"]["id"] != first["release"]["id"]
    assert sha256_file(board / "current" / "model.onnx") == again["release"]["sha256"]
    same = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    assert same["run"]["reused"] == list(deploy_pipeline.STAGES[:-1])  # the board runs it: nothing shipped
    assert same["release"]["id"] == again["release"]["id"]
    (board / "current" / "model.onnx").write_bytes(b"not the model")
    fixed = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    assert "ship" not in fixed["run"]["reused"] and _current(board) == fixed["release"]["id"]
    assert sha256_file(board / "current" / "model.onnx") == fixed["release"]["sha256"] == again["release"]["sha256"]


def test_a_second_deploy_into_the_same_output_is_refused_at_its_start(here):
    """Issue 23: two identical deploys into one --output both ran and mixed their stages' files."""
    out = here / "out"
    cmd = ("deploy", "-t", "here", "-m", "digits-cnn", "--ratio", "0.3", "--steps", str(STEPS), "-o", str(out))
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(here / "targets.toml")}
    first = subprocess.Popen([sys.executable, "-m", "edgeprune", *cmd], cwd=here, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # the first deploy holds the folder's lock (it takes it before loading the model)
            if (out / "lock.json").exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert (out / "lock.json").exists() and first.poll() is None
        second = _cli(*cmd, "--json", cwd=here, env_targets=here / "targets.toml")
        assert second.returncode != 0 and first.poll() is None
        line = second.stderr.strip()
        assert "\n" not in line and line.startswith(f"error: --output {out}: another deploy holds this folder's lock")
        assert f"pid {first.pid} " in line and "run again when it is done" in line
        assert json.loads(second.stdout)["error"]["kind"] == "output"
    finally:
        first.kill()
        first.wait()
    # killed: its lock names a process that is gone, so the next deploy clears it and runs
    rep = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=out)
    assert rep["ok"] and _current(here / "board") == rep["release"]["id"] and not (out / "lock.json").exists()


def test_a_changed_option_restarts_the_stages_it_affects(here):
    deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=here / "out")
    rep = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS + 5, output=here / "out")
    assert rep["run"]["reused"] == ["measure", "prune"]
    assert rep["ok"] and len(list_releases("here").releases) == 2


def test_below_the_gate_nothing_ships_and_force_ships_it_recording_why(here):
    kw = dict(target="here", ratio=0.7, steps=1, max_accuracy_drop=0.0, output=here / "out")
    with pytest.raises(GateError) as err:
        deploy_model("digits-cnn", **kw)
    assert err.value.exit_code == 2 and "below the accuracy gate" in str(err.value)
    assert "points lost" in str(err.value) and "--force" in str(err.value)
    assert not (here / "board" / "current").exists()
    gate = json.loads((here / "out" / "verify" / "gate.json").read_text())
    assert gate["passed"] is False and gate["drop"] > 0
    rep = json.loads((here / "out" / "report" / "deploy.json").read_text())
    assert rep["ok"] is False and rep["release"] is None
    forced = deploy_model("digits-cnn", force=True, **kw)
    assert forced["run"]["reused"] == ["measure", "prune", "finetune", "export"]
    assert forced["gate"]["forced"] is True and forced["release"]["forced"] is True
    assert forced["ok"] is False and forced["shipped"] is True and forced["forced"]  # never ok over a forced gate
    m = json.loads((here / "board" / "current" / "manifest.json").read_text())
    assert m["forced"] is True and "points lost" in m["forced_why"]
    html = (here / "out" / "report" / "report.html").read_text()
    assert "Shipped with --force although it failed the accuracy gate" in html


def test_a_latency_budget_is_planned_and_measured_on_the_board(here):
    # --force: on a shared 2-core machine a tiny model's budget may land just outside the band;
    # what is checked here is that the board's measurements drove the plan and are reported.
    rep = deploy_model("digits-cnn", target="here", speedup=1.3, steps=STEPS, force=True, output=here / "out")
    lat = rep["latency"]
    assert lat["rounds"] and all(r["measured_ms"] > 0 for r in lat["rounds"])
    assert lat["budget_ms"] > 0 and lat["budget_from"] == "speedup 1.3"
    assert rep["stages"][1]["board_measurements"] >= 2  # the unpruned model and at least one round
    assert rep["stages"][5]["board_measurements"] == 1
    assert rep["latency"]["final_ms"] > 0 and rep["release"]["id"]


def _cli(*args, cwd, env_targets):
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(env_targets)}
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_cli_json_is_one_document_and_usage_errors_are_one_line(shipped, tmp_path):
    tmp, first = shipped
    res = _cli("deploy", "-t", "here", "-m", "digits-cnn", "--ratio", "0.3", "--steps", str(STEPS),
               "-o", str(tmp / "out"), "--json", cwd=tmp_path, env_targets=tmp / "targets.toml")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and doc["release"]["id"] == first["release"]["id"]
    bad = _cli("deploy", "-t", "here", "-m", "digits-cnn", "-o", str(tmp_path / "x"), cwd=tmp_path,
               env_targets=tmp / "targets.toml")
    assert bad.returncode != 0
    assert bad.stderr.strip() == ("error: give exactly one of --latency-budget MS, --speedup S or --ratio R")
    unknown = _cli("deploy", "-t", "jetson-nan", "-m", "digits-cnn", "--ratio", "0.3", "-o", str(tmp_path / "y"),
                   cwd=tmp_path, env_targets=tmp / "targets.toml")
    assert unknown.returncode != 0 and unknown.stderr.count("\n") == 1 and "jetson-nano" in unknown.stderr
    assert not (tmp_path / "y").exists()
