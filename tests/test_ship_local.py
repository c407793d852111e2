"""Shipping to ``--target local`` (this machine as the board): the whole flow with real ORT.

The failure cases that need a real link (cut, full disk, kill, lock, stale lock) are
in tests/test_ship_farm.py, on real sshd boards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgeprune
from edgeprune.errors import ShipCheckError, ShipError
from edgeprune.ship import list_releases, rollback, ship_artifact
from tests.farm.models import tiny_convnet


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A local target ``here`` whose deploy folder is tmp_path/deploy."""
    targets = tmp_path / "targets.toml"
    targets.write_text(
        f'[here]\nprofile = "local"\npython = "{sys.executable}"\n'
        f'deploy_dir = "{tmp_path / "deploy"}"\n'
    )
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "deploy"


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    return [tiny_convnet(d / f"net{i}.onnx", seed=i) for i in range(4)]


X = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
MANIFEST = {"source_model_sha256": "ab" * 32, "plan": {"groups": {"g0": 12}}, "precision": "fp32",
            "latency_ms": {"p50": 1.25}, "accuracy": {"top1": 0.91}}


def current(deploy: Path) -> str | None:
    return os.readlink(deploy / "current").split("/", 1)[1] if (deploy / "current").is_symlink() else None


def test_ship_verifies_then_switches_and_records_the_manifest(here, nets):
    steps = []
    r = ship_artifact(nets[0], target="here", manifest=MANIFEST, verify_inputs=X,
                      on_step=lambda t, s: steps.append(s))
    assert steps == ["connect", "lock", "stage", "upload", "sha256", "verify", "manifest", "switch", "gc", "done"]
    assert r.previous is None and current(here) == r.release and r.deploy_dir == str(here.resolve())
    assert r.release.endswith(r.sha256[:8])
    rel = here / "releases" / r.release
    assert sorted(p.name for p in rel.iterdir()) == [
        "check_inputs.npy", "check_outputs.npz", "manifest.json", "model.onnx", "release.seq"]
    assert (here / "current" / "model.onnx").read_bytes() == nets[0].read_bytes()
    m = json.loads((rel / "manifest.json").read_text())
    assert m["artifact"]["sha256"] == r.sha256 and m["source_model_sha256"] == "ab" * 32
    assert m["plan"] == MANIFEST["plan"] and m["profile"] == "local"
    assert m["format"] == "onnx" and m["precision"] == "fp32" and m["latency_ms"]["p50"] == 1.25
    assert m["accuracy"]["top1"] == 0.91 and m["edgeprune_version"] == edgeprune.__version__
    assert m["time"].endswith("Z") and m["release"] == r.release and m["previous"] is None
    assert m["check"]["passed"] and m["check"]["samples"] == 4
    assert m["check"]["outputs"][0]["max_abs"] <= m["check"]["outputs"][0]["limit"]
    assert m["check"]["runtime"]["name"] == "onnxruntime" and m["check"]["board"]["hostname"]
    assert not list((here / "staging").iterdir()) and not (here / "lock.json").exists()
    r2 = ship_artifact(nets[1], target="here", manifest=MANIFEST, verify_inputs=X, inline_max_bytes=0)
    assert r2.previous == r.release and current(here) == r2.release
    assert os.readlink(here / "previous") == f"releases/{r.release}"
    assert json.loads((here / "releases" / r2.release / "manifest.json").read_text())["previous"] == r.release


def test_a_mismatching_artifact_is_not_switched_to(here, nets):
    good = ship_artifact(nets[0], target="here", verify_inputs=X)
    from edgeprune.ship.check import host_outputs

    wrong = host_outputs(nets[2], X)  # the reference of another model: the board's outputs differ
    with pytest.raises(ShipCheckError) as exc:
        ship_artifact(nets[1], target="here", verify_inputs=X, reference_outputs=wrong)
    msg = str(exc.value)
    assert msg.startswith("here: on-board check failed") and "max abs error" in msg
    assert msg.endswith(f"nothing was switched: here's current release is still {good.release}")
    assert "\n" not in msg and exc.value.exit_code == 2
    assert current(here) == good.release and len(list((here / "releases").iterdir())) == 1
    assert not list((here / "staging").iterdir()) and not (here / "lock.json").exists()


def test_a_model_the_runtime_cannot_load_is_not_switched_to(here, nets, tmp_path):
    good = ship_artifact(nets[0], target="here", verify_inputs=X)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(nets[0].read_bytes()[:-200])  # truncated: ORT refuses it on the board
    ref = [np.zeros((4, 10), np.float32)]
    with pytest.raises(ShipError, match="cannot load bad.onnx|cannot load model.onnx") as exc:
        ship_artifact(bad, target="here", verify_inputs=X, reference_outputs=ref)
    assert str(exc.value).endswith(f"still {good.release}") and current(here) == good.release


def test_keep_n_releases_never_current_or_previous(here, nets):
    ids = [ship_artifact(nets[i % 4], target="here", verify_inputs=X, keep=2).release for i in range(4)]
    assert sorted(p.name for p in (here / "releases").iterdir()) == sorted(ids[-2:])
    rollback("here", to=ids[-2])  # current = the older one, previous = the newest
    r = ship_artifact(nets[0], target="here", verify_inputs=X, keep=1)
    # keep=1 keeps the newest only, plus current (r) and previous (ids[-2])
    assert sorted(p.name for p in (here / "releases").iterdir()) == sorted([ids[-2], r.release])
    assert f"{ids[-1]}" in r.removed


SAME_SECOND = ["20260101-000000-ffffffff", "20260101-000000-cccccccc", "20260101-000000-aaaaaaaa",
               "20260101-000000-11111111"]  # made in this order: their hex parts sort the other way


def test_release_order_is_when_each_was_made_not_the_ids_hex_part(here, nets, monkeypatch):
    """Issue 23: ships within one second once kept three releases for keep=2 (ids sorted by hex)."""
    ids = iter(SAME_SECOND)
    monkeypatch.setattr("edgeprune.ship.ship.new_release_id", lambda sha, now=None: next(ids))
    made = [ship_artifact(nets[i], target="here", verify_inputs=X, keep=2).release for i in range(4)]
    assert made == SAME_SECOND
    assert sorted(p.name for p in (here / "releases").iterdir()) == sorted(made[-2:])
    assert [r.id for r in list_releases("here").releases] == made[-2:]  # oldest first
    seqs = [int((here / "releases" / r / "release.seq").read_text()) for r in made[-2:]]
    assert seqs == [3, 4]


def test_releases_and_rollback(here, nets):
    a = ship_artifact(nets[0], target="here", manifest=MANIFEST, verify_inputs=X)
    b = ship_artifact(nets[1], target="here", manifest={"precision": "fp32"}, verify_inputs=X)
    listing = list_releases("here")
    assert [r.id for r in listing.releases] == [a.release, b.release]
    assert listing.current == b.release and listing.previous == a.release
    first = listing.releases[0]
    assert (first.sha256, first.format, first.precision, first.latency_ms) == (a.sha256, "onnx", "fp32", 1.25)
    assert first.accuracy == {"top1": 0.91} and first.previous and not first.current
    steps = []
    back = rollback("here", on_step=lambda t, s: steps.append(s))
    assert steps == ["connect", "lock", "sha256", "verify", "switch", "done"]
    assert (back.release, back.rolled_back_from, back.changed) == (a.release, b.release, True)
    assert back.check["passed"] and current(here) == a.release
    assert rollback("here").release == b.release  # previous is now b: back again
    same = rollback("here", to=b.release)
    assert not same.changed and "already current" in same.notes[-1]
    with pytest.raises(ShipError, match="no release nope on the board"):
        rollback("here", to="nope")
    with pytest.raises(ShipError, match="not a release id"):
        rollback("here", to="../etc")
    assert not list((here / "staging").iterdir()) and not (here / "lock.json").exists()


def test_rollback_refuses_a_damaged_release(here, nets):
    a = ship_artifact(nets[0], target="here", verify_inputs=X)
    b = ship_artifact(nets[1], target="here", verify_inputs=X)
    model = here / "releases" / a.release / "model.onnx"
    model.write_bytes(nets[2].read_bytes())  # replaced behind our back
    with pytest.raises(ShipError, match=f"release {a.release} is damaged") as exc:
        rollback("here")
    assert str(exc.value).endswith(f"still {b.release}") and current(here) == b.release
    model.write_bytes(nets[0].read_bytes())
    from edgeprune.ship.check import save_outputs

    save_outputs(here / "releases" / a.release / "check_outputs.npz", [np.ones((4, 10), np.float32)])
    with pytest.raises(ShipCheckError, match="on-board check failed"):
        rollback("here")
    assert current(here) == b.release and not list((here / "staging").iterdir())


def test_no_previous_release_says_so(here, nets):
    with pytest.raises(ShipError, match="no previous release to roll back to .*current: none"):
        rollback("here")
    listing = list_releases("here")
    assert listing.releases == [] and listing.current is None


def cli(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_releases_and_rollback(here, nets):
    a = ship_artifact(nets[0], target="here", manifest=MANIFEST, verify_inputs=X)
    b = ship_artifact(nets[1], target="here", manifest=MANIFEST, verify_inputs=X)
    res = cli("releases", "--target", "here", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["current"] == b.release and [r["id"] for r in doc["releases"]] == [a.release, b.release]
    assert doc["releases"][1]["current"] is True and doc["releases"][0]["sha256"] == a.sha256
    res = cli("releases", "--target", "here")
    assert res.returncode == 0 and a.release in res.stdout and "current" in res.stdout
    assert "1.25" in res.stdout and "top1" in res.stdout
    res = cli("rollback", "--target", "here", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["release"] == a.release and current(here) == a.release
    res = cli("rollback", "--target", "here", "--to", b.release)
    assert res.returncode == 0 and f"now runs {b.release}" in res.stdout
    res = cli("rollback", "--target", "here", "--to", "missing-one")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: here: no release missing-one") and current(here) == b.release


def test_api_mirrors_the_cli(here, nets):
    r = edgeprune.ship_model(nets[0], target="here", verify_inputs=X, manifest=MANIFEST)
    assert edgeprune.list_releases("here").current == r.release
    r2 = edgeprune.ship_model(nets[1], target="here", verify_inputs=X)
    assert edgeprune.rollback("here").release == r.release and r2.previous == r.release


def test_the_lock_heartbeat_keeps_a_long_deploy_fresh(here):
    import time

    from edgeprune.boards.reach import resolve_target
    from edgeprune.ship.board import Board
    from edgeprune.ship.lock import BoardLock, stale_reason
    from edgeprune.transport import open_transport

    with open_transport(resolve_target("here")) as t:
        board = Board(resolve_target("here"), t)
        board.prepare()
        lock = BoardLock(board, what="test", refresh_s=0.5)
        lock.acquire()
        try:
            time.sleep(2.5)
            held = board.listing()["lock"]
            assert held["owner"]["token"] == lock.token and held["age_s"] < 2.0
            assert stale_reason(held["owner"], held["age_s"], stale_s=2.0) is None  # ours, alive
            assert stale_reason(held["owner"], 5.0, stale_s=2.0).startswith("not refreshed for 5 s")
        finally:
            lock.release()
        assert board.listing()["lock"] is None
        assert "earlier attempt" in stale_reason(held["owner"], 0.0)  # released: not ours any more


def test_the_tolerance_follows_the_precision_export_stamped(here, nets, tmp_path):
    import shutil

    from edgeprune.export.artifact import stamp_metadata

    m = tmp_path / "stamped.onnx"
    shutil.copy(nets[0], m)
    stamp_metadata(m, {"precision": "fp16", "profile": "local"})
    r = ship_artifact(m, target="here", verify_inputs=X)
    assert r.manifest["precision"] == "fp16" and r.check["tolerance"]["rtol"] == 1e-2
    r = ship_artifact(m, target="here", verify_inputs=X, precision="fp32")  # the caller decides
    assert r.manifest["artifact"]["precision"] == "fp32"


# -- issue 23: Ctrl-C during a ship leaves no lock behind ----------------------------------------------------

def test_ctrl_c_as_the_agent_made_the_lock_removes_it(tmp_path):
    from edgeprune.ship import folder_lock

    lock = folder_lock(tmp_path, what="test")
    real = lock.board.release

    def ctrl_c_after(action, *args, **kw):
        doc = real(action, *args, **kw)
        if action == "lock":
            raise KeyboardInterrupt  # Ctrl-C between the agent making the lock and this process noting it
        return doc

    lock.board.release = ctrl_c_after
    with pytest.raises(KeyboardInterrupt):
        lock.acquire()
    assert not (tmp_path / "lock.json").exists()


def test_ctrl_c_stops_the_agent_process_it_interrupts(tmp_path):
    import signal
    import threading

    from edgeprune.transport._proc import run_process

    pidfile = tmp_path / "pid"
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        run_process(["sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 60'], cwd=None, timeout=120,
                    max_output=1 << 16, what="test")
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):  # stopped (and reaped), not left running on its own
        os.kill(pid, 0)


SHIP_CTRL_C = """
import os, signal, sys, threading
import numpy as np
from edgeprune.ship import ship_artifact
at = sys.argv[2]
def on_step(target, step):
    if step == at:  # Ctrl-C a moment into this step (inside the agent's call, mostly)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
try:
    ship_artifact(sys.argv[1], target="here", verify_inputs=x, on_step=on_step)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("step", ["lock", "stage", "upload", "verify", "switch"])
def test_ctrl_c_during_a_ship_releases_the_board_lock(here, nets, step):
    res = subprocess.run([sys.executable, "-c", SHIP_CTRL_C, str(nets[0]), step], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert res.returncode in (0, 130), res.stderr[-2000:]
    assert not (here / "lock.json").exists(), f"lock left after Ctrl-C in {step}"
    assert not list((here / "staging").iterdir())
    if current(here) is None:  # interrupted before the switch: nothing half there
        assert not list((here / "releases").iterdir())
