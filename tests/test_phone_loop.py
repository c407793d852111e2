"""``prune --target pixel-8 --speedup 1.3`` and ``deploy --target pixel-8`` on a phone without Python.

The phone is FAKE (tests/fake_adb.py): its benchmark_model's run time grows
with the size of the .tflite it is given, so a model pruned to the plan is
faster by what the plan removed. Everything else is real: tracing, the
micro-models of the latency table (TFLite INT8, the pixel-8 profile's
format), the exports, the closed loop, the batch script over adb, the ship.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch_pruning")
pytest.importorskip("tensorflow")
pytest.importorskip("onnx2tf")

from edgeprune.cli import main  # noqa: E402
from tests.fake_adb import install_fake_bm_phone  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(900)]


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def pixel(tmp_path, monkeypatch):
    return install_fake_bm_phone(tmp_path, monkeypatch, name="pixel-8")


def test_prune_for_a_speedup_measured_on_the_phone(capsys, pixel):
    code, out, err = run(capsys, "prune", "-t", "pixel-8", "-m", "tests.latency_fakes:small_cnn", "--input-shape",
                         "1,3,32,32", "--speedup", "1.3", "--max-rounds", "2", "--json", "-o", str(pixel / "out"))
    s = json.loads(out)
    lat = s["latency"]
    assert code == 0 and lat["met"] is True, err
    assert lat["format"] == "tflite" and lat["precision"] == "int8" and lat["runtime"] == "litert"
    assert lat["runtime_version"].startswith("benchmark_model ") and lat["board_id"].startswith("android-")
    r = lat["rounds"][-1]
    assert r["measured_ms"] <= lat["budget_ms"] and lat["budget_ms"] == pytest.approx(lat["unpruned_ms"] / 1.3, rel=1e-3)
    assert abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] < 0.15  # the table predicts the phone
    assert lat["table"]["measured_now"] > 10 and lat["board_visits"] <= 6  # dozens of micro-models, few visits
    table = json.loads(Path(lat["table"]["cache"]).read_text())
    assert table["identity"]["delegate"] == "gpu" and table["identity"]["transport"] == "adb"
    graphs = (pixel / "bm.log").read_text().splitlines()
    assert all("--use_gpu=true" in g for g in graphs) and len(graphs) > 5 * lat["table"]["measured_now"]


def test_deploy_to_the_phone_ships_what_it_can_check(capsys, pixel):
    code, out, err = run(capsys, "deploy", "-t", "pixel-8", "-m", "digits-cnn", "--ratio", "0.3", "--steps", "40",
                         "--json", "-o", str(pixel / "dep"))
    rep = json.loads(out)
    assert code == 0 and rep["ok"], err
    rel = rep["release"]
    ver = rel["verification"]
    assert ver["outputs_compared"] is False and "passed" not in ver
    assert ver["statement"].endswith("outputs not compared: no runner on the phone")
    deploy = pixel / "data-local-tmp" / "edgeprune-deploy"
    assert (deploy / "current").resolve() == deploy / "releases" / rel["id"]
    assert (deploy / "current" / "model.tflite").read_bytes() == Path(rep["output"], "export",
                                                                      rel["artifact"]).read_bytes()
    assert rep["board"]["runtime_version"].startswith("benchmark_model ") and rep["board"]["model"] == "Google Pixel 8"
    assert rep["latency"]["final_ms"] > 0 and rep["latency"]["speedup"] > 1.0


def test_delegate_on_deploy_overrides_the_profiles_for_every_phone_measurement(capsys, pixel):
    """`--delegate` is one option on bench, prune and deploy (resolved with the target), FAKE phone."""
    code, out, err = run(capsys, "deploy", "-t", "pixel-8", "-m", "digits-cnn", "--ratio", "0.3", "--steps", "10",
                         "--delegate", "nnapi", "--json", "-o", str(pixel / "dep-nnapi"))
    rep = json.loads(out)
    assert code == 0 and rep["ok"], err
    runs = (pixel / "bm.log").read_text().splitlines()
    assert runs and all("--use_nnapi=true" in r and "--use_gpu=true" not in r for r in runs), runs[:3]
    assert "NNAPI" in rep["release"]["verification"]["statement"], rep["release"]["verification"]


def test_delegate_on_a_board_edgeprune_s_agent_measures_is_one_line(capsys):
    code, _, err = run(capsys, "prune", "-t", "local", "-m", "digits-cnn", "--speedup", "1.3", "--delegate", "gpu",
                       "-o", "never")
    assert code != 0 and "--delegate: local is measured by edgeprune's agent" in err and err.count("\n") == 1, err
