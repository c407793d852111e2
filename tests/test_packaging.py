"""A plain `pip install .` into a fresh venv gives a working `edgeprune`, agent included."""

from __future__ import annotations

import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_fresh_venv_pip_install_then_targets_list(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # Build from a copy so that the build leaves nothing in the checkout.
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache")
    )
    out = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=800)
    assert out.returncode == 0, out.stderr[-3000:]
    exe = env_dir / "bin" / "edgeprune"
    listed = subprocess.run(
        [str(exe), "targets", "list", "--json"], capture_output=True, text=True, timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "EDGEPRUNE_CACHE_DIR": str(tmp_path / "c")},
    )
    assert listed.returncode == 0, listed.stderr
    assert "jetson-nano" in listed.stdout and "local" in listed.stdout
    # The agent and the profiles ship inside the wheel, not only in a checkout.
    where = subprocess.run(
        [str(py), "-c", "from edgeprune._paths import data_dir; print(data_dir('targets')); print(data_dir('device_profiles'))"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout.split()
    assert all("site-packages" in w for w in where), where
    assert (Path(where[1]) / "jetson-nano.toml").is_file()
    assert any(Path(where[0]).iterdir())
