"""The closed loop on a busy board: ``prune --target local --speedup S`` with a load generator on one core,
then the result measured independently (this script's own interleaved loop, not the agent).

What it runs::

    python benchmarks/bench_loop_noisy.py [--model mobilenetv2] [--speedup 1.667] [--input 224]

1. a load generator: one process spinning on core 0 (``os.sched_setaffinity``), for the whole run;
2. ``edgeprune prune --target local --model M --speedup S --threads 1 --json -o DIR`` (a subprocess);
3. the file the board timed for the chosen round (``DIR/measured.onnx``) and the unpruned model (exported
   here the way the loop exports it) are timed by ONNX Runtime in this process, 1 thread, interleaved:
   ``ROUNDS`` rounds of ``RUNS`` runs each, the order alternating, the load generator still running.
   measured / budget = S x the median over rounds of (pruned / unpruned);
4. one line in ``benchmarks/RESULTS.md`` (section ``loop-noisy``) with the command and only these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_line, write_section  # noqa: E402

ROUNDS, RUNS = 30, 10


def spin() -> subprocess.Popen:
    code = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def interleaved_ratio(a: Path, b: Path, shape) -> tuple[float, float, float]:
    """(median of per-round a/b, p50 a, p50 b) timed by ONNX Runtime here, 1 thread, rounds alternating."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for k, p in (("a", a), ("b", b))}
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {k: {s.get_inputs()[0].name: x} for k, s in sess.items()}

    def timed(k: str) -> float:
        out = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            sess[k].run(None, feed[k])
            out.append(time.perf_counter() - t0)
        return statistics.median(out) * 1000.0

    for k in sess:
        timed(k)  # warm-up
    ra, rb = [], []
    for r in range(ROUNDS):
        for k in (("a", "b") if r % 2 == 0 else ("b", "a")):
            (ra if k == "a" else rb).append(timed(k))
    return statistics.median(x / y for x, y in zip(ra, rb, strict=True)), statistics.median(ra), statistics.median(rb)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--speedup", type=float, default=1.667)
    ap.add_argument("--input", type=int, default=224)
    args = ap.parse_args()
    shape = (1, 3, args.input, args.input)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    load = spin()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the load generator
    try:
        with tempfile.TemporaryDirectory(prefix="bench-loop-noisy-") as tmp:
            out = Path(tmp) / "out"
            cmd = ["edgeprune", "prune", "--target", "local", "--model", args.model, "--speedup", f"{args.speedup:g}",
                   "--input-shape", ",".join(map(str, shape)), "--threads", "1", "--json", "-o", str(out)]
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "edgeprune", *cmd[1:]], env=env, capture_output=True,
                                  text=True, timeout=900)
            wall = time.perf_counter() - t0
            doc = json.loads(proc.stdout)
            lat = doc.get("latency") or doc.get("result", {}).get("latency")
            from edgeprune.latency.loop import _export
            from edgeprune.load import load_model

            lm = load_model(args.model, input_shape=shape)
            unpruned = _export(lm.module, lm, "local", "onnx", "fp32", Path(tmp), "unpruned")
            ratio, p_ms, u_ms = interleaved_ratio(out / "measured.onnx", unpruned, shape)
    finally:
        load.kill()
        load.wait()
    rounds = ", ".join(f"{r['judged_ms'] / r['budget_ms']:.2f}" for r in lat["rounds"])
    line = (f"| `{' '.join(cmd[:-2])}` + one core spinning | {1 / args.speedup:.3f}x | {rounds} | "
            f"{lat['verdict']}, exit {proc.returncode}, {len(lat['rounds'])} rounds, {wall:.0f} s | "
            f"{args.speedup * ratio:.2f} ({p_ms:.2f} / {u_ms:.2f} ms, {ROUNDS} interleaved rounds) |")
    body = ("### Closed loop on a busy board (`benchmarks/bench_loop_noisy.py`)\n\n"
            f"Machine: {machine_line()}; a load generator spins on core 0 throughout.\n\n"
            "| run | asked (budget / unpruned) | rounds (judged / budget) | edgeprune says | measured / budget "
            "independently (pruned / unpruned p50, ONNX Runtime in the script, 1 thread) |\n|---|---|---|---|---|\n"
            + line)
    write_section("loop-noisy", body)
    print(line)


if __name__ == "__main__":
    main()
