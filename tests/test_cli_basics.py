"""The CLI's shape: help that teaches, one-line errors, JSON output, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxruntime", "tensorflow", "onnx2tf", "nncf", "paramiko", "numpy", "rich")


def run(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def env(tmp_path):
    return {"EDGEPRUNE_CACHE_DIR": str(tmp_path / "cache"), "EDGEPRUNE_CONFIG": str(tmp_path / "none.toml")}


def test_help_lists_every_stage_and_teaches():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("targets", "models", "bench", "prune", "quantize", "export", "deploy"):
        assert f"  {cmd}" in out.stdout
    assert "edgeprune targets list" in out.stdout  # an example, not just a list


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from edgeprune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('LOADED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED:"


@pytest.mark.parametrize("cmd", ["targets", "models", "bench", "prune", "quantize", "export", "deploy"])
def test_every_subcommand_has_help(cmd):
    out = run(cmd, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage: edgeprune " + cmd in out.stdout


def test_targets_list_json_has_every_board(env):
    out = run("targets", "list", "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["profiles"]
    names = {r["name"] for r in rows}
    assert {"jetson-nano", "raspberry-pi-5", "coral-usb", "local"} <= names
    local = next(r for r in rows if r["name"] == "local")
    assert local["peak"]["fp32_gflops"] > 0 and local["bandwidth_gbps"] > 0


def test_targets_list_shows_the_users_own_boards(env, tmp_path):
    tfile = tmp_path / "targets.toml"
    tfile.write_text('[lab-nano]\nprofile = "jetson-nano"\nhost = "10.0.0.12"\nuser = "nvidia"\n')
    out = run("targets", "list", "--json", env_extra=dict(env, EDGEPRUNE_TARGETS=str(tfile)))
    assert out.returncode == 0, out.stderr
    mine = json.loads(out.stdout)["targets"]
    assert mine == [{"target": "lab-nano", "profile": "jetson-nano", "host": "10.0.0.12",
                     "user": "nvidia", "port": None, "file": str(tfile)}]
    human = run("targets", "list", env_extra=dict(env, EDGEPRUNE_TARGETS=str(tfile), COLUMNS="200"))
    assert "Your targets" in human.stdout and "lab-nano" in human.stdout


def test_targets_show_prints_sources(env):
    out = run("targets", "show", "jetson-nano", env_extra=dict(env, COLUMNS="200"))
    assert out.returncode == 0, out.stderr
    assert "472" in out.stdout and "NVIDIA" in out.stdout


def test_targets_show_json_is_the_resolved_profile(env):
    out = run("targets", "show", "local", "--json", env_extra=env)
    data = json.loads(out.stdout)
    assert data["peak"]["fp32_gflops"] > 0
    assert data["file"].endswith("local.toml")


def test_unknown_target_is_one_line_with_suggestion(env):
    out = run("targets", "show", "jetson-nan", env_extra=env)
    assert out.returncode == 1
    assert out.stderr.strip() == "error: unknown target 'jetson-nan': did you mean jetson-nano or jetson-orin-nano?"
    assert "Traceback" not in out.stderr


def test_usage_mistakes_are_one_line_errors():
    out = run("targets", "show")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Missing argument 'NAME'")
    out = run("no-such-command")
    assert out.returncode == 2 and out.stderr.startswith("error: No such command")


def test_deploy_help_teaches_the_stages_and_resume():
    out = run("deploy", "--help")
    assert out.returncode == 0
    for word in ("measure-final", "verify", "--max-accuracy-drop", "--force", "resume", "Examples"):
        assert word in out.stdout, word


def test_version():
    from edgeprune import __version__

    out = run("--version")
    assert out.returncode == 0 and __version__ in out.stdout


@pytest.mark.parametrize("cmd", [["prune", "--ratio", "0.3"], ["export"]])
def test_an_output_that_is_a_file_is_refused_before_any_work(cmd, tmp_path, env):
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    out = run(*cmd, "--target", "local", "--model", "digits-cnn", "--output", str(blocker / "sub"),
              env_extra=env)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {blocker}: exists and is not a folder; choose another --output"
    assert blocker.read_text() == "not a folder"


def test_progress_is_silent_off_a_terminal(tmp_path):
    import io

    from edgeprune.progress import Counter, note, show, step

    stream = io.StringIO()
    with show(stream):
        step("converting")
        Counter("models", 3).advance(1)
        note("round 1: measured 3.1 ms")
    assert stream.getvalue() == ""


def test_progress_on_a_terminal_counts_and_keeps_notes():
    import io

    from edgeprune.progress import Counter, note, show, step

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    with show(stream):
        c = Counter("latency table: models measured", 4)
        c.advance(2)
        note("round 1: predicted 3.0 ms, measured 3.1 ms, budget 3.2 ms")
        step("exporting")
    out = __import__("re").sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "round 1: predicted 3.0 ms, measured 3.1 ms, budget 3.2 ms" in out
    assert "done: latency table: models measured 2/4" in out  # the count, not one line per update
    assert out.count("done:") == 2
