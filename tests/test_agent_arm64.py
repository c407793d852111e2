"""The agent on an emulated aarch64 board (qemu-user, Debian bookworm arm64, LiteRT), over SSH.

Slow (the root filesystem takes ~5+ minutes to build the first time, then is
reused): runs only with EDGEPRUNE_ARM64=1, as root.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.farm, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def arm_farm():
    if os.environ.get("EDGEPRUNE_ARM64") != "1":
        pytest.skip(
            "emulated aarch64 board: set EDGEPRUNE_ARM64=1 (first run builds a rootfs, ~5+ min)"
        )
    from tests.farm.arm64 import build_rootfs, missing_tools
    from tests.farm.farm import BoardSpec, Farm, can_use_namespaces

    if not can_use_namespaces():
        pytest.skip("needs root: boards in network namespaces")
    if missing_tools():
        pytest.skip(
            f"needs {', '.join(missing_tools())} (apt-get install qemu-user-static binfmt-support debootstrap)"
        )
    rootfs = build_rootfs()
    with Farm([BoardSpec("arm64", rootfs=str(rootfs))]) as farm:
        yield farm


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    return tiny_tflite(tmp_path_factory.mktemp("arm") / "tiny.tflite")


def test_agent_measures_on_an_aarch64_userland(arm_farm, tflite_model, tmp_path, monkeypatch):
    from edgeprune.bench.runner import BenchSettings, bench_target
    from edgeprune.boards.reach import resolve_target

    targets = tmp_path / "targets.toml"
    targets.write_text(
        arm_farm.targets_toml(extra={"emu-pi": {"board": "arm64", "python": "/usr/bin/python3"}})
    )
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    settings = BenchSettings(runs=10, warmup=2, max_warmup_s=20, timeout_s=400)
    r = bench_target(resolve_target("emu-pi"), tflite_model, settings=settings)
    assert r.board["machine"] == "aarch64" and r.board["hostname"] == "farm-arm64"
    assert r.runtime == "litert" and r.runtime_version.startswith("ai_edge_litert")
    assert r.agent["python"].startswith("3.11")
    assert r.latency_ms["p50"] > 0
