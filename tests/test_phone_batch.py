"""The batch session on a phone without Python: one folder push, one adb shell script, interleaved rounds.

Against a FAKE adb and a FAKE benchmark_model (tests/fake_adb.py) whose run
time grows with the model file's size, so a bigger model must measure slower.
"""

from __future__ import annotations

import pytest

from edgeprune.bench.batch import BatchSession, BatchSettings
from edgeprune.bench.phone_batch import BASELINE, PhoneBatchSession, parse_phone_batch
from edgeprune.boards.reach import resolve_target
from edgeprune.errors import BenchmarkModelError, ModelError, TransportError
from tests.fake_adb import install_fake_bm_phone

QUICK = BatchSettings(rounds=3, runs=4, warmup=1, max_s=60, timeout_s=120)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    d = tmp_path_factory.mktemp("models")
    small = tiny_tflite(d / "small.tflite")
    big = d / "big.tflite"
    big.write_bytes(small.read_bytes() + b"\0" * 60000)  # the same graph, a larger file: slower on the fake
    return {"small": small, "big": big, "baseline": small}


@pytest.fixture
def phone(tmp_path, monkeypatch):
    return install_fake_bm_phone(tmp_path, monkeypatch)


def test_batch_session_for_a_phone_is_the_phone_one_and_measures_in_one_push(phone, models):
    with BatchSession(resolve_target("phone"), settings=QUICK) as board:
        assert isinstance(board, PhoneBatchSession)
        res = board.measure({"small": models["small"], "big": models["big"]}, baseline=models["baseline"])
        ident = board.identity(res)
    t = res.timings
    assert t["small"].ok and t["big"].ok and t["big"].p50_ms > 2 * t["small"].p50_ms
    assert t["small"].min_ms <= t["small"].p10_ms <= t["small"].p50_ms <= t["small"].p90_ms
    assert t["small"].n == 3 * 4 and res.rounds_done == 3 and res.complete and res.baseline.p50_ms > 0
    assert res.runtime == "litert" and res.board["model"] == "Google Pixel 8" and res.throttled is False
    assert ident["delegate"] == "gpu" and ident["board_id"] == res.board["id"] and ident["transport"] == "adb"
    assert res.settings["delegate"]["fell_back_models"] == 0
    log = (phone / "adb.log").read_text().splitlines()
    folder_pushes = [ln for ln in log if ln.startswith("push ") and ln.rstrip().endswith("/batch")]
    assert len(folder_pushes) == 1
    # one script ran every model every round, the baseline among them, each round starting one later
    graphs = [ln.split("--graph=")[1].split()[0].rsplit("/", 1)[1]
              for ln in (phone / "bm.log").read_text().splitlines()]
    assert graphs == ["m0000.tflite", "m0001.tflite", BASELINE, "m0001.tflite", BASELINE, "m0000.tflite",
                      BASELINE, "m0000.tflite", "m0001.tflite"]
    # the folder is gone from the phone after the batch; the binary stays
    left = sorted(p.name for p in (phone / "data-local-tmp" / "edgeprune").iterdir())
    assert len(left) == 1 and left[0].startswith("benchmark_model-")


def test_one_model_crashing_does_not_stop_the_batch(phone, models, monkeypatch):
    monkeypatch.setenv("FAKE_BM_CRASH_ON", "m0001")
    with BatchSession(resolve_target("phone"), settings=QUICK) as board:
        res = board.measure({"small": models["small"], "big": models["big"]}, baseline=models["baseline"])
    assert res.timings["small"].ok
    assert not res.timings["big"].ok and res.timings["big"].error == "round 1: benchmark_model crashed on it (signal 11)"


def test_the_baseline_failing_fails_the_batch_in_one_line(phone, models, monkeypatch):
    monkeypatch.setenv("FAKE_BM_CRASH_ON", BASELINE)
    with BatchSession(resolve_target("phone"), settings=QUICK) as board, pytest.raises(
            BenchmarkModelError, match="cannot run the empty baseline model"):
        board.measure({"small": models["small"]}, baseline=models["baseline"])


def test_what_the_binary_prints_cannot_pass_for_the_scripts_markers(phone, models, monkeypatch):
    monkeypatch.setenv("FAKE_BM_MODE", "spoof")  # prints marker-like lines the filter keeps ("... count=1")
    with BatchSession(resolve_target("phone"), settings=QUICK) as board:
        res = board.measure({"small": models["small"]}, baseline=models["baseline"])
    assert res.rounds_done == 3 and res.timings["small"].n == 12


def test_a_damaged_push_measures_nothing(phone, models, monkeypatch):
    with BatchSession(resolve_target("phone"), settings=QUICK) as board:
        board.measure({"small": models["small"]}, baseline=models["baseline"])  # binary pushed, all well
        monkeypatch.setenv("FAKE_ADB_PUSH", "corrupt-folder")  # the next folder arrives with a byte more
        with pytest.raises(TransportError, match=r"arrived damaged \(1 of 2 files differ, e.g. \['m0000.tflite'\]"):
            board.measure({"small": models["small"]}, baseline=models["baseline"])
    assert not list((phone / "data-local-tmp" / "edgeprune").glob("batch-*"))


def test_onnx_models_are_refused_naming_the_format(phone, tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"x")
    with BatchSession(resolve_target("phone"), settings=QUICK) as board, pytest.raises(
            ModelError, match="measures .tflite models with benchmark_model, got .onnx"):
        board.measure({"a": onnx})


@pytest.mark.parametrize("reply, why", [
    (b"@@t1 begin 0 m0000.tflite\n|count=1 curr=5\n@@t1 end 0 m0000.tflite 0\n", "did not finish"),
    (b"@@t1 begin 0 ../../etc\n", "names a model we did not send"),
    (b"@@t1 begin 7 m0000.tflite\n", "round '7' is not one the script ran"),
    (b"@@t1 begin 0 m0000.tflite\n@@t1 end 1 m0000.tflite 0\n@@t1 done 2\n", "markers do not pair up"),
    (b"@@t1 begin 0 m0000.tflite\n@@t1 end 0 m0000.tflite x\n@@t1 done 1\n", "exit status 'x'"),
    (b"@@t1 nodir\n", "pushed folder was not there"),
    # another batch's (or a guessing binary's) markers are not this batch's: nothing finished
    (b"@@t2 begin 0 m0000.tflite\n@@t2 end 0 m0000.tflite 0\n@@t2 done 1\n", "did not finish"),
])
def test_the_scripts_reply_is_untrusted(reply, why):
    with pytest.raises(BenchmarkModelError, match=why):
        parse_phone_batch(reply, target="pixel-8", expected={"m0000.tflite": "a"}, rounds=2, tag="t1")


@pytest.mark.parametrize("mode", ["garbage", "huge"])
def test_a_binary_that_prints_no_timings_fails_the_batch_in_one_line(phone, models, monkeypatch, mode):
    monkeypatch.setenv("FAKE_BM_MODE", mode)  # "huge": 20 MB per run, none of it kept by the phone-side filter
    with BatchSession(resolve_target("phone"), settings=BatchSettings(rounds=1, runs=2, warmup=1)) as board, \
            pytest.raises(BenchmarkModelError) as exc:
        board.measure({"small": models["small"]}, baseline=models["baseline"])
    msg = str(exc.value)
    assert "cannot run the empty baseline model (round 1: benchmark_model printed no timings for it" in msg
    assert "\n" not in msg
