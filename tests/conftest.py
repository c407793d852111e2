"""Shared test fixtures: the farm of real SSH boards, tiny models, mark-based skips.

The farm (tests/farm/farm.py) starts once per session when a test marked
``farm`` asks for it, and is always torn down. As root it is six boards in
network namespaces; without root, one unprivileged sshd on loopback and the
tests that need namespaces skip. Install its packages with
``scripts/install-farm-deps.sh``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# The repository root, so that `tests.farm` imports however pytest is started.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Tests never read or write the user's own cache (measurements, trained weights, probe
# figures): one private cache for the session, unless the caller chose one.
if "EDGEPRUNE_CACHE_DIR" not in os.environ:
    import tempfile

    # ...but the fetched data sets (scripts/fetch-data.sh) stay where the user's commands find them.
    _xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    os.environ.setdefault("EDGEPRUNE_DATA_DIR", str(Path(_xdg) / "edgeprune" / "data"))

    os.environ["EDGEPRUNE_CACHE_DIR"] = tempfile.mkdtemp(prefix="edgeprune-test-cache-")
os.environ.setdefault("EDGEPRUNE_CONFIG", str(Path(os.environ["EDGEPRUNE_CACHE_DIR"]) / "no-config.toml"))

from tests.farm.farm import BoardSpec, Farm  # noqa: E402

FARM_BOARDS = [
    BoardSpec("b1", cpu_quota=1.0),
    BoardSpec("b2", cpu_quota=0.5),
    BoardSpec("b3", cpu_quota=0.25),
    BoardSpec("lossy", rate_mbit=20, loss_pct=5),
    BoardSpec("full", tmp_mb=8),
    BoardSpec("cut", rate_mbit=20),
]


@pytest.fixture(autouse=True)
def ctrl_c_as_it_was():
    """Every test starts and ends with Python's own Ctrl-C handler.

    A command that has reported ignores a late Ctrl-C (``edgeprune.cli``), and a
    test calling the CLI's inner ``_run`` in this process would leave SIGINT
    ignored for the tests after it, and for every subprocess they start (a child
    inherits an ignored signal), so their Ctrl-C tests would see exit 0.
    """
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine: one torch thread avoids OpenMP barrier stalls.

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    from edgeprune._threads import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="session")
def farm():
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which(
        "ssh-keygen"
    ):
        pytest.skip("the SSH test farm needs openssh-server: run scripts/install-farm-deps.sh")
    # EDGEPRUNE_FARM_LOOPBACK=1 forces the non-root fallback (one loopback sshd), to test it as root.
    loopback = os.environ.get("EDGEPRUNE_FARM_LOOPBACK") == "1"
    with Farm(FARM_BOARDS, privileged=False if loopback else None) as f:
        yield f


@pytest.fixture
def root_farm(farm):
    """The farm, only where boards are real namespaces (root)."""
    if not farm.privileged:
        pytest.skip(
            "needs root: boards in network namespaces (non-root runs use one loopback sshd)"
        )
    return farm


@pytest.fixture
def farm_env(farm, tmp_path, monkeypatch):
    """A targets file naming every farm board ``farm-NAME``, and a private result cache."""
    targets = tmp_path / "targets.toml"
    targets.write_text(
        farm.targets_toml(
            extra={
                "farm-noruntime": {"board": "b1", "python": farm.bare_python},
                "farm-wronguser": {"board": "b1", "user": "nosuchuser"},
            }
        )
    )
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return targets


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny real ONNX models: ``tiny`` (~0.1 ms) and ``medium`` (~6 ms on one core here)."""
    from tests.farm.models import tiny_convnet

    d = tmp_path_factory.mktemp("models")
    return {
        "tiny": tiny_convnet(d / "tiny.onnx"),
        "medium": tiny_convnet(d / "medium.onnx", channels=64, size=96, seed=1),
    }
