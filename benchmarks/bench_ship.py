"""Shipping: wall time of one `ship_artifact` to one farm board, against `ship_many` to three at once.

    .venv/bin/python benchmarks/bench_ship.py                 # as root (the farm); ~2 min
    .venv/bin/python benchmarks/bench_ship.py --rounds 1 --no-write   # a quick check

The boards are real sshd servers in network namespaces (tests/farm), each with
half a core of CPU quota and a 100 Mbit/s link, so three boards at once share
this machine's two cores as three real boards would not: the 3-board figure is
an upper bound of what a fleet costs. Each round ships a fresh artifact (a new
release every time: upload, sha256, on-board check with ONNX Runtime, switch,
gc), so nothing is skipped as unchanged. Reported: the median over rounds of
the wall time, and the per-step times of the one-board ship (median).

Writes its section of benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import statistics
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


def loadavg() -> str:
    return open("/proc/loadavg").read().split()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--channels", type=int, default=256, help="model width (256: a ~2.4 MB artifact)")
    ap.add_argument("--samples", type=int, default=16, help="held-out inputs run on the board")
    ap.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = ap.parse_args()
    if not can_use_namespaces():
        sys.exit("bench_ship needs root (three farm boards in network namespaces)")

    import numpy as np

    from edgeprune.ship import ship_artifact, ship_many, summary_lines

    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-bench-ship-"))
    x = np.random.default_rng(0).standard_normal((args.samples, 3, 32, 32)).astype(np.float32)
    specs = [BoardSpec(f"s{i}", cpu_quota=0.5, rate_mbit=100) for i in range(3)]
    one, three, steps = [], [], {}
    with Farm(specs) as farm:
        targets = tmp / "targets.toml"
        extra = {f"farm-s{i}": {"deploy_dir": f"/tmp/ship-bench-{os.getpid()}"} for i in range(3)}
        targets.write_text(farm.targets_toml(extra=extra))
        os.environ["EDGEPRUNE_TARGETS"] = str(targets)
        os.environ["EDGEPRUNE_CACHE_DIR"] = str(tmp / "cache")
        names = [f"farm-s{i}" for i in range(3)]
        size = 0
        for r in range(args.rounds):
            model = tiny_convnet(tmp / f"m{r}.onnx", channels=args.channels, seed=r)
            size = model.stat().st_size
            last = [time.monotonic()]
            times: dict[str, float] = {}

            def hook(target, step, last=last, times=times):
                now = time.monotonic()
                times[step] = now - last[0]
                last[0] = now

            load0 = loadavg()
            t0 = time.monotonic()
            ship_artifact(model, target=names[0], verify_inputs=x, on_step=hook)
            one.append(time.monotonic() - t0)
            for k, v in times.items():
                steps.setdefault(k, []).append(v)
            model3 = tiny_convnet(tmp / f"m{r}b.onnx", channels=args.channels, seed=100 + r)
            t0 = time.monotonic()
            outcomes = ship_many(model3, targets=names, verify_inputs=x)
            three.append(time.monotonic() - t0)
            failed = [line for line in summary_lines(names, outcomes) if line.startswith("FAILED")]
            if failed:
                sys.exit("\n".join(failed))
            print(f"round {r + 1}: 1 board {one[-1]:.2f} s, 3 boards {three[-1]:.2f} s "
                  f"(load {load0} -> {loadavg()})")
    # The hook records the time since the previous step began: shift to name each step's own time.
    order = ["connect", "lock", "stage", "upload", "sha256", "verify", "manifest", "switch", "gc", "done"]
    own = {"host reference": statistics.median(steps["connect"])}
    own.update({order[i]: statistics.median(steps[order[i + 1]]) for i in range(len(order) - 1)})
    m1, m3 = statistics.median(one), statistics.median(three)
    body = "\n".join([
        "## Shipping to farm boards: one at a time against three at once",
        "",
        f"`.venv/bin/python benchmarks/bench_ship.py --rounds {args.rounds} --channels {args.channels} "
        f"--samples {args.samples}` ({machine_line()}). Boards: sshd in network namespaces, 0.5 core "
        f"and 100 Mbit/s each; artifact {size / 2**20:.2f} MiB ONNX; {args.samples} held-out inputs "
        "run on the board; a new release every round. Medians over rounds.",
        "",
        "| | wall time (s) |",
        "|---|---|",
        f"| `ship_artifact` to 1 board | {m1:.2f} |",
        f"| `ship_many` to 3 boards at once | {m3:.2f} ({m3 / m1:.2f}x the one-board time) |",
        "",
        "One-board ship, time per step (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in own.items()),
    ])
    print(body)
    if not args.no_write:
        write_section("ship", body)


if __name__ == "__main__":
    main()
