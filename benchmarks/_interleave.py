"""An independent interleaved timing of two artifacts on one machine: the check on what the loop says.

Not edgeprune's agent: this script's own loop, so that a bias in the agent cannot hide in both figures.
``ROUNDS`` rounds of ``RUNS`` runs (or ``--runs``) of each file, the order alternating every round; the
figure is the median over rounds of (a / b), a round's value the median of its runs, and with a mean of its
runs beside it (on a CPU quota, a round spans several quota periods and its mean is what the board sustains). ONNX Runtime (``.onnx``) or LiteRT (``.tflite``), 1 thread, a fixed seeded
input of the file's own input type.

Run on a board (over SSH, so it runs inside the board's CPU quota)::

    python benchmarks/_interleave.py A B N,C,H,W [RUNS]     # prints one JSON line
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROUNDS, RUNS = 30, 10


def _runner(path: Path, shape):
    import numpy as np

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        return lambda: sess.run(None, feed)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / (scale or 1.0) + zero), info.min, info.max).astype(inp["dtype"])
    if tuple(inp["shape"]) != tuple(x.shape):  # an NHWC file
        x = x.transpose(0, 2, 3, 1).copy()
    idx = inp["index"]

    def run():
        it.set_tensor(idx, x)
        it.invoke()

    return run


def interleaved_ratio(a: Path, b: Path, shape, runs: int = RUNS) -> dict:
    """``ratio``: the median over rounds of a/b, each round's figure the median of its ``runs`` runs;
    ``mean_ratio``: the same with each round's figure the mean of its runs (the figure on a board with a CPU
    quota, where a round's median jumps between the free and the throttled time); p50s and means of each."""
    run = {"a": _runner(Path(a), shape), "b": _runner(Path(b), shape)}

    def timed(k: str) -> tuple[float, float]:
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            run[k]()
            out.append(time.perf_counter() - t0)
        return statistics.median(out) * 1000.0, statistics.fmean(out) * 1000.0

    for k in run:
        timed(k)  # warm-up
    ra, rb = [], []
    for r in range(ROUNDS):
        for k in (("a", "b") if r % 2 == 0 else ("b", "a")):
            (ra if k == "a" else rb).append(timed(k))
    med = [x[0] / y[0] for x, y in zip(ra, rb, strict=True)]
    mean = [x[1] / y[1] for x, y in zip(ra, rb, strict=True)]
    return {"ratio": statistics.median(med), "mean_ratio": statistics.median(mean), "runs": runs,
            "a_ms": statistics.median(x[0] for x in ra), "b_ms": statistics.median(y[0] for y in rb),
            "a_mean_ms": statistics.median(x[1] for x in ra), "b_mean_ms": statistics.median(y[1] for y in rb),
            "rounds": ROUNDS}


if __name__ == "__main__":
    a, b, shape = sys.argv[1], sys.argv[2], tuple(int(v) for v in sys.argv[3].split(","))
    print(json.dumps(interleaved_ratio(Path(a), Path(b), shape, int(sys.argv[4]) if len(sys.argv) > 4 else RUNS)))
