"""The agent's ship commands, run for real with this machine's Python and runtimes (no farm).

``run``: an artifact on given inputs with the board's runtime, outputs inline or in a file.
``release``: the deploy folder (lock, activate, switch, gc, list), every path kept inside it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "targets" / "agent.py"


def agent(*args: str, ok: bool | None = True) -> dict:
    res = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, timeout=120)
    doc = json.loads(res.stdout)
    if ok is not None:
        assert doc["ok"] is ok, (doc.get("error"), res.stderr.decode()[-2000:])
    return doc


def ort_outputs(model: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"input": x[i : i + 1]}) for i in range(len(x))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


@pytest.fixture
def inputs(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return x


def test_run_returns_the_runtimes_outputs_inline(models, inputs, tmp_path):
    doc = agent("run", str(models["tiny"]), "--inputs", str(tmp_path / "x.npy"))
    assert doc["command"] == "run" and doc["runtime"]["name"] == "onnxruntime"
    assert doc["run"]["samples"] == 5 and doc["run"]["batches"] == 5
    assert doc["model"]["sha256"] == __import__("hashlib").sha256(models["tiny"].read_bytes()).hexdigest()
    (out,) = doc["outputs"]
    assert out["name"] == "output0" and out["dtype"] == "<f4" and out["shape"] == [5, 10]
    got = np.frombuffer(base64.b64decode(out["data_b64"]), np.float32).reshape(5, 10)
    np.testing.assert_array_equal(got, ort_outputs(models["tiny"], inputs)[0])
    assert doc["outputs_file"] is None


def test_run_writes_big_outputs_to_a_file(models, inputs, tmp_path):
    out = tmp_path / "o" / "outs.npz"
    out.parent.mkdir()
    doc = agent("run", str(models["tiny"]), "--inputs", str(tmp_path / "x.npy"),
                "--inline-max-bytes", "16", "--out", str(out))
    assert "data_b64" not in doc["outputs"][0]
    assert doc["outputs_file"]["path"] == str(out) and doc["outputs_file"]["bytes"] == out.stat().st_size
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["output_0"], ort_outputs(models["tiny"], inputs)[0])
    assert [p.name for p in out.parent.iterdir()] == ["outs.npz"]  # no temporary left
    doc = agent("run", str(models["tiny"]), "--inputs", str(tmp_path / "x.npy"),
                "--inline-max-bytes", "16", ok=False)
    assert doc["error"]["kind"] == "bad_args" and "--out" in doc["error"]["message"]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda x: x.astype(np.float64), "dtype float64"),
        (lambda x: x[:, :, :16], "shape"),
        (lambda x: np.array([{"a": 1}], dtype=object), "cannot read"),
    ],
)
def test_run_refuses_inputs_that_do_not_fit(models, tmp_path, make, words):
    x = np.zeros((2, 3, 32, 32), np.float32)
    np.save(tmp_path / "bad.npy", make(x), allow_pickle=True)
    doc = agent("run", str(models["tiny"]), "--inputs", str(tmp_path / "bad.npy"), ok=False)
    assert doc["error"]["kind"] == "bad_args" and words in doc["error"]["message"]


def test_run_reports_a_model_the_runtime_cannot_load(tmp_path, inputs):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model at all")
    doc = agent("run", str(bad), "--inputs", str(tmp_path / "x.npy"), ok=False)
    assert doc["error"]["kind"] == "bad_model" and "broken.onnx" in doc["error"]["message"]


def test_run_with_litert(tmp_path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    model = tiny_tflite(tmp_path / "t.tflite")
    x = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    doc = agent("run", str(model), "--inputs", str(tmp_path / "x.npy"))
    assert doc["runtime"]["name"] == "litert" and doc["outputs"][0]["shape"] == [3, 10]
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    want = []
    for i in range(3):
        it.set_tensor(it.get_input_details()[0]["index"], x[i : i + 1])
        it.invoke()
        want.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
    got = np.frombuffer(base64.b64decode(doc["outputs"][0]["data_b64"]), np.float32).reshape(3, 10)
    np.testing.assert_allclose(got, np.concatenate(want), rtol=1e-6, atol=1e-6)


# -- release ---------------------------------------------------------------------


def rel(action: str, d: Path, *args: str, ok: bool | None = True) -> dict:
    return agent("release", action, str(d), *args, ok=ok)


def stage(d: Path, rid: str, content: bytes = b"model") -> None:
    s = d / "staging" / rid
    s.mkdir(parents=True)
    (s / "model.onnx").write_bytes(content)
    (s / "manifest.json").write_text(json.dumps({"release": rid, "sha256": "x" * 64}))


def owner(token: str, **extra) -> str:
    return json.dumps({"token": token, "host": "h", "pid": 1, **extra})


def test_lock_is_exclusive_and_only_its_holder_releases_it(tmp_path):
    d = tmp_path / "deploy"
    doc = rel("init", d)
    assert doc["deploy_dir"] == str(d.resolve()) and doc["current"] is None
    assert rel("lock", d, "--token", "t1", "--owner", owner("t1"))["acquired"] is True
    other = rel("lock", d, "--token", "t2", "--owner", owner("t2"))
    assert other["acquired"] is False and other["owner"]["token"] == "t1" and other["age_s"] >= 0
    assert rel("refresh", d, "--token", "t2")["held"] is False
    assert rel("refresh", d, "--token", "t1")["held"] is True
    assert rel("unlock", d, "--token", "t2")["released"] is False
    assert rel("unlock", d, "--token", "t1")["released"] is True
    assert rel("lock", d, "--token", "t2", "--owner", owner("t2"))["acquired"] is True
    assert not [p.name for p in d.iterdir() if p.name.startswith(".lock")]


def test_break_removes_only_the_lock_it_was_told_about(tmp_path):
    d = tmp_path / "deploy"
    rel("init", d)
    rel("lock", d, "--token", "old", "--owner", owner("old"))
    assert rel("break", d, "--token", "someone-else")["broken"] is False
    assert rel("lock", d, "--token", "x", "--owner", owner("x"))["owner"]["token"] == "old"
    assert rel("break", d, "--token", "old")["broken"] is True
    assert rel("lock", d, "--token", "new", "--owner", owner("new"))["acquired"] is True


def test_activate_switches_current_atomically_and_records_previous(tmp_path):
    d = tmp_path / "deploy"
    rel("init", d)
    rel("lock", d, "--token", "t", "--owner", owner("t"))
    stage(d, "r1")
    doc = rel("activate", d, "--token", "t", "--id", "r1")
    assert doc["current"] == "r1" and doc["previous"] is None
    assert os.readlink(d / "current") == "releases/r1"
    assert (d / "current" / "model.onnx").read_bytes() == b"model"
    stage(d, "r2", b"model2")
    doc = rel("activate", d, "--token", "t", "--id", "r2")
    assert (doc["current"], doc["previous"]) == ("r2", "r1")
    assert os.readlink(d / "previous") == "releases/r1"
    doc = rel("switch", d, "--token", "t", "--id", "r1")
    assert (doc["current"], doc["previous"]) == ("r1", "r2")
    assert (d / "current" / "model.onnx").read_bytes() == b"model"
    listing = rel("list", d)
    assert listing["current"] == "r1" and listing["previous"] == "r2"
    assert [r["id"] for r in listing["releases"]] == ["r1", "r2"]
    assert listing["releases"][0]["manifest"]["release"] == "r1"
    assert listing["lock"]["owner"]["token"] == "t"
    assert not [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_release_actions_need_the_lock(tmp_path):
    d = tmp_path / "deploy"
    rel("init", d)
    stage(d, "r1")
    doc = rel("activate", d, "--token", "t", "--id", "r1", ok=False)
    assert doc["error"]["kind"] == "lock_lost"
    rel("lock", d, "--token", "other", "--owner", owner("other"))
    for action in ("activate", "switch", "gc", "discard"):
        args = ["--keep", "3"] if action == "gc" else ["--id", "r1"]
        assert rel(action, d, "--token", "t", *args, ok=False)["error"]["kind"] == "lock_lost"
    assert not (d / "current").exists() and (d / "staging" / "r1").is_dir()


@pytest.mark.parametrize("rid", ["../x", "..", "a/b", ".hidden", "", "x" * 200])
def test_release_ids_cannot_leave_the_folder(tmp_path, rid):
    d = tmp_path / "deploy"
    rel("init", d)
    rel("lock", d, "--token", "t", "--owner", owner("t"))
    for action in ("activate", "switch", "discard"):
        doc = rel(action, d, "--token", "t", "--id", rid, ok=False)
        assert doc["error"]["kind"] == "bad_args" and "release id" in doc["error"]["message"]


def test_gc_keeps_the_newest_and_never_current_or_previous(tmp_path):
    d = tmp_path / "deploy"
    rel("init", d)
    rel("lock", d, "--token", "t", "--owner", owner("t"))
    for i in range(1, 6):
        stage(d, f"r{i}")
        rel("activate", d, "--token", "t", "--id", f"r{i}")
    rel("switch", d, "--token", "t", "--id", "r1")  # current r1, previous r5
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    (d / "releases" / "r0-link").symlink_to(outside)  # a symlink is unlinked, never followed
    stage(d, "leftover")  # from a dead deploy
    doc = rel("gc", d, "--token", "t", "--keep", "2")
    assert sorted(p.name for p in (d / "releases").iterdir()) == ["r1", "r4", "r5"]
    assert sorted(doc["removed"]) == ["leftover (staging)", "r0-link", "r2", "r3"]
    assert (outside / "keep.txt").read_text() == "not ours"
    assert not list((d / "staging").iterdir())
    assert os.readlink(d / "current") == "releases/r1"


def test_a_symlinked_releases_folder_is_refused(tmp_path):
    d = tmp_path / "deploy"
    rel("init", d)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (d / "releases").rmdir()
    (d / "releases").symlink_to(elsewhere)
    doc = rel("list", d, ok=False)
    assert doc["error"]["kind"] == "bad_args" and "symlink" in doc["error"]["message"]


def test_stage_clears_leftovers_and_makes_a_fresh_folder(tmp_path):
    d = tmp_path / "deploy"
    rel("init", d)
    rel("lock", d, "--token", "t", "--owner", owner("t"))
    stage(d, "dead-deploy")
    stage(d, "r1")
    rel("activate", d, "--token", "t", "--id", "r1")
    doc = rel("stage", d, "--token", "t", "--id", "r2")
    assert doc["staging"] == str(d.resolve() / "staging" / "r2") and (d / "staging" / "r2").is_dir()
    assert doc["removed"] == ["dead-deploy (staging)"] and doc["current"] == "r1"
    assert doc["free_bytes"] > 0
    doc = rel("stage", d, "--token", "t", "--id", "r1", ok=False)
    assert doc["error"]["kind"] == "bad_release" and "already exists" in doc["error"]["message"]
    assert rel("stage", d, "--token", "nope", "--id", "r3", ok=False)["error"]["kind"] == "lock_lost"


def test_lock_without_hard_links_falls_back_to_exclusive_create(tmp_path, monkeypatch):
    """Some phone folders or FUSE file systems refuse link(2): O_EXCL creation takes over."""
    import argparse
    import errno
    import importlib.util

    spec = importlib.util.spec_from_file_location("ep_agent_for_test", AGENT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def no_link(*_):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(mod.os, "link", no_link)
    root = mod._deploy_root(str(tmp_path / "d"), create=True)
    first = mod._release_lock(root, argparse.Namespace(token="a", owner=owner("a")))
    second = mod._release_lock(root, argparse.Namespace(token="b", owner=owner("b")))
    assert first["acquired"] is True and second["acquired"] is False
    assert second["owner"]["token"] == "a" and not list(Path(root).glob(".lock-*"))
