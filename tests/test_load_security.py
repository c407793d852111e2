"""Issue 8, item 1: a model file never decides what code runs.

Hostile ``.ept`` files (a factory base, a base naming a module with side
effects at import, a state_dict holding a non-tensor, a plan that does not
fit, an absurd input shape) and a plain pickle: nothing runs, one line each.
A factory base is built only when the user names that factory.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgeprune.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent

TINY_ZOO = """
import torch.nn as nn
def tiny():
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    m.input_shape = (1, 3, 16, 16)
    return m
def other():
    return tiny()
"""


def cli(*args, cwd, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits_ept(tmp_path_factory) -> Path:
    """A real pruned digits-cnn .ept (built-in base)."""
    from edgeprune.models import build
    from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_, save_pruned

    model = build("digits-cnn", pretrained=False)
    x = example_input((1, 1, 16, 16))
    plan = ChannelPlan.uniform(prunable_groups(model, x), 0.5, input_shape=(1, 1, 16, 16), base="digits-cnn")
    prune_(model, plan)
    return save_pruned(model, plan, tmp_path_factory.mktemp("ept") / "model.ept")


def rewrite(src: Path, dst: Path, *, meta=None, state=None) -> Path:
    blob = torch.load(src, weights_only=True)
    m = json.loads(blob["meta"])
    if meta:
        m.update(meta)
    blob["meta"] = json.dumps(m)
    if state:
        blob["state_dict"] = {**blob["state_dict"], **state}
    torch.save(blob, dst)
    return dst


def test_factory_base_in_a_file_is_not_called(digits_ept, tmp_path):
    """The reproduction from the issue: base "tempfile:mkdtemp" made a folder in $TMPDIR."""
    hostile = rewrite(digits_ept, tmp_path / "hostile.ept", meta={"base": "tempfile:mkdtemp"})
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    res = cli("export", "-t", "local", "-m", str(hostile), "-o", str(tmp_path / "out"), cwd=tmp_path,
              env_extra={"TMPDIR": str(tmpdir)})
    line = one_line(res)
    assert "never imports code named inside a model file" in line
    assert "--trust-factory tempfile:mkdtemp" in line
    assert list(tmpdir.iterdir()) == [], "the file made edgeprune call tempfile.mkdtemp"
    assert not (tmp_path / "out").exists()


def test_os_abort_base_does_not_kill_the_process(digits_ept, tmp_path):
    hostile = rewrite(digits_ept, tmp_path / "abort.ept", meta={"base": "os:abort"})
    res = cli("prune", "-t", "local", "-m", str(hostile), "--ratio", "0.3", "-o", str(tmp_path / "o"),
              cwd=tmp_path)
    assert res.returncode == 1, res.stderr  # SIGABRT would be -6
    assert "factory 'os:abort'" in one_line(res)


def test_base_module_with_side_effects_is_never_imported(digits_ept, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "sidefx.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef build():\n    raise SystemExit(9)\n"
    )
    hostile = rewrite(digits_ept, tmp_path / "sidefx.ept", meta={"base": "sidefx:build"})
    from edgeprune.load import load_model

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModelError, match="--trust-factory sidefx:build"):
            load_model(str(hostile))
        with pytest.raises(ModelError, match="you trusted 'other:fn', a different factory"):
            load_model(str(hostile), trust_factory="other:fn")
    finally:
        sys.path.remove(str(tmp_path))
    res = cli("export", "-t", "local", "-m", str(hostile), "-o", str(tmp_path / "out"), cwd=tmp_path)
    one_line(res)
    assert not marker.exists(), "a module named inside the file was imported"


def test_state_dict_with_a_non_tensor_is_one_line(digits_ept, tmp_path):
    from edgeprune.load import load_model

    bad = rewrite(digits_ept, tmp_path / "obj.ept", state={"features.0.weight": "not a tensor"})
    with pytest.raises(ModelError, match=r"obj.ept: damaged or hostile .ept file \(its state_dict entry") as exc:
        load_model(str(bad))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"plans": [{"format": "edgeprune.channel-plan", "version": 1, "groups": [
            {"id": "nosuch.layer", "channels": 16, "keep": 8}]}]}, "is not a channel group of this model"),
        ({"plans": "everything"}, "no plans"),
        ({"input_shape": [1, 1, 100000, 100000]}, "input_shape"),
        ({"base": ["digits-cnn"]}, "meta 'base' is not a short string"),
        ({"base": "../../etc/passwd"}, "unknown base architecture"),
    ],
)
def test_a_plan_or_meta_that_does_not_fit_is_one_line(digits_ept, tmp_path, change, words):
    from edgeprune.load import load_model

    bad = rewrite(digits_ept, tmp_path / "bad.ept", meta=change)
    with pytest.raises(ModelError, match=words) as exc:
        load_model(str(bad))
    assert "\n" not in str(exc.value)


def test_plain_pickle_is_refused_not_called_not_a_model(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    res = cli("export", "-t", "local", "-m", str(path), "-o", str(tmp_path / "out"), cwd=tmp_path)
    line = one_line(res)
    assert "refused" in line and "plain Python pickle, protocol 4" in line
    assert "Warning" not in res.stderr and "not a model" not in line


def test_a_named_factory_loads_its_ept_only_when_trusted(tmp_path):
    (tmp_path / "myzoo.py").write_text(textwrap.dedent(TINY_ZOO))
    out = tmp_path / "pruned"
    res = cli("prune", "-t", "local", "-m", "myzoo:tiny", "--ratio", "0.5", "--no-align", "-o", str(out),
              "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ept = out / "model.ept"
    export = ["export", "-t", "local", "-o"]
    refused = cli(*export, str(tmp_path / "e0"), "-m", str(ept), cwd=tmp_path)
    assert "--trust-factory myzoo:tiny" in one_line(refused)
    by_option = cli(*export, str(tmp_path / "e1"), "-m", str(ept), "--trust-factory", "myzoo:tiny", "--json",
                    cwd=tmp_path)
    assert by_option.returncode == 0, by_option.stderr
    assert json.loads(by_option.stdout)["pruning"]["base"] == "myzoo:tiny"
    by_weights = cli(*export, str(tmp_path / "e2"), "-m", "myzoo:tiny", "--weights", str(ept), "--json",
                     cwd=tmp_path)
    assert by_weights.returncode == 0, by_weights.stderr
    a, b = (json.loads(r.stdout)["artifacts"][0]["metadata"]["source_sha256"] for r in (by_option, by_weights))
    assert a == b  # the same pruned weights either way
    wrong = cli(*export, str(tmp_path / "e3"), "-m", "myzoo:other", "--weights", str(ept), cwd=tmp_path)
    assert "was pruned from 'myzoo:tiny', not 'myzoo:other'" in one_line(wrong)
