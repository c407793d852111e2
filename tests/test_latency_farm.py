"""Latency budgets on the farm's real SSH boards: different CPU quotas are different boards.

b1 has a whole core, b3 a quarter of one (cgroup CFS quota), as each board
reports: the same model is about 4x slower on b3, and the budget (b3's own
unpruned p50 / 1.25) leaves b1 a 3x margin, so b3 must get a smaller plan
however busy the machine is.
Each board gets its own latency table (keyed by the agent's board id and
the SSH host key), measured over one SSH session per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.farm, pytest.mark.timeout(1200)]
ROOT = Path(__file__).resolve().parent.parent
MODEL = "tests.latency_fakes:small_cnn"


def prune(target: str, out: Path, *budget: str) -> tuple[int, dict, str]:
    res = subprocess.run(
        [sys.executable, "-m", "edgeprune", "prune", "-t", target, "-m", MODEL, "--input-shape", "1,3,64,64",
         *budget, "--format", "onnx", "--precision", "fp32", "--threads", "1", "--max-rounds", "2",
         "-o", str(out), "--json"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, env={**os.environ},
    )
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").is_file() else {}
    return res.returncode, summary, res.stderr


def test_same_budget_gives_boards_with_different_quotas_different_plans(farm_env, root_farm, tmp_path):
    if root_farm.cgroup_root is None:
        pytest.skip("no writable cgroup cpu controller here: boards have no CPU quota")
    # The quarter-core board first: its own unpruned p50 / 1.25 is the budget, so it must prune ...
    code3, s3, err3 = prune("farm-b3", tmp_path / "b3", "--speedup", "1.25")
    assert s3, err3
    lat3 = s3["latency"]
    assert code3 == (0 if lat3["met"] else 4), err3
    budget = lat3["budget_ms"]
    # ... and the same number of ms on the whole-core board.
    code1, s1, err1 = prune("farm-b1", tmp_path / "b1", "--latency-budget", f"{budget:.4f}")
    assert s1, err1
    lat1 = s1["latency"]
    assert code1 == (0 if lat1["met"] else 4), err1
    assert lat1["board_id"] != lat3["board_id"] and lat1["host_key"] != lat3["host_key"]
    assert lat1["host_key"].startswith(("ssh-ed25519", "ecdsa", "ssh-rsa"))
    assert lat1["table"]["cache"] != lat3["table"]["cache"]  # one table per board
    # What each board said it is (not how fast it happened to be): a quarter of a core and a whole one.
    assert lat3["cpu_quota"] == pytest.approx(0.25) and lat1["cpu_quota"] == pytest.approx(1.0)
    groups1 = json.loads(Path(s1["plan"]).read_text())["groups"]
    plan1 = {g["id"]: g["keep"] for g in groups1}
    plan3 = {g["id"]: g["keep"] for g in json.loads(Path(s3["plan"]).read_text())["groups"]}
    whole = sum(g["channels"] for g in groups1)
    assert sum(plan3.values()) < whole  # a budget under its own unpruned p50: b3 pruned
    # b1 has 4x b3's quota and 0.8x b3's unpruned time to spend: it keeps more channels unless it ran over
    # 3x slower than its quota, i.e. far beyond the load any CI machine puts on a test board.
    assert plan1 != plan3 and sum(plan1.values()) > sum(plan3.values()), (lat1["unpruned_ms"], budget)
    # one SSH session per run; the table took a handful of batches, not one visit per model
    assert lat3["board_visits"] < lat3["table"]["measured_now"] / 4
