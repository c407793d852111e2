"""A fleet of boards in bounded parallel (issue 24, part 4): bench, ship and deploy to many targets.

The farm tests start their own farm of eight plain boards (tests/farm, real sshd
servers in network namespaces as root; one loopback sshd standing for all eight
otherwise) whose sshd servers all append their logins and disconnects to one
log: the sessions open at once are counted from what the boards recorded, in
the order they recorded it, not from timing on this side.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid

import pytest

from edgeprune._threads import CANARY_FAILED, NotStarted, fan_out
from edgeprune.boards.reach import expand_targets
from edgeprune.errors import EdgePruneError, ProfileError

BOARDS = [f"f{i}" for i in range(8)]


# -- the one fan-out ---------------------------------------------------------------------------


def test_fan_out_never_runs_more_than_parallel_and_keeps_the_order():
    lock, running, most = threading.Lock(), [0], [0]
    three_in = threading.Barrier(3, timeout=30)  # proves three really run together

    def one(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if i < 3:
            three_in.wait()
        with lock:
            running[0] -= 1
        if i == 5:
            return EdgePruneError(f"board {i} failed")  # an outcome, not a stop
        return i * 10

    out = fan_out(list(range(12)), one, parallel=3)
    assert most[0] == 3
    assert [str(o) if isinstance(o, EdgePruneError) else o for o in out] == [
        0, 10, 20, 30, 40, "board 5 failed", 60, 70, 80, 90, 100, 110]


def test_a_failed_canary_starts_no_other_item():
    called = []

    def one(i: int):
        called.append(i)
        return EdgePruneError("broken") if i == 1 else i

    out = fan_out(list(range(6)), one, parallel=4, canary=2)
    assert sorted(called) == [0, 1]
    assert out[0] == 0 and isinstance(out[1], EdgePruneError)
    assert all(isinstance(o, NotStarted) and str(o) == CANARY_FAILED for o in out[2:])
    called.clear()
    out = fan_out(list(range(6)), one, parallel=4, canary=1, passed=lambda o: o != 0)  # the caller's test
    assert called == [0] and all(isinstance(o, NotStarted) for o in out[1:])
    called.clear()
    assert fan_out([0, 2, 3], one, parallel=2, canary=1) == [0, 2, 3] and sorted(called) == [0, 2, 3]


# -- which boards --------------------------------------------------------------------------------


def test_targets_from_a_file_and_groups_of_the_targets_file(tmp_path, monkeypatch):
    tfile = tmp_path / "targets.toml"
    tfile.write_text('[pi-a]\nprofile = "raspberry-pi-5"\nhost = "10.0.0.1"\n'
                     '[pi-b]\nprofile = "raspberry-pi-5"\nhost = "10.0.0.2"\n'
                     '[lab]\ntargets = ["pi-a", "pi-b", "local"]\n')
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(tfile))
    listing = tmp_path / "boards.txt"
    listing.write_text("# the shelf\npi-b   # second\n\nlocal\nnano-1\n")
    assert expand_targets(["lab"]) == ["pi-a", "pi-b", "local"]
    assert expand_targets(["nano-0"], targets_from=str(listing)) == ["nano-0", "pi-b", "local", "nano-1"]
    for bad, want in [
        ('[lab]\ntargets = ["pi-a"]\nhost = "x"\n', "[lab] is a group (key 'targets'): it takes no other keys"),
        ('[lab]\ntargets = []\n', "[lab] key 'targets': expected a list of target names"),
        ('[a]\ntargets = ["x"]\n[lab]\ntargets = ["a"]\n', "a is a group; groups do not nest"),
    ]:
        tfile.write_text(bad)
        with pytest.raises(ProfileError, match=re.escape(want)):
            expand_targets(["lab"])
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ProfileError, match="no target names in it"):
        expand_targets([], targets_from=str(tmp_path / "empty.txt"))
    with pytest.raises(ProfileError, match="give the boards"):
        expand_targets([])


def test_a_group_is_refused_where_one_board_is_meant(tmp_path, monkeypatch):
    tfile = tmp_path / "targets.toml"
    tfile.write_text('[lab]\ntargets = ["local"]\n')
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(tfile)}
    res = subprocess.run([sys.executable, "-m", "edgeprune", "releases", "-t", "lab"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode != 0 and res.stderr.count("\n") == 1, res.stderr
    assert "[lab] is a group of boards (local); this command takes one board" in res.stderr


# -- deploy: the same fan-out, canary first (local boards: no farm needed) ------------------------


def test_deploy_with_a_failing_canary_starts_no_other_board(tmp_path):
    """Local boards with folders of their own; the canary's Python does not exist, so its first
    board measurement fails and neither other board is measured, pruned or shipped."""
    tfile = tmp_path / "targets.toml"
    tfile.write_text("".join(
        f'[{n}]\nprofile = "local"\npython = "{py}"\ndeploy_dir = "{tmp_path / ("dep-" + n)}"\n'
        for n, py in (("canary", "/nonexistent/python3"), ("here-a", sys.executable), ("here-b", sys.executable))))
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(tfile)}
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "edgeprune", "deploy", "-t", "canary", "-t", "here-a", "-t", "here-b",
         "--canary", "1", "--parallel", "2", "-m", "digits-cnn", "--ratio", "0.3", "--steps", "5",
         "--format", "onnx", "--precision", "fp32", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("FAILED  canary: ") and "/nonexistent/python3" in lines[0], res.stdout
    assert lines[1:3] == ["SKIPPED here-a: not started: canary failed", "SKIPPED here-b: not started: canary failed"]
    assert "3 boards (--parallel 2): 0 ok, 1 failed, 2 not started (a canary failed)" in res.stdout
    summary = json.loads((out / "deploy.json").read_text())
    assert [o["state"] for o in summary["targets"]] == ["failed", "not started", "not started"]
    assert summary["parallel"] == 2 and summary["canary"] == 1
    assert not (out / "here-a").exists() and not (out / "here-b").exists()
    assert not any((tmp_path / f"dep-{n}").exists() for n in ("canary", "here-a", "here-b"))


# -- the farm: eight real boards --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    import shutil
    from pathlib import Path

    from tests.farm.farm import BoardSpec, Farm
    from tests.farm.models import tiny_convnet

    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        pytest.skip("the SSH test farm needs openssh-server: run scripts/install-farm-deps.sh")
    d = tmp_path_factory.mktemp("fleet")
    model = tiny_convnet(d / "m.onnx")
    with Farm([BoardSpec(b) for b in BOARDS], session_log=True) as farm:
        yield farm, model


@pytest.fixture
def fleet_env(fleet, tmp_path):
    """Targets ``fleet-fN`` with fresh deploy folders, ``fleet-broken`` (f1 with a Python without numpy
    or a runtime), the group ``fleet`` and the list file boards.txt; the session log emptied."""
    farm, model = fleet
    tag = uuid.uuid4().hex[:8]

    def folder(b: str) -> str:
        return f"/tmp/fleet-{tag}" if farm.privileged else str(tmp_path / f"deploy-{b}")

    extra = {f"fleet-{b}": {"board": b, "deploy_dir": folder(b)} for b in BOARDS}
    extra["fleet-broken"] = {"board": "f1", "deploy_dir": folder("f1"), "python": farm.bare_python}
    tfile = tmp_path / "targets.toml"
    tfile.write_text(farm.targets_toml(extra=extra)
                     + '\n[fleet]\ntargets = ["fleet-f0", "fleet-broken", '
                     + ", ".join(f'"fleet-{b}"' for b in BOARDS[2:]) + "]\n")
    (tmp_path / "boards.txt").write_text("# the shelf\n" + "".join(f"fleet-{b}\n" for b in BOARDS))
    farm.session_log.write_text("")
    env = {**os.environ, "EDGEPRUNE_TARGETS": str(tfile), "EDGEPRUNE_CACHE_DIR": str(tmp_path / "cache")}
    return farm, model, env, folder


def cli(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)



@pytest.mark.farm
@pytest.mark.timeout(300)
def test_ship_to_eight_boards_three_at_a_time_canaries_first(fleet_env, monkeypatch):
    farm, model, env, _ = fleet_env
    res = cli(env, "ship", "--targets-from", str(env["EDGEPRUNE_TARGETS"]).replace("targets.toml", "boards.txt"),
              "--parallel", "3", "--canary", "2", str(model), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["parallel"] == 3 and doc["canary"] == 2
    assert [d["target"] for d in doc["targets"]] == [f"fleet-{b}" for b in BOARDS]
    assert all(d["state"] == "shipped" and d["check"]["passed"] for d in doc["targets"])
    most, logins = farm.sessions_at_once()  # what the boards' sshd recorded
    assert logins == 8 and 2 <= most <= 3
    if farm.privileged:  # one address per board: the two canaries were done before any other began
        events = farm.session_events()
        canaries = {farm.client_addr(b) for b in BOARDS[:2]}
        assert {a for d, a in events[:4] if d > 0} == canaries and all(a in canaries for _, a in events[:4])
    monkeypatch.setenv("EDGEPRUNE_TARGETS", env["EDGEPRUNE_TARGETS"])
    from edgeprune.ship import list_releases

    for d in doc["targets"]:
        assert list_releases(d["target"]).current == d["release"]


@pytest.mark.farm
@pytest.mark.timeout(300)
def test_a_failing_canary_stops_the_rollout_and_leaves_the_others_untouched(fleet_env, monkeypatch):
    farm, model, env, folder = fleet_env
    res = cli(env, "ship", "-t", "fleet", "--parallel", "3", "--canary", "2", str(model))
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("ok      fleet-f0: shipped")
    assert lines[1].startswith("FAILED  fleet-broken: ") and "numpy is not installed" in lines[1]
    assert lines[2:8] == [f"SKIPPED fleet-{b}: not started: canary failed" for b in BOARDS[2:]]
    assert lines[8] == "8 boards (--parallel 3): 1 ok, 1 failed, 6 not started (a canary failed)"
    most, logins = farm.sessions_at_once()
    assert logins == 2 and most <= 2  # the two canaries, and no session on any other board
    if farm.privileged:
        untouched = {farm.client_addr(b) for b in BOARDS[2:]}
        assert not [a for _, a in farm.session_events() if a in untouched]
        for b in BOARDS[2:]:  # nothing at all was written in their deploy folders
            assert farm.board_exec(b, "sh", "-c", f'test -e "{folder(b)}" && echo yes || echo no').strip() == "no"
    monkeypatch.setenv("EDGEPRUNE_TARGETS", env["EDGEPRUNE_TARGETS"])
    from edgeprune.ship import list_releases

    assert list_releases("fleet-broken").current is None
    for b in BOARDS[2:]:
        assert list_releases(f"fleet-{b}").releases == []


@pytest.mark.farm
@pytest.mark.timeout(300)
def test_bench_eight_boards_three_sessions_at_most(fleet_env):
    farm, model, env, _ = fleet_env
    args = [x for b in BOARDS for x in ("-t", f"fleet-{b}")]
    res = cli(env, "bench", *args, "--parallel", "3", str(model), "--runs", "5", "--warmup", "1", "--json")
    assert res.returncode == 0, res.stderr
    docs = json.loads(res.stdout)["results"]
    assert [d["target"] for d in docs] == [f"fleet-{b}" for b in BOARDS] and all(d["latency_ms"]["p50"] > 0
                                                                                for d in docs)
    assert "8 boards (--parallel 3): 8 ok, 0 failed" in res.stderr
    most, logins = farm.sessions_at_once()
    assert logins == 8 and 2 <= most <= 3
