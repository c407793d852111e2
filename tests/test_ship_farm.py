"""Shipping to real sshd boards (tests/farm): every failure leaves the previous release current.

Boards: b1-b3 (CPU quotas), lossy (20 Mbit/s, 5 % loss), full (8 MiB /tmp), cut (its
link is cut mid-upload). Each test gets its own deploy folder on each board.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from edgeprune.boards.reach import resolve_target
from edgeprune.errors import ShipCheckError, ShipError
from edgeprune.ship import list_releases, rollback, ship_artifact, ship_many, summary_lines
from edgeprune.ship.check import host_outputs
from edgeprune.transport import open_transport
from tests.farm.models import tiny_convnet

pytestmark = [pytest.mark.farm, pytest.mark.timeout(300)]

X = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
BOARDS = ("b1", "b2", "b3", "lossy", "full", "cut")


@pytest.fixture
def ship_env(farm, tmp_path, monkeypatch):
    """Targets ``ship-NAME`` for every board with a fresh deploy folder; ``ship-broken``: b3
    with a Python that has no numpy and no runtime."""
    tag = uuid.uuid4().hex[:8]

    def folder(board: str) -> str:
        return f"/tmp/ship-{tag}" if farm.privileged else str(tmp_path / f"deploy-{board}")

    extra = {f"ship-{b}": {"board": b, "deploy_dir": folder(b)} for b in BOARDS}
    extra["ship-broken"] = {"board": "b3", "deploy_dir": folder("b3") + "-broken", "python": farm.bare_python}
    targets = tmp_path / "targets.toml"
    targets.write_text(farm.targets_toml(extra=extra))
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("shipnets")
    return [tiny_convnet(d / f"net{i}.onnx", seed=i) for i in range(3)]


def blob(path, mb, seed=0):
    import random

    path.write_bytes(random.Random(seed).randbytes(int(mb * 2**20)))
    return path


def board_files(target: str, *rel: str) -> list[str]:
    """Names in the target's deploy folder (or a sub-folder), read over SSH."""
    reach = resolve_target(target)
    with open_transport(reach) as t:
        res = t.run(["sh", "-c", 'ls -A "$1" 2>/dev/null; true', "ls", "/".join([reach.deploy_dir, *rel])],
                    timeout=20)
    return sorted(n for n in res.stdout.decode().split("\n") if n)


def test_ship_list_and_rollback_over_ssh(ship_env, nets):
    a = ship_artifact(nets[0], target="ship-b1", verify_inputs=X, manifest={"precision": "fp32"})
    b = ship_artifact(nets[1], target="ship-b1", verify_inputs=X, inline_max_bytes=0)  # SFTP download
    assert b.previous == a.release and b.check["passed"] and b.board["hostname"] == "farm-b1"
    listing = list_releases("ship-b1")
    assert [r.id for r in listing.releases] == [a.release, b.release] and listing.current == b.release
    back = rollback("ship-b1")
    assert back.release == a.release and back.check["passed"]
    assert list_releases("ship-b1").current == a.release
    assert board_files("ship-b1", "releases", a.release) == [
        "check_inputs.npy", "check_outputs.npz", "manifest.json", "model.onnx", "release.seq"]
    assert board_files("ship-b1", "staging") == []


def test_link_cut_mid_upload_keeps_the_previous_release(ship_env, root_farm, nets, tmp_path):
    good = ship_artifact(nets[0], target="ship-cut", verify_inputs=X)
    big = blob(tmp_path / "big.onnx", 40, 4)  # 40 MiB at 20 Mbit/s: ~17 s
    timer = threading.Timer(2.0, root_farm.cut, args=("cut",))

    def at(target, step):
        if step == "upload":
            timer.start()

    start = time.monotonic()
    try:
        with pytest.raises(ShipError) as exc:
            ship_artifact(big, target="ship-cut", verify_inputs=X, on_step=at,
                          reference_outputs=host_outputs(nets[0], X))
        took = time.monotonic() - start
    finally:
        timer.join()
        root_farm.restore("cut")
    msg = str(exc.value)
    assert "lost while uploading big.onnx" in msg and "\n" not in msg
    assert msg.endswith(f"nothing was switched: ship-cut's current release is still {good.release}")
    assert took < 60
    assert list_releases("ship-cut").current == good.release
    # The lock this process could not release is cleared by the next deploy, with a note.
    again = ship_artifact(nets[1], target="ship-cut", verify_inputs=X)
    assert any("cleared a stale deploy lock" in n and "earlier attempt of this process" in n
               for n in again.notes)
    assert again.previous == good.release and board_files("ship-cut", "staging") == []


def test_full_disk_keeps_the_previous_release(ship_env, root_farm, nets, tmp_path):
    good = ship_artifact(nets[0], target="ship-full", verify_inputs=X)
    big = blob(tmp_path / "big.onnx", 12, 2)  # the board's /tmp holds 8 MiB
    with pytest.raises(ShipError) as exc:
        ship_artifact(big, target="ship-full", verify_inputs=X, reference_outputs=host_outputs(nets[0], X))
    msg = str(exc.value)
    assert "no space left on the board for big.onnx" in msg and "\n" not in msg
    assert msg.endswith(f"still {good.release}")
    assert list_releases("ship-full").current == good.release
    assert board_files("ship-full", "staging") == [] and "lock.json" not in board_files("ship-full")
    # nothing partial was left behind: the next ship fits
    assert ship_artifact(nets[1], target="ship-full", verify_inputs=X).previous == good.release


KILLER = """
import os, signal, sys
import numpy as np
from edgeprune.ship import ship_artifact
x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)

def hook(target, step):
    if step == "switch":  # uploaded and verified, not yet switched
        os.kill(os.getpid(), signal.SIGKILL)

ship_artifact(sys.argv[1], target="ship-b2", verify_inputs=x, on_step=hook)
"""


def test_deploy_killed_between_upload_and_switch(ship_env, nets):
    good = ship_artifact(nets[0], target="ship-b2", verify_inputs=X)
    proc = subprocess.run([sys.executable, "-c", KILLER, str(nets[1])], capture_output=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    listing = list_releases("ship-b2")
    assert listing.current == good.release and [r.id for r in listing.releases] == [good.release]
    assert len(board_files("ship-b2", "staging")) == 1  # the dead deploy's upload, never a release
    assert listing.lock and listing.lock["owner"]["pid"] != os.getpid()
    again = ship_artifact(nets[2], target="ship-b2", verify_inputs=X)
    assert any("cleared a stale deploy lock" in n and "is gone" in n for n in again.notes)
    assert again.previous == good.release and board_files("ship-b2", "staging") == []


def test_artifact_failing_on_board_verification(ship_env, nets):
    good = ship_artifact(nets[0], target="ship-b3", verify_inputs=X)
    corrupt = [o + 0.5 for o in host_outputs(nets[1], X)]
    with pytest.raises(ShipCheckError) as exc:
        ship_artifact(nets[1], target="ship-b3", verify_inputs=X, reference_outputs=corrupt)
    assert "on-board check failed" in str(exc.value) and str(exc.value).endswith(f"still {good.release}")
    assert list_releases("ship-b3").current == good.release
    assert board_files("ship-b3", "staging") == [] and "lock.json" not in board_files("ship-b3")


def test_a_board_without_the_runtime_is_not_switched(ship_env, nets):
    with pytest.raises(ShipError, match="numpy is not installed on this board") as exc:
        ship_artifact(nets[0], target="ship-broken", verify_inputs=X)
    assert str(exc.value).endswith("ship-broken has no current release yet")
    assert list_releases("ship-broken").releases == []


def test_second_concurrent_deploy_is_refused(ship_env, nets):
    good = ship_artifact(nets[0], target="ship-b1", verify_inputs=X)
    verifying, go_on = threading.Event(), threading.Event()
    outcome = {}

    def hold(target, step):
        if step == "verify":
            verifying.set()
            go_on.wait(120)

    def first():
        outcome["a"] = ship_artifact(nets[1], target="ship-b1", verify_inputs=X, on_step=hold)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert verifying.wait(120)
        with pytest.raises(ShipError) as exc:
            ship_artifact(nets[2], target="ship-b1", verify_inputs=X)
        msg = str(exc.value)
        assert "another deploy holds the board's deploy lock" in msg and "\n" not in msg
        assert f"pid {os.getpid()}" in msg and list_releases("ship-b1").current == good.release
        waiter = threading.Thread(target=lambda: outcome.setdefault(
            "c", ship_artifact(nets[2], target="ship-b1", verify_inputs=X, lock_wait_s=120)))
        waiter.start()
        time.sleep(1)
    finally:
        go_on.set()
        t.join(120)
    waiter.join(120)
    assert outcome["a"].previous == good.release
    assert outcome["c"].previous == outcome["a"].release  # it waited, then shipped after
    assert list_releases("ship-b1").current == outcome["c"].release


def plant_lock(target: str, owner: str, age_s: int) -> None:
    reach = resolve_target(target)
    with open_transport(reach) as t:
        script = 'mkdir -p "$1" && printf %s "$2" > "$1/lock.json" && touch -d "@$3" "$1/lock.json"'
        res = t.run(["sh", "-c", script, "plant", reach.deploy_dir, owner, str(int(time.time()) - age_s)],
                    timeout=20)
        assert res.rc == 0, res.stderr


def test_stale_lock_from_another_computer_is_cleared(ship_env, nets):
    good = ship_artifact(nets[0], target="ship-b2", verify_inputs=X)
    owner = '{"token": "t0", "host": "elsewhere/12345678", "pid": 4242, "user": "ci", "what": "ship x"}'
    plant_lock("ship-b2", owner, age_s=30)  # fresh: its deploy may be running
    with pytest.raises(ShipError, match="another deploy holds .*pid 4242 on elsewhere") as exc:
        ship_artifact(nets[1], target="ship-b2", verify_inputs=X)
    assert str(exc.value).endswith("without refresh)")
    plant_lock("ship-b2", owner, age_s=3600)  # not refreshed for an hour: stale
    r = ship_artifact(nets[1], target="ship-b2", verify_inputs=X)
    (note,) = r.notes
    assert "cleared a stale deploy lock" in note and "pid 4242 on elsewhere" in note
    assert re.search(r"not refreshed for 360\d s \(limit 120 s\)", note) and r.previous == good.release


def test_ship_many_three_boards_one_failing(ship_env, nets):
    names = ["ship-b1", "ship-lossy", "ship-broken"]
    outcomes = ship_many(nets[0], targets=names, verify_inputs=X)
    ok, lossy, broken = outcomes
    assert ok.release and lossy.release and ok.sha256 == lossy.sha256
    assert isinstance(broken, ShipError) and "numpy is not installed" in str(broken)
    lines = summary_lines(names, outcomes)
    assert lines[0].startswith("ok      ship-b1: shipped") and lines[2].startswith("FAILED  ship-broken:")
    assert list_releases("ship-lossy").current == lossy.release
