"""A fleet: wall time of `edgeprune ship` to 8 farm boards at --parallel 1, 3 and 8.

    .venv/bin/python benchmarks/bench_fleet.py                  # as root (the farm); ~2 min
    .venv/bin/python benchmarks/bench_fleet.py --rounds 1 --no-write

Eight real sshd boards in network namespaces (tests/farm), each with half a
core of CPU quota and a 100 Mbit/s link; all eight share this machine's cores,
so the figures at --parallel 8 are what a fleet costs when the boards are this
computer (real boards bring their own CPUs). Each run is the whole command
(`python -m edgeprune ship --targets-from boards.txt --parallel K m.onnx`, start-up
included) with a fresh artifact, so every board gets a new release: upload,
sha256, on-board check with ONNX Runtime, switch. Also reported: the most SSH
sessions open at once, counted from the boards' own sshd log.

Writes its section of benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import machine_line, write_section  # noqa: E402

from tests.farm.farm import BoardSpec, Farm, can_use_namespaces  # noqa: E402
from tests.farm.models import tiny_convnet  # noqa: E402

BOARDS = 8
PARALLEL = (1, 3, 8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--channels", type=int, default=128, help="model width (128: a ~0.6 MB artifact)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args()
    if not can_use_namespaces():
        sys.exit("bench_fleet needs root (eight farm boards in network namespaces)")
    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-bench-fleet-"))
    specs = [BoardSpec(f"n{i}", cpu_quota=0.5, rate_mbit=100) for i in range(BOARDS)]
    walls: dict[int, list[float]] = {k: [] for k in PARALLEL}
    most: dict[int, int] = {}
    with Farm(specs, session_log=True) as farm:
        targets = tmp / "targets.toml"
        extra = {f"farm-n{i}": {"deploy_dir": f"/tmp/fleet-bench-{os.getpid()}"} for i in range(BOARDS)}
        targets.write_text(farm.targets_toml(extra=extra))
        (tmp / "boards.txt").write_text("".join(f"farm-n{i}\n" for i in range(BOARDS)))
        env = {**os.environ, "EDGEPRUNE_TARGETS": str(targets), "EDGEPRUNE_CACHE_DIR": str(tmp / "cache"),
               "PYTHONPATH": str(ROOT)}
        size = 0
        load0 = open("/proc/loadavg").read().split()[0]
        for r in range(args.rounds):
            for k in PARALLEL:
                model = tiny_convnet(tmp / f"m{r}-{k}.onnx", channels=args.channels, seed=100 * r + k)
                size = model.stat().st_size
                farm.session_log.write_text("")
                t0 = time.monotonic()
                res = subprocess.run(
                    [sys.executable, "-m", "edgeprune", "ship", "--targets-from", str(tmp / "boards.txt"),
                     "--parallel", str(k), str(model)], capture_output=True, text=True, env=env, cwd=tmp)
                walls[k].append(time.monotonic() - t0)
                if res.returncode != 0:
                    sys.exit(res.stdout + res.stderr)
                most[k] = max(most.get(k, 0), farm.sessions_at_once()[0])
                print(f"round {r + 1}: --parallel {k}: {walls[k][-1]:.2f} s, "
                      f"{farm.sessions_at_once()[0]} sessions at once on the boards")
    load1 = open("/proc/loadavg").read().split()[0]
    med = {k: statistics.median(v) for k, v in walls.items()}
    rows = [f"| `--parallel {k}` | {med[k]:.2f} | {med[1] / med[k]:.2f}x | {most[k]} |" for k in PARALLEL]
    body = "\n".join([
        "## A fleet: `edgeprune ship` to 8 farm boards at `--parallel` 1, 3, 8",
        "",
        f"`.venv/bin/python benchmarks/bench_fleet.py --rounds {args.rounds} --channels {args.channels}` "
        f"({machine_line()}). Each figure: `python -m edgeprune ship --targets-from boards.txt --parallel K "
        f"m.onnx` (the whole command, start-up included) to 8 boards (sshd in network namespaces, 0.5 core "
        f"and 100 Mbit/s each), a fresh {size / 2**20:.2f} MiB ONNX artifact every run, so every board gets a "
        "new release checked on the board; median over rounds. Sessions at once: the most SSH sessions "
        "open together, counted from the boards' own sshd log. All eight boards share this machine's "
        "cores (host reference, paramiko, every board's Python and ONNX Runtime), so where the CPU is "
        f"the bottleneck (load average {load0} -> {load1} during this run, from other work too) running "
        "boards together gains little or nothing: real boards bring their own CPUs.",
        "",
        "| | wall time (s) | speed-up | sessions at once |",
        "|---|---|---|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        write_section("fleet", body)


if __name__ == "__main__":
    main()
