"""Issue 8, items 3 and 5: one line where one line is promised, and JSON that machines can read.

Item 3: user-caused failures that printed 30 to 70 lines of traceback are one
line ``error: ...`` naming the thing and the fix; a bug in edgeprune is one
line naming the exception and ``--debug``, which (or ``EDGEPRUNE_DEBUG=1``)
shows the traceback.

Item 5: with ``--json``, an error is ``{"ok": false, "error": {"kind",
"message"}}`` on stdout with a non-zero exit, success carries ``"ok": true``,
and nothing printed by other libraries (Python ``print`` or C code writing to
fd 1) reaches stdout before the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOT_USER = os.geteuid() == 0


def cli(*args, cwd=None, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("EDGEPRUNE_DEBUG", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), str(cwd or "")] if p)
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode not in (0, None) and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture
def ro_dir(tmp_path):
    """A folder that cannot be written: a read-only tmpfs as root (root ignores modes), else mode 0555."""
    d = tmp_path / "ro"
    d.mkdir()
    (d / "old").mkdir()
    (d / "old" / "summary.json").write_text("{}")
    if ROOT_USER:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
        (d / "old").mkdir()
        (d / "old" / "summary.json").write_text("{}")
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)
        yield d
        subprocess.run(["umount", str(d)], check=False)
    else:
        (d / "old").chmod(0o555)
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        (d / "old").chmod(0o755)


# -- item 3 ---------------------------------------------------------------------------


def test_input_shape_the_model_cannot_take(tmp_path):
    line = one_line(cli("prune", "-t", "local", "-m", "digits-cnn", "--input-shape", "1,3,16,16", "--ratio", "0.3",
                        "-o", str(tmp_path / "o")))
    assert "does not run on input 1,3,16,16" in line and "--input-shape 1,1,16,16" in line
    assert not (tmp_path / "o").exists()


def test_prune_into_an_existing_read_only_folder(ro_dir):
    line = one_line(cli("prune", "-t", "local", "-m", "digits-cnn", "--ratio", "0.3", "-o", str(ro_dir / "old")))
    assert str(ro_dir / "old") in line and "choose another --output" in line
    assert (ro_dir / "old" / "summary.json").read_text() == "{}"


def test_export_to_a_path_that_cannot_be_written(ro_dir):
    line = one_line(cli("export", "-t", "local", "-m", "digits-cnn", "-o", str(ro_dir / "new")))
    assert str(ro_dir / "new") in line and "choose another --output" in line


@pytest.mark.skipif(not ROOT_USER, reason="needs root to mount a tiny tmpfs (a full disk)")
def test_full_disk_during_prune(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        line = one_line(cli("prune", "-t", "local", "-m", "digits-cnn", "--ratio", "0.3", "-o", str(disk / "out")))
        assert "No space left on device" in line and "free some space or choose another --output" in line
        assert os.listdir(disk) == []  # the staging folder was removed
    finally:
        subprocess.run(["umount", str(disk)], check=False)


@pytest.mark.parametrize(
    "source, words",
    [
        ("def net():\n    raise ValueError('no such checkpoint')\n",
         "net() raised ValueError: no such checkpoint; fix the factory"),
        ("def net(:\n    pass\n", "has a syntax error at"),
        ("import not_installed_anywhere\ndef net():\n    pass\n", "needs the module 'not_installed_anywhere'"),
    ],
)
def test_a_factory_that_fails(tmp_path, source, words):
    (tmp_path / "badzoo.py").write_text(source)
    res = cli("prune", "-t", "local", "-m", "badzoo:net", "--ratio", "0.3", "-o", str(tmp_path / "o"), cwd=tmp_path)
    line = one_line(res)
    assert line.startswith("error: --model badzoo:net: ") and words in line
    debug = cli("--debug", "prune", "-t", "local", "-m", "badzoo:net", "--ratio", "0.3", "-o", str(tmp_path / "o"),
                cwd=tmp_path)
    assert "Traceback" in debug.stderr and debug.stderr.strip().splitlines()[-1] == line


BUG = (
    "import sys, edgeprune.cli.models_cmd as m, edgeprune.models as models\n"
    "def boom():\n    raise KeyError('registry')\n"
    "m.list_models = boom  # the command calls the list_models it imported\n"
    "from edgeprune.cli import main\nmain(sys.argv[1:])\n"
)


def test_a_bug_is_one_line_naming_the_exception_and_debug():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGEPRUNE_DEBUG", None)
    res = subprocess.run([sys.executable, "-c", BUG, "models"], capture_output=True, text=True, env=env, timeout=120)
    line = one_line(res)
    assert "KeyError" in line and "'registry'" in line and "--debug" in line and "report" in line
    for how in (["--debug", "models"], ["models"]):
        extra = {"EDGEPRUNE_DEBUG": "1"} if how == ["models"] else {}
        res = subprocess.run([sys.executable, "-c", BUG, *how], capture_output=True, text=True,
                             env=dict(env, **extra), timeout=120)
        assert res.returncode == 1 and "Traceback (most recent call last)" in res.stderr
        assert "in boom" in res.stderr


# -- item 5 ---------------------------------------------------------------------------


def test_json_error_is_on_stdout(tmp_path):
    res = cli("prune", "-t", "local", "-m", "mobilenet2", "--ratio", "0.3", "-o", str(tmp_path / "o"), "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["error"]["kind"] == "model"
    assert "did you mean mobilenetv2" in doc["error"]["message"]
    assert res.stderr.startswith("error: ")  # people reading stderr still get the line


def test_json_usage_error_and_success(tmp_path):
    res = cli("prune", "-t", "local", "-m", "digits-cnn", "--ratio", "2", "-o", str(tmp_path / "o"), "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 2 and doc["ok"] is False and doc["error"]["kind"] == "usage"
    assert "--ratio" in doc["error"]["message"]
    res = cli("targets", "list", "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["ok"] is True and "profiles" in doc
    res = cli("models", "--json")
    doc = json.loads(res.stdout)
    assert doc["ok"] is True and {m["name"] for m in doc["models"]} >= {"digits-cnn", "mobilenetv2"}


NOISY = """
import os, sys
print("noise from import")
def net():
    import torch.nn as nn
    print("noise from print")
    sys.stdout.write("noise from sys.stdout\\n")
    sys.stdout.flush()
    os.write(1, b"noise from fd 1 (as C code writes)\\n")
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    m.input_shape = (1, 3, 16, 16)
    return m
"""


def test_third_party_prints_never_reach_stdout_in_json_mode(tmp_path):
    (tmp_path / "noisyzoo.py").write_text(textwrap.dedent(NOISY))
    res = cli("prune", "-t", "local", "-m", "noisyzoo:net", "--ratio", "0.5", "-o", str(tmp_path / "o"), "--json",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # stdout is the JSON document and nothing else
    assert doc["ok"] is True and doc["base"] == "noisyzoo:net"
    for noise in ("noise from import", "noise from print", "noise from sys.stdout", "noise from fd 1"):
        assert noise in res.stderr and noise not in res.stdout
    # and on an error after the noise
    res = cli("prune", "-t", "local", "-m", "noisyzoo:net", "--ratio", "0.5", "--protect", "nosuch",
              "-o", str(tmp_path / "o2"), "--json", cwd=tmp_path)
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["ok"] is False and doc["error"]["kind"] == "prune"


# -- issue 23: Ctrl-C as a command finishes -------------------------------------------------------------------

LATE_CTRL_C = textwrap.dedent("""
    import os, signal, sys
    from edgeprune.cli import _common, main
    real = _common._write_json
    def then_ctrl_c(doc):
        real(doc)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C right after the result is out
        for _ in range(10 ** 6):  # the bytecodes in which a KeyboardInterrupt would be raised
            pass
    _common._write_json = then_ctrl_c
    sys.argv = ["edgeprune", *sys.argv[1:]]
    main()
""")


def _export_json_under(script: str, tmp_path):
    """``export -t local -m digits-cnn --json`` run by ``script`` (which patches in its Ctrl-C) in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("EDGEPRUNE_DEBUG", None)
    return subprocess.run([sys.executable, "-c", script, "export", "-t", "local", "-m", "digits-cnn",
                           "-o", str(tmp_path / "out"), "--json"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=300)


def test_ctrl_c_just_after_export_printed_its_result_exits_0_with_that_result(tmp_path):
    res = _export_json_under(LATE_CTRL_C, tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)  # one document, whole
    assert doc["ok"] is True and "interrupted" not in res.stderr


EARLY_CTRL_C = textwrap.dedent("""
    import os, signal, sys
    from edgeprune.cli import main
    from edgeprune.export import pipeline
    real = pipeline.export
    def ctrl_c_then_export(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the export works
        return real(*args, **kwargs)
    pipeline.export = ctrl_c_then_export
    sys.argv = ["edgeprune", *sys.argv[1:]]
    main()
""")


def test_ctrl_c_while_export_works_is_exit_130_and_one_line(tmp_path):
    res = _export_json_under(EARLY_CTRL_C, tmp_path)
    assert res.returncode == 130, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["error"]["kind"] == "interrupted"
