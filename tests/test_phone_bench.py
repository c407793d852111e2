"""``edgeprune bench`` on a phone without Python: a FAKE adb and a FAKE benchmark_model (tests/fake_adb.py).

No Android phone can exist here; everything on this side of adb is real:
the targets file, the transport, the push by sha256, the parser, the cache,
the CLI. Every failure must come out as one line ``error: ...`` naming the fix.
"""

from __future__ import annotations

import json
import shutil

import pytest

from edgeprune.cli import main
from tests.fake_adb import install_fake_bm_phone


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    return tiny_tflite(tmp_path_factory.mktemp("m") / "m.tflite")


@pytest.fixture
def phone(tmp_path, monkeypatch):
    return install_fake_bm_phone(tmp_path, monkeypatch)


def bench_json(capsys, model, *extra):
    code, out, err = run(capsys, "bench", "-t", "phone", str(model), "--runs", "20", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_bench_gives_the_agents_result_with_what_the_binary_did_not_give(capsys, phone, model):
    r = bench_json(capsys, model, "--profile-ops")
    assert r["runtime"] == "litert" and r["runtime_version"].startswith("benchmark_model ")
    assert r["runs"] == 20 and r["latency_ms"]["min"] <= r["latency_ms"]["p50"] <= r["latency_ms"]["max"]
    assert "p90" not in r["latency_ms"] and {"latency_ms.p90", "latency_ms.p99", "other_busy_cores"} <= set(r["missing"])
    assert r["load_ms"] > 0 and r["first_inference_ms"] > 0 and r["peak_memory_mb"] > 0
    assert r["board"]["model"] == "Google Pixel 8" and r["board"]["os"] == "Android 14 (SDK 34)"
    assert r["board"]["cpu_model"] == "Google Tensor G3" and r["board"]["machine"] == "arm64-v8a"
    assert r["throttled"] is False  # dumpsys thermalservice answered status 0
    assert r["delegate"]["name"] == "gpu" and r["delegate"]["fell_back"] is False  # the profile's default
    assert r["op_profile"]["available"] and r["op_profile"]["by_op_type"][0]["op_type"] == "CONV_2D"
    asked = (phone / "bm.log").read_text().splitlines()
    assert "--use_gpu=true" in asked[0] and "--num_threads=4" in asked[0] and "--num_runs=20" in asked[0]
    assert "--enable_op_profiling=true" in asked[1] and "--enable_op_profiling=true" not in asked[0]


def test_binary_pushed_once_by_sha256_and_the_result_cached(capsys, phone, model):
    bench_json(capsys, model)
    again = bench_json(capsys, model)
    assert again["cached"] is True
    bench_json(capsys, model, "--no-cache")
    pushes = [ln for ln in (phone / "adb.log").read_text().splitlines() if ln.startswith("push ")]
    assert sum("benchmark_model" in p for p in pushes) == 1 and len(pushes) == 2  # the binary, the model
    on_phone = list((phone / "data-local-tmp" / "edgeprune").glob("benchmark_model-*"))
    assert len(on_phone) == 1 and on_phone[0].read_bytes() == (phone / "host" / "benchmark_model").read_bytes()


def test_delegate_from_the_command_line_then_the_targets_file(capsys, phone, model, monkeypatch):
    r = bench_json(capsys, model, "--delegate", "cpu")
    assert r["delegate"]["name"] == "cpu" and "--use_xnnpack=true" in r["settings"]["flags"]
    r = bench_json(capsys, model, "--delegate", "/data/local/tmp/libQnnTFLiteDelegate.so", "--no-cache")
    assert r["delegate"]["name"] == "external" and r["delegate"]["label"] == "external (libQnnTFLiteDelegate.so)"
    assert "--external_delegate_path=/data/local/tmp/libQnnTFLiteDelegate.so" in r["settings"]["flags"]
    install_fake_bm_phone(phone / "t2", monkeypatch, delegate="nnapi")
    assert bench_json(capsys, model)["delegate"]["name"] == "nnapi"


@pytest.mark.parametrize("mode, fell_back, ran", [("fallback", True, "gpu+cpu"), ("nogpu", True, "cpu")])
def test_a_delegate_that_falls_back_is_said(capsys, phone, model, monkeypatch, mode, fell_back, ran):
    monkeypatch.setenv("FAKE_BM_MODE", mode)
    r = bench_json(capsys, model)
    assert r["delegate"]["fell_back"] is fell_back and r["delegate"]["ran"] == ran


def test_thermal_state_from_dumpsys_or_missing_when_it_does_not_answer(capsys, phone, model, monkeypatch):
    monkeypatch.setenv("FAKE_THERMAL_STATUS", "2")
    r = bench_json(capsys, model)
    assert r["throttled"] is True and r["throttle_reasons"][0] == "thermal status MODERATE (2) around the runs"
    monkeypatch.setenv("FAKE_THERMAL_STATUS", "none")
    r = bench_json(capsys, model, "--no-cache")
    assert r["throttled"] is None and "throttled" in r["missing"]
    assert "did not answer" in r["throttle_reasons"][0]


def test_old_binary_without_percentiles_reports_p50_missing(capsys, phone, model, monkeypatch):
    monkeypatch.setenv("FAKE_BM_MODE", "old")
    r = bench_json(capsys, model)
    assert "p50" not in r["latency_ms"] and "latency_ms.p50" in r["missing"] and r["latency_ms"]["mean"] > 0
    code, out, _ = run(capsys, "bench", "-t", "phone", str(model), "--runs", "5", "--no-cache")
    assert code == 0 and "missing" in out


def test_litert_cli_cache_is_used_when_the_targets_file_names_no_binary(capsys, tmp_path, monkeypatch, model):
    phone = install_fake_bm_phone(tmp_path, monkeypatch, binary=False)
    code, _, err = run(capsys, "bench", "-t", "phone", str(model))
    line = err.strip()
    assert code == 1 and line.startswith("error: phone: no benchmark_model binary for this phone (arm64-v8a)")
    assert "~/.cache/litert-cli/binaries/arm64-v8a/benchmark_model" in line and 'benchmark_model = "PATH"' in line
    assert "\n" not in line
    cache = phone / "home" / ".cache" / "litert-cli" / "binaries" / "arm64-v8a"
    cache.mkdir(parents=True)
    shutil.copy(phone / "host" / "benchmark_model", cache / "benchmark_model")
    r = bench_json(capsys, model)
    assert r["agent"]["binary"] == str(cache / "benchmark_model")


def one_line_error(capsys, *args) -> str:
    code, _, err = run(capsys, *args)
    line = err.strip()
    assert code != 0 and line.startswith("error: ") and "\n" not in line and "Traceback" not in line, err
    return line


@pytest.mark.parametrize("mode, expect", [
    ("crash", "benchmark_model on phone: crashed on m.tflite (uploaded as model-"),
    ("garbage", "printed no timings for m.tflite"),
    ("huge", "printed more than 4 MiB"),
    ("badnum", "min: -5 is out of range [0, 3.6e+09]"),
    ("delegate_fails", "failed on m.tflite (uploaded as model-"),
])
def test_every_failure_of_the_binary_is_one_line(capsys, phone, model, monkeypatch, mode, expect):
    monkeypatch.setenv("FAKE_BM_MODE", mode)
    line = one_line_error(capsys, "bench", "-t", "phone", str(model), "--runs", "5")
    assert expect in line
    if mode == "delegate_fails":
        assert line.endswith("Benchmarking failed.")


def test_a_hanging_binary_is_stopped_at_the_timeout(capsys, phone, model, monkeypatch):
    monkeypatch.setenv("FAKE_BM_MODE", "hang")
    assert "timed out after 5 s" in one_line_error(capsys, "bench", "-t", "phone", str(model), "--timeout", "5")


@pytest.mark.parametrize("setup, expect", [
    ({"FAKE_ADB_STATE": "unauthorized"}, "adb device FAKE8PIXEL0001 is not ready: unauthorized"),
    ({"FAKE_ADB_PUSH": "fail"}, "adb push of benchmark_model failed: adb: error: failed to copy"),
    ({"FAKE_ADB_PUSH": "corrupt"}, "benchmark_model arrived damaged"),
])
def test_every_failure_of_the_link_is_one_line(capsys, phone, model, monkeypatch, setup, expect):
    for k, v in setup.items():
        monkeypatch.setenv(k, v)
    assert expect in one_line_error(capsys, "bench", "-t", "phone", str(model))


def test_wrong_inputs_are_one_line_naming_the_fix(capsys, phone, model, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    assert "export one with: edgeprune export --target pixel-8" in one_line_error(
        capsys, "bench", "-t", "phone", str(onnx))
    assert "unknown delegate 'tpu'" in one_line_error(capsys, "bench", "-t", "phone", str(model), "--delegate", "tpu")
    assert "has characters other than" in one_line_error(
        capsys, "bench", "-t", "phone", str(model), "--delegate", "/data/local/tmp/x y.so")
    assert "--delegate applies to phones" in one_line_error(capsys, "bench", "-t", "local", str(model),
                                                            "--delegate", "gpu")
    x86 = phone / "host" / "benchmark_model"
    x86.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little") + b"\0" * 40)
    assert "is a program for another processor (ELF machine 62), the phone is arm64-v8a" in one_line_error(
        capsys, "bench", "-t", "phone", str(model))


def test_termux_phones_keep_the_python_agent(tmp_path, monkeypatch):
    from edgeprune.boards.reach import resolve_target
    from tests.fake_adb import install_fake_phone

    install_fake_phone(tmp_path, monkeypatch, workdir=tmp_path / "wd")
    assert resolve_target("phone").runner == "agent"
    install_fake_bm_phone(tmp_path / "b", monkeypatch)
    assert resolve_target("phone").runner == "benchmark_model"
    assert resolve_target("local").runner == "agent"
