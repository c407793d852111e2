"""edgeprune finetune under torchrun (gloo, CPU): two processes reach what one does, one set of checkpoints,
resume after a rank is killed or the launcher is interrupted (at another process count), refusals in one line.

Tolerance: the held-out top-1 of 2 processes is within 2 points (7 of 359 digits) of one process's with the same
effective batch. Not bit for bit: each rank's BatchNorm normalises its own 32 rows, one process all 64 (the
batches, their order and augmentation, the loss and the learning rate are the same).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgeprune.data.dataset import shard_bounds  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                 reason="torch without gloo")]

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.02
STEPS = 40
STEPS_LONG = 200  # long enough to be stopped half-way on a fast machine


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    from edgeprune.api import prune_model

    out = tmp_path_factory.mktemp("pruned")
    prune_model("digits-cnn", target="local", ratio=0.3, output=out)
    return out / "model.ept"


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("LOCAL_RANK", None)
    return env


def _torchrun(n: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
            "-m", "edgeprune", "finetune", *args]


def _args(pruned, out, steps=STEPS) -> list[str]:
    return ["-m", str(pruned), "-d", "digits", "-o", str(out), "--steps", str(steps), "--threads", "1"]


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_a_global_batch_is_shared_out_whole_with_the_same_augmentation():
    from edgeprune.data import load_data

    ds = load_data("digits", input_shape=(1, 1, 8, 8)).train
    whole = list(ds.batches(64, shuffle=True, seed=3, augment="shift", limit=150))
    for world in (2, 3):
        parts = [list(ds.batches(64, shuffle=True, seed=3, augment="shift", limit=150, part=(r, world)))
                 for r in range(world)]
        for b, (xw, yw) in enumerate(whole):
            xs = torch.cat([parts[r][b][0] for r in range(world)])
            ys = torch.cat([parts[r][b][1] for r in range(world)])
            assert torch.equal(xs, xw) and torch.equal(ys, yw)  # every row once, augmented as in one process
    assert [shard_bounds(22, r, 2) for r in range(2)] == [(0, 11), (11, 22)]
    assert shard_bounds(1, 0, 2) == (0, 0)  # an empty share: the loop weights its (one borrowed) row by 0


def test_two_processes_reach_one_process_top1_with_one_set_of_checkpoints(pruned, tmp_path):
    from edgeprune.api import finetune_model

    one = finetune_model(pruned, data="digits", output=tmp_path / "one", steps=STEPS, threads=1)
    got = subprocess.run(_torchrun(2, *_args(pruned, tmp_path / "two"), "--json"), env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    two = json.loads(got.stdout)  # one JSON document: rank 1 prints nothing
    a, b = one["accuracy"]["finetuned"], two["accuracy"]["finetuned"]
    assert abs(a - b) <= TOLERANCE, (a, b)
    assert b >= two["accuracy"]["pruned"]
    assert two["steps"] == one["steps"] == STEPS and two["images_seen"] == one["images_seen"]
    dist = two["distributed"]
    assert dist["world_size"] == 2 and dist["backend"] == "gloo" and dist["effective_batch"] == 64
    assert len(dist["images_per_s_per_rank"]) == 2 and all(v > 0 for v in dist["images_per_s_per_rank"])
    assert one["distributed"]["world_size"] == 1 and one["distributed"]["backend"] is None
    # rank 0 alone wrote: one set of checkpoints, one result
    out = tmp_path / "two"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.pt", "last.pt", "prelude.json"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "finetune.json", "model.ept", "report.md"]
    assert "2 processes (gloo), effective batch 64" in (out / "report.md").read_text()
    state = json.loads(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["state"])
    assert state["world_size"] == 2 and state["step"] == STEPS and state["done"]
    from edgeprune.load import load_model
    from edgeprune.models.digits import digits_accuracy

    assert abs(digits_accuracy(load_model(str(out / "model.ept")).module) - b) < 1e-4


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.2)


def _pid_of_rank(mark: str, rank: int) -> int:
    """The worker process of this test's run (``mark`` in its environment) with RANK=rank."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"EP_TEST_RUN={mark}".encode() in env and f"RANK={rank}".encode() in env:
            return int(d.name)
    raise AssertionError(f"no rank {rank} process of run {mark}")


def test_a_killed_rank_resumes_from_rank_0s_checkpoint_at_another_process_count(pruned, tmp_path):
    out, mark = tmp_path / "out", uuid.uuid4().hex
    proc = subprocess.Popen(_torchrun(2, *_args(pruned, out, steps=STEPS_LONG)), env=_env(EP_TEST_RUN=mark), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoints" / "last.pt", proc)  # the first evaluation (step 20) has been saved
    os.kill(_pid_of_rank(mark, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not (out / "model.ept").exists()
    stopped = json.loads(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["state"])
    assert stopped["world_size"] == 2 and 20 <= stopped["step"] < STEPS_LONG and not stopped["done"]
    # the same command, in one process now
    got = subprocess.run([sys.executable, "-m", "edgeprune", "finetune", *_args(pruned, out, steps=STEPS_LONG), "--json"],
                         env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    assert f"resuming from the checkpoint at step {stopped['step']}" in got.stderr
    r = json.loads(got.stdout)
    assert r["resumed_from_step"] == stopped["step"] and r["distributed"]["resumed_from_world_size"] == 2
    assert r["steps"] == STEPS_LONG and r["distributed"]["world_size"] == 1
    assert [h["step"] for h in r["history"]][:len(stopped["history"])] == [h["step"] for h in stopped["history"]]
    assert r["accuracy"]["finetuned"] >= r["accuracy"]["pruned"]


def test_an_interrupted_launcher_resumes_with_the_same_command(pruned, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "edgeprune", "finetune", "--nproc-per-node", "2", *_args(pruned, out, steps=STEPS_LONG)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(out / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    said = _errors(err)
    assert len(said) == 1 and "interrupted at step" in said[0] and "run the same command again" in said[0], err
    stopped = json.loads(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["state"])
    assert 20 <= stopped["step"] < STEPS_LONG and not stopped["done"]
    got = subprocess.run(cmd + ["--json"], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0 and got.stdout, got.stderr[-3000:]
    r = json.loads(got.stdout)
    assert r["resumed_from_step"] == stopped["step"] and r["steps"] == STEPS_LONG and r["distributed"]["world_size"] == 2
    assert f"resuming from the checkpoint at step {stopped['step']}" in got.stderr


def test_options_a_distributed_run_cannot_honour_are_refused_in_one_line(pruned, tmp_path):
    # --nproc-per-node: checked before anything starts
    got = subprocess.run([sys.executable, "-m", "edgeprune", "finetune", "--nproc-per-node", "2", "--time-budget", "1",
                          "-m", str(pruned), "-d", "digits", "-o", str(tmp_path / "a")], env=_env(), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 1
    assert got.stderr.strip().splitlines() == [
        "error: --time-budget with 2 processes: each would stop at a different step; give --steps or --epochs"]
    assert not (tmp_path / "a").exists()
    # under torchrun itself: rank 0 says it, once (torchrun adds its own report of the failed ranks)
    got = subprocess.run(_torchrun(2, *_args(pruned, tmp_path / "b", steps=4), "--sync-bn"), env=_env(),
                         cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert got.returncode != 0
    assert _errors(got.stderr) == ["error: --sync-bn needs GPUs (SyncBatchNorm does not run on the CPU with gloo): "
                                   "drop --sync-bn or use --device cuda"]
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_amp_bf16_on_the_cpu_is_recorded_and_fp16_is_refused(pruned, tmp_path):
    from edgeprune.api import finetune_model
    from edgeprune.errors import DistributedError

    r = finetune_model(pruned, data="digits", output=tmp_path / "bf16", steps=10, threads=1, amp="bf16")
    assert r["amp"] == "bf16" and r["recipe"]["amp"] == "bf16"
    assert r["accuracy"]["finetuned"] >= r["accuracy"]["pruned"] - 0.02
    assert r["distributed"]["images_per_s_per_rank"][0] > 0
    with pytest.raises(DistributedError, match=r"^--amp fp16 needs a GPU \(--device cuda\); on the CPU use --amp bf16$"):
        finetune_model(pruned, data="digits", output=tmp_path / "fp16", steps=2, threads=1, amp="fp16")
