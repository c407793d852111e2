"""The on-device agent, run for real with this machine's Python and runtimes (no farm)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.bench.result import parse_agent_output

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "targets" / "agent.py"


def agent(
    *args: str, python: str = sys.executable, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(AGENT), *args], capture_output=True, timeout=timeout)


def test_agent_is_python36_compatible():
    vermin = shutil.which("vermin") or str(Path(sys.executable).parent / "vermin")
    res = subprocess.run(
        [vermin, "--target=3.6-", "--violations", "--no-tips", "-q", str(AGENT)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_agent_and_host_share_only_the_protocol():
    src = AGENT.read_text()
    assert not re.search(r"^\s*(from|import)\s+edgeprune", src, re.M)
    for py in (ROOT / "edgeprune").rglob("*.py"):
        assert not re.search(r"^\s*(from|import)\s+(targets|agent)\b", py.read_text(), re.M), py


def test_bench_onnx_reports_the_protocol(models):
    res = agent("bench", str(models["tiny"]), "--runs", "40", "--warmup", "5")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["protocol"] == 2 and doc["ok"] is True and doc["command"] == "bench"
    r = parse_agent_output(res.stdout, target="local")
    assert r.runtime == "onnxruntime" and r.runs == 40
    lat = r.latency_ms
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r.warmup_runs >= 5 and r.load_ms > 0 and r.first_inference_ms > 0
    assert r.peak_memory_mb and r.peak_memory_mb > 10
    assert r.board["cores"] >= 1 and r.board["machine"]
    assert r.throttled in (True, False, None) and r.throttle_reasons
    assert (
        r.model["sha256"] == __import__("hashlib").sha256(models["tiny"].read_bytes()).hexdigest()
    )
    assert r.model["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]


def test_per_op_profile_names_the_convolutions(models):
    res = agent("bench", str(models["tiny"]), "--runs", "10", "--profile-ops")
    ops = json.loads(res.stdout)["op_profile"]
    assert ops["available"] and ops["runs"] == 10
    conv = next(o for o in ops["by_op_type"] if o["op_type"] == "Conv")
    assert conv["calls_per_run"] == 2 and conv["ms_per_run"] > 0
    assert abs(sum(o["share"] for o in ops["by_op_type"]) - 1) < 1e-6
    assert not list(models["tiny"].parent.glob(".ep-ortprof*")), "profile file left behind"


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    return tiny_tflite(tmp_path_factory.mktemp("tfl") / "tiny.tflite")


def test_bench_tflite_with_litert(tflite_model):
    res = agent("bench", str(tflite_model), "--runs", "20", "--profile-ops")
    r = parse_agent_output(res.stdout, target="local")
    assert r.runtime == "litert" and "ai_edge_litert" in r.runtime_version
    assert r.latency_ms["p50"] > 0
    assert r.op_profile["available"] is False and r.op_profile["reason"]


def test_board_without_runtime_names_the_package(models, tmp_path):
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True
    )
    res = agent("bench", str(models["tiny"]), python=str(tmp_path / "bare" / "bin" / "python"))
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["error"]["kind"] == "missing_runtime"
    assert "pip install onnxruntime" in doc["error"]["install"]


def test_wrong_runtime_for_format_is_a_clear_error(models):
    doc = json.loads(agent("bench", str(models["tiny"]), "--runtime", "litert").stdout)
    assert (
        doc["ok"] is False
        and doc["error"]["kind"] == "bad_args"
        and ".tflite" in doc["error"]["message"]
    )


def test_missing_model_and_bad_args(tmp_path):
    doc = json.loads(agent("bench", str(tmp_path / "nope.onnx")).stdout)
    assert doc["error"]["kind"] == "bad_model"
    doc = json.loads(agent("bench").stdout)
    assert doc["error"]["kind"] == "bad_args"


def test_probe_lists_runtimes():
    doc = json.loads(agent("probe").stdout)
    assert doc["ok"] and doc["runtimes"]["onnxruntime"]["available"]
    assert doc["runtimes"]["tensorrt"]["available"] is False
    assert "JetPack" in doc["runtimes"]["tensorrt"]["install"]


def test_deadline_makes_the_kernel_end_the_agent(models):
    res = agent(
        "bench", str(models["tiny"]), "--runs", "100000", "--deadline-s", "1", "--warmup", "100000"
    )
    assert res.returncode == -signal.SIGALRM


def test_json_is_the_only_thing_on_stdout(tmp_path):
    # A runtime that prints (Python-level or straight to fd 1) must not corrupt the document.
    noisy = tmp_path / "noisy.py"
    noisy.write_text(
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('agent', {str(AGENT)!r})\n"
        "agent = importlib.util.module_from_spec(spec); spec.loader.exec_module(agent)\n"
        "real = agent.board_facts\n"
        "def chatty():\n"
        "    print('CHATTER from print'); os.write(1, b'CHATTER on fd 1\\n'); return real()\n"
        "agent.board_facts = chatty\n"
        "sys.exit(agent.main(['probe']))\n"
    )
    res = subprocess.run([sys.executable, str(noisy)], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.decode().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["protocol"] == 2
    assert b"CHATTER from print" in res.stderr and b"CHATTER on fd 1" in res.stderr


def test_agent_reports_contention(models):
    doc = json.loads(agent("bench", str(models["tiny"]), "--runs", "20").stdout)
    assert doc["load"]["other_busy_cores"] is None or doc["load"]["other_busy_cores"] >= 0


def _interpreters() -> list[str]:
    """Real Python 3.6-3.12 interpreters on this machine (pyenv's, or on PATH)."""
    import glob
    import os

    found = {}
    for minor in range(6, 13):
        cands = sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}"))
        )
        cands.append(shutil.which(f"python3.{minor}"))
        for c in cands:
            if c and "/shims/" not in c and os.access(c, os.X_OK):
                found[minor] = c
                break
    return list(found.values())


@pytest.mark.parametrize(
    "python", _interpreters() or [pytest.param(None, marks=pytest.mark.skip("none found"))]
)
def test_agent_runs_on_every_python_it_supports(python, models):
    doc = json.loads(agent("probe", python=python).stdout)
    assert doc["ok"] and doc["board"]["cores"] >= 1 and doc["agent"]["python"].startswith("3.")
    # These interpreters have no runtime installed: the agent must say so, as JSON.
    res = agent("bench", str(models["tiny"]), python=python)
    doc = json.loads(res.stdout)
    if doc["ok"]:  # this interpreter happens to have ONNX Runtime
        assert doc["latency_ms"]["p50"] > 0
    else:
        assert doc["error"]["kind"] == "missing_runtime" and doc["error"]["install"]


def test_agent_measures_with_python36_and_an_old_onnxruntime(tmp_path):
    """JetPack 4.6's Python 3.6 with ONNX Runtime 1.10 / numpy 1.19 (opt-in: needs a prepared site dir).

    Prepare once: pip install --target DIR --python-version 3.6 --implementation cp
    --platform manylinux2014_x86_64 --only-binary=:all: onnxruntime==1.10.0 numpy==1.19.5,
    then set EDGEPRUNE_PY36_SITE=DIR.
    """
    import os

    site = os.environ.get("EDGEPRUNE_PY36_SITE")
    py36 = [p for p in _interpreters() if p.endswith("python3.6")]
    if not site or not py36:
        pytest.skip("set EDGEPRUNE_PY36_SITE to a site dir with onnxruntime for Python 3.6")
    from tests.farm.models import tiny_convnet

    model = tiny_convnet(tmp_path / "m13.onnx", opset=13)  # ORT 1.10 reads up to opset 15
    res = subprocess.run(
        [py36[0], str(AGENT), "bench", str(model), "--runs", "20", "--profile-ops"],
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": site},
    )
    r = parse_agent_output(res.stdout, target="py36")
    assert r.agent["python"].startswith("3.6") and r.runtime_version == "1.10.0"
    assert r.op_profile["available"] and r.latency_ms["p50"] > 0


def _agent_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ep_agent_under_test", AGENT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "before, after, expected",
    [
        ({"vcgencmd": 0x0}, {"vcgencmd": 0x0}, False),
        ({"vcgencmd": 0x0}, {"vcgencmd": 0x4}, True),  # bit 2: throttled now
        ({"vcgencmd": 0x0}, {"vcgencmd": 0x40000}, True),  # bit 18: throttled since the start
        ({"vcgencmd": 0x40000}, {"vcgencmd": 0x40000}, False),  # before our run, not during
        ({"vcgencmd": 0x0}, {"vcgencmd": 0x10000}, False),  # under-voltage only: not throttling
        ({"thermal": [{"zone": "cpu", "temp_c": 50.0, "trip_c": 97.0}]}, {"thermal": []}, False),
        ({}, {"thermal": [{"zone": "cpu", "temp_c": 98.0, "trip_c": 97.0}]}, True),
        ({}, {"thermal": [{"zone": "x", "temp_c": 40.0, "trip_c": None}]}, None),  # no signal
    ],
)
def test_throttle_judgement(before, after, expected):
    throttled, reasons = _agent_module().judge_throttle(before, after)
    assert throttled is expected and (bool(reasons) or expected is False)


def test_percentiles_match_numpy():
    np = pytest.importorskip("numpy")
    mod = _agent_module()
    vals = sorted(np.random.default_rng(1).exponential(2.0, 101).tolist())
    for q in (50, 90, 99):
        assert abs(mod.percentile(vals, q) - float(np.percentile(vals, q))) < 1e-9
    s = mod.stats_ms([v / 1000 for v in vals])
    assert abs(s["std"] - float(np.std(vals, ddof=1))) < 1e-9
