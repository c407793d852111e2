"""Protocol 2 ``batch``: many models measured in one agent run, interleaved, from one archive.

The agent is run for real with this machine's Python and ONNX Runtime / LiteRT;
the archives are real tar files, hostile ones included.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edgeprune.bench.batch import (
    BatchSettings,
    pack_batch,
    parse_batch_output,
)
from edgeprune.errors import AgentError

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "targets" / "agent.py"
QUICK = BatchSettings(rounds=3, runs=3, warmup=2, max_s=60)


def run_agent(archive: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(AGENT), "batch", str(archive), *args],
        capture_output=True,
        timeout=180,
        cwd=cwd or archive.parent,
    )


@pytest.fixture(scope="module")
def three(tmp_path_factory, models):
    """Two real models of different cost plus the per-call baseline, packed into one archive."""
    from tests.farm.models import tiny_convnet

    d = tmp_path_factory.mktemp("batch")
    small = tiny_convnet(d / "small.onnx", channels=8, size=16)
    big = tiny_convnet(d / "big.onnx", channels=48, size=48, seed=2)
    return d, {"small": small, "big": big}


def test_batch_measures_every_model_in_one_run(three, tmp_path):
    d, m = three
    archive, names = pack_batch(m, tmp_path / "b.tar")
    res = run_agent(archive, *QUICK.argv("onnxruntime"))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["protocol"] == 2 and doc["command"] == "batch" and doc["ok"]
    r = parse_batch_output(res.stdout, target="local", expected=names)
    assert set(r.timings) == {"small", "big"} and r.baseline is not None
    for t in r.timings.values():
        assert t.ok and t.n == QUICK.rounds * QUICK.runs and 0 < t.min_ms <= t.p50_ms
        assert t.spread >= 0
    # The bigger model costs more than the small one, and both more than the empty baseline.
    assert r.timings["big"].p50_ms > r.timings["small"].p50_ms > 0
    assert r.baseline.p50_ms < r.timings["big"].p50_ms
    assert r.rounds_done == QUICK.rounds and r.complete
    assert r.runtime == "onnxruntime" and r.board["id"] and r.board["cores"] >= 1
    assert r.throttled in (True, False, None)
    assert r.other_busy_cores is None or r.other_busy_cores >= 0
    # Extracted files are cleaned up; the archive stays unless asked.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("batch-")]
    assert archive.is_file()


def test_batch_removes_its_archive_when_asked(three, tmp_path):
    _, m = three
    archive, names = pack_batch({"small": m["small"]}, tmp_path / "b.tar")
    res = run_agent(archive, *QUICK.argv("onnxruntime"), "--remove-archive")
    assert res.returncode == 0, res.stderr
    assert not archive.exists()
    assert parse_batch_output(res.stdout, target="local", expected=names).timings["small"].ok


def test_one_model_that_cannot_load_does_not_spoil_the_batch(three, tmp_path):
    _, m = three
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    archive, names = pack_batch({"small": m["small"], "bad": bad}, tmp_path / "b.tar")
    res = run_agent(archive, *QUICK.argv("onnxruntime"))
    r = parse_batch_output(res.stdout, target="local", expected=names)
    assert r.timings["small"].ok
    assert not r.timings["bad"].ok and "cannot load" in r.timings["bad"].error


def test_soft_time_limit_returns_what_was_measured(three, tmp_path):
    _, m = three
    archive, names = pack_batch(m, tmp_path / "b.tar")
    s = BatchSettings(rounds=100000, runs=2, warmup=1, max_s=1.0)
    res = run_agent(archive, *s.argv("onnxruntime"))
    r = parse_batch_output(res.stdout, target="local", expected=names)
    assert 1 <= r.rounds_done < 100000 and not r.complete
    assert all(t.ok and t.n == 2 * r.rounds_done for t in r.timings.values())


def test_batch_of_tflite_models_with_litert(tmp_path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    model = tiny_tflite(tmp_path / "t.tflite")
    archive, names = pack_batch({"t": model}, tmp_path / "b.tar")
    res = run_agent(archive, *QUICK.argv("litert"))
    r = parse_batch_output(res.stdout, target="local", expected=names)
    assert r.runtime == "litert" and r.timings["t"].ok and r.baseline is not None


# -- hostile archives: the agent checks every member itself (Python 3.6 has no extraction filter)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _manifest(*names: str) -> tuple[tarfile.TarInfo, bytes]:
    doc = {"format": "edgeprune.batch", "version": 1,
           "models": [{"name": n, "sha256": "0" * 64} for n in names], "baseline": None}
    return _file("manifest.json", json.dumps(doc).encode())


@pytest.mark.parametrize(
    "member",
    [
        "../escape.onnx",
        "/tmp/abs.onnx",
        "sub/dir.onnx",
        ".hidden.onnx",
        "symlink",
        "hardlink",
        "directory",
        "fifo",
    ],
)
def test_hostile_members_are_refused_and_nothing_lands_outside(tmp_path, member):
    work = tmp_path / "work"
    work.mkdir()
    if member in ("symlink", "hardlink", "directory", "fifo"):
        info = tarfile.TarInfo("m.onnx")
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                     "directory": tarfile.DIRTYPE, "fifo": tarfile.FIFOTYPE}[member]
        info.linkname = "/etc/passwd"
        entry = (info, None)
    else:
        entry = _file(member, b"x")
    archive = _tar(work / "b.tar", [_manifest("m.onnx"), entry])
    res = run_agent(archive, *QUICK.argv("onnxruntime"))
    doc = json.loads(res.stdout)
    assert res.returncode == 2 and doc["error"]["kind"] == "bad_args", doc
    assert "archive" in doc["error"]["message"]
    assert sorted(p.name for p in work.iterdir()) == ["b.tar"]
    assert not (tmp_path / "escape.onnx").exists() and not Path("/tmp/abs.onnx").exists()


def test_oversized_member_and_too_many_members_are_refused(tmp_path):
    big = tarfile.TarInfo("m.onnx")
    big.size = 10 * 1024**3  # a header that claims 10 GiB: refused before reading a byte
    archive = tmp_path / "big.tar"
    with open(archive, "wb") as fh:
        fh.write(big.tobuf())
    doc = json.loads(run_agent(archive, *QUICK.argv("onnxruntime")).stdout)
    assert doc["error"]["kind"] == "bad_args" and "size" in doc["error"]["message"]

    many = [_manifest()] + [_file(f"f{i}.onnx", b"") for i in range(5000)]
    doc = json.loads(run_agent(_tar(tmp_path / "many.tar", many), *QUICK.argv("onnxruntime")).stdout)
    assert doc["error"]["kind"] == "bad_args" and "members" in doc["error"]["message"]


def test_manifest_must_match_the_files(three, tmp_path):
    _, m = three
    data = m["small"].read_bytes()
    archive = _tar(tmp_path / "b.tar", [_manifest("m.onnx"), _file("m.onnx", data)])
    doc = json.loads(run_agent(archive, *QUICK.argv("onnxruntime")).stdout)
    assert doc["error"]["kind"] == "bad_args" and "sha256" in doc["error"]["message"]
    archive = _tar(tmp_path / "c.tar", [_file("m.onnx", data)])
    doc = json.loads(run_agent(archive, *QUICK.argv("onnxruntime")).stdout)
    assert doc["error"]["kind"] == "bad_args" and "manifest" in doc["error"]["message"]


# -- the host reads the reply as untrusted input


def _reply(three, tmp_path) -> tuple[dict, dict]:
    _, m = three
    archive, names = pack_batch(m, tmp_path / "b.tar")
    res = run_agent(archive, *QUICK.argv("onnxruntime"))
    return json.loads(res.stdout), names


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: d["results"][0].update(p50_ms=-1.0), "p50_ms"),
        (lambda d: d["results"][0].update(p50_ms="fast"), "p50_ms"),
        (lambda d: d["results"][0].update(min_ms=1e9), "min_ms"),
        (lambda d: d["results"][0].update(name="../../etc/passwd"), "unknown model"),
        (lambda d: d["results"].__setitem__(1, dict(d["results"][0])), "twice"),
        (lambda d: d["results"].__setitem__(0, "x"), "object"),
        (lambda d: d.update(results={}), "list"),
        (lambda d: d["batch"].update(rounds_done=True), "rounds_done"),
        (lambda d: d.update(protocol=1), "protocol"),
        (lambda d: d["results"][0].update(n=0), ".n"),
    ],
)
def test_host_refuses_a_damaged_reply(three, tmp_path, damage, words):
    doc, names = _reply(three, tmp_path)
    damage(doc)
    with pytest.raises(AgentError, match=words.replace(".", r"\.")) as exc:
        parse_batch_output(json.dumps(doc).encode(), target="farm-b1", expected=names)
    assert "farm-b1" in str(exc.value) and "\n" not in str(exc.value)


def test_a_missing_model_in_the_reply_is_an_error(three, tmp_path):
    doc, names = _reply(three, tmp_path)
    doc["results"] = doc["results"][:1]
    with pytest.raises(AgentError, match="no result for"):
        parse_batch_output(json.dumps(doc).encode(), target="local", expected=names)


def test_pack_batch_names_are_plain_and_hashes_match(three, tmp_path):
    _, m = three
    archive, names = pack_batch({"a b;rm -rf /": m["small"]}, tmp_path / "b.tar")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert all("/" not in x.name and x.isfile() for x in members)
    assert names == {manifest["models"][0]["name"]: "a b;rm -rf /"}
    assert manifest["baseline"] and manifest["baseline"] in {x.name for x in members}


# -- one transport session for many batches


def test_batch_session_on_local_keeps_one_session_and_knows_the_board(three, tmp_path, monkeypatch):
    from edgeprune.bench.batch import BatchSession
    from edgeprune.boards.reach import resolve_target

    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    _, m = three
    with BatchSession(resolve_target("local"), settings=QUICK) as board:
        first = board.measure({"small": m["small"]})
        second = board.measure(m)
        ident = board.identity()
    assert board.visits == 2 and set(second.timings) == {"small", "big"}
    assert first.timings["small"].ok and second.timings["big"].p50_ms > 0
    assert ident["board_id"] == second.board["id"] and ident["runtime"] == "onnxruntime"
    assert ident["runtime_version"] and ident["host_key"] is None  # no SSH: no host key
    work = tmp_path / "cache" / "local-board"
    assert not list(work.glob("batch-*")), "archive or extracted files left on the board"
