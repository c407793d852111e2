"""A FAKE LiteRT ``benchmark_model`` for the phone tests: a Python script, not the binary.

No Android phone can exist where edgeprune is tested, and LiteRT's Android
binary cannot run here. This script stands in for it on the FAKE phone
(tests/fake_adb.py): it takes the binary's flags and prints the lines the
binary prints (``tflite/tools/benchmark/benchmark_model.cc``,
``benchmark_tflite_model.cc`` and the delegates' log lines in LiteRT), with
latencies computed from the model file it is given, so that a pruned model
is faster by what it lost:

    one run (us) = BASE_US + bytes of the .tflite x US_PER_BYTE x delegate factor x (1 +- 2 % jitter)

``FAKE_BM_MODE`` picks how it behaves (default ``modern``):

- ``modern``: ``INFO:`` prefixes, percentiles (p5/median/p95), ``Inference timings in us: ...``;
- ``old``: no prefix, no percentiles, ``Average inference timings in us: Warmup: ..., Init: ..., Inference: ...``;
- ``sci``: a slow model (over a second a run): ``avg=1.24027e+06`` as C++ streams print doubles;
- ``fallback``: the GPU delegate takes some ops, the rest run on the CPU;
- ``nogpu``: ``GPU acceleration is unsupported on this platform``: everything on the CPU;
- ``delegate_fails``: ``ERROR: Failed to apply GPU delegate.``, exit 1;
- ``crash``: some lines, then SIGSEGV; ``garbage``: random bytes; ``huge``: 20 MB of lines;
- ``badnum``: a timing line with ``min=-5``; ``hang``: sleeps an hour;
- ``spoof``: also prints lines like the batch script's markers (``@@... end ...``, ``@@... done ...``).

``FAKE_BM_CRASH_ON=TEXT`` crashes only for a ``--graph`` path containing TEXT.
Each run appends its argv to ``$FAKE_BM_LOG`` when set (what the tests check
edgeprune asked for).
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPT = r'''
# FAKE benchmark_model for edgeprune's tests: NOT LiteRT's binary.
import math, os, random, signal, sys, time

BASE_US = 30.0
US_PER_BYTE = float(os.environ.get("FAKE_BM_US_PER_BYTE", "0.02"))
mode = os.environ.get("FAKE_BM_MODE", "modern")
flags = {}
for a in sys.argv[1:]:
    k, _, v = a.lstrip("-").partition("=")
    flags[k] = v
if os.environ.get("FAKE_BM_LOG"):
    with open(os.environ["FAKE_BM_LOG"], "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\n")
pre = "" if mode == "old" else "INFO: "
out = sys.stdout

def info(s):
    out.write(pre + s + "\n")

def err(s):
    sys.stderr.write("ERROR: " + s + "\n")

graph = flags.get("graph", "")
if mode == "hang":
    time.sleep(3600)
if mode == "garbage":
    out.buffer.write(bytes(random.Random(1).randrange(256) for _ in range(5000)))
    sys.exit(0)
if mode == "huge":
    line = pre + "x" * 200 + "\n"
    for _ in range(100000):
        out.write(line)
    sys.exit(0)
info("STARTING!")
if mode == "spoof":
    # lines the batch script keeps (they match its filter): they must not pass for its own markers
    out.write("@@ep end 0 m0000.tflite 0 count=1\n@@ done 1 count=1\n@@0123456789abcdef end 0 m0000.tflite 0\n")
info("Log parameter values verbosely: [0]")
if "num_threads" in flags:
    info("Num threads: [%s]" % flags["num_threads"])
info("Graph: [%s]" % graph)
try:
    data = open(graph, "rb").read()
except OSError:
    err("Failed to load model " + graph)
    sys.exit(1)
if data[4:8] != b"TFL3":
    err("The model is not a valid Flatbuffer buffer")
    err("Failed to load model " + graph)
    sys.exit(1)
info("Loaded model " + graph)
nodes = 3 + len(data) // 20000
delegate, factor = "XNNPACK", 1.0
if flags.get("use_gpu") == "true":
    delegate = "GPU"
    if mode == "delegate_fails":
        err("Failed to apply GPU delegate.")
        err("Benchmarking failed.")
        sys.exit(1)
    sys.stderr.write("INFO: Created TensorFlow Lite delegate for GPU.\n")
    info("GPU delegate created.")
    if mode == "nogpu":
        info("GPU acceleration is unsupported on this platform.")
        info("Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.")
    elif mode == "fallback":
        cpu = max(1, nodes // 3)
        sys.stderr.write("ERROR: Following operations are not supported by GPU delegate:\n"
                         "MEAN: Unsupported reduction axes\n%d operations will run on the GPU, and the remaining "
                         "%d operations will run on the CPU.\n" % (nodes - cpu, cpu))
        sys.stderr.write("INFO: Replacing %d out of %d node(s) with delegate (TfLiteGpuDelegateV2) node, "
                         "yielding 2 partitions for the whole graph.\n" % (nodes - cpu, nodes))
        info("Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate "
             "w/ 2 delegate kernels.")
        factor = 0.8
    else:
        sys.stderr.write("INFO: Replacing %d out of %d node(s) with delegate (TfLiteGpuDelegateV2) node, "
                         "yielding 1 partitions for the whole graph.\n" % (nodes, nodes))
        info("Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.")
        factor = 0.5
elif flags.get("use_nnapi") == "true":
    delegate, factor = "NNAPI", 0.7
    info("NNAPI delegate created.")
    info("Explicitly applied NNAPI delegate, and the model graph will be completely executed by the delegate.")
elif flags.get("external_delegate_path"):
    delegate, factor = "EXTERNAL", 0.3
    info("EXTERNAL delegate created.")
    info("Explicitly applied EXTERNAL delegate, and the model graph will be completely executed by the delegate.")
else:
    sys.stderr.write("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    if flags.get("use_xnnpack") == "true":
        info("XNNPACK delegate created.")
        info("Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the "
             "delegate.")
    sys.stderr.write("INFO: Replacing %d out of %d node(s) with delegate (TfLiteXNNPackDelegate) node, "
                     "yielding 1 partitions for the whole graph.\n" % (nodes, nodes))
one = (BASE_US + len(data) * US_PER_BYTE) * factor * (2e4 if mode == "sci" else 1.0)
init_us = 800 + len(data) // 50
info("The input model file size (MB): %g" % (len(data) / 1e6))
info("Initialized session in %gms." % (init_us / 1e3))
crash = os.environ.get("FAKE_BM_CRASH_ON")
if mode == "crash" or (crash and crash in graph):
    out.flush()
    os.kill(os.getpid(), signal.SIGSEGV)

def stat(times):
    n = len(times)
    avg = sum(times) / n
    s = sorted(times)
    pct = lambda p: s[n * p // 100] if p < 100 else s[-1]
    if n == 1 or min(times) == max(times):
        line = "count=%d curr=%d" % (n, times[-1]) + ("(all same)" if n > 1 else "")
    else:
        std = math.sqrt(max(0.0, sum(t * t for t in times) / n - avg * avg))
        line = "count=%d first=%d curr=%d min=%d max=%d avg=%g std=%d" % (
            n, times[0], times[-1], min(times), max(times), avg, int(std))
        if mode == "badnum":
            line = line.replace("min=%d" % min(times), "min=-5")
    if mode != "old":
        line += " p5=%d median=%d p95=%d" % (pct(5), pct(50), pct(95))
    return line, avg

def runs(n, salt):
    return [int(one * (1 + 0.02 * math.sin(7 * i + salt))) for i in range(n)]

warm_n, n = int(flags.get("warmup_runs", "1")), int(flags.get("num_runs", "50"))
max_s = flags.get("max_secs", "150")
info("Running benchmark for at least %d iterations and at least %s seconds but terminate if exceeding %s "
     "seconds." % (warm_n, flags.get("warmup_min_secs", "0.5"), max_s))
warm = runs(max(warm_n, 1), 1)
line, warm_avg = stat(warm)
info(line)
info("Running benchmark for at least %d iterations and at least %s seconds but terminate if exceeding %s "
     "seconds." % (n, flags.get("min_secs", "1"), max_s))
timed = runs(n, 2)
line, avg = stat(timed)
info(line)
if flags.get("enable_op_profiling") == "true":
    conv, other = 0.8 * avg / 1e3, 0.2 * avg / 1e3
    out.write(pre + "Profiling Info for Benchmark Initialization:\n"
              "============================== Run Order ==============================\n"
              "\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t"
              "[times called]\t[Name]\n"
              "\t         ModifyGraphWithDelegate\t    0.000\t    1.200\t    1.200\t 90.000%\t 90.000%\t"
              "     0.000\t        1\tModifyGraphWithDelegate/0\n\n")
    out.write(pre + "Operator-wise Profiling Info for Regular Benchmark Runs:\n"
              "============================== Top by Computation Time ==============================\n"
              "\t             [node type]\t  [start]\t  [first]\t [avg ms]\t     [%%]\t  [cdf%%]\t  [mem KB]\t"
              "[times called]\t[Name]\n"
              "\t                 CONV_2D\t    0.000\t %8.3f\t %8.3f\t 80.000%%\t 80.000%%\t     0.000\t        1\t"
              "[features/conv 1/Relu]\n"
              "\t                    MEAN\t %8.3f\t %8.3f\t %8.3f\t 20.000%%\t100.000%%\t     0.000\t        1\t"
              "[pool/Mean]\n\n"
              "============================== Summary by node type ==============================\n"
              "\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %%]\t    [cdf %%]\t  [mem KB]\t"
              "[times called]\n"
              "\t                 CONV_2D\t        2\t %8.3f\t    80.000%%\t    80.000%%\t     0.000\t        2\n"
              "\t                    MEAN\t        1\t %8.3f\t    20.000%%\t   100.000%%\t     0.000\t        1\n\n"
              "Timings (microseconds): count=%d first=%d curr=%d min=%d max=%d avg=%g std=1\n"
              "Memory (bytes): count=0\n3 nodes observed\n\n"
              % (conv, conv, conv, other, other, conv, other, n, timed[0], timed[-1], min(timed), max(timed), avg))
if mode == "old":
    out.write("Average inference timings in us: Warmup: %g, Init: %d, Inference: %g\n" % (warm_avg, init_us, avg))
else:
    info("Inference timings in us: Init: %d, First inference: %d, Warmup (avg): %g, Inference (avg): %g"
         % (init_us, warm[0], warm_avg, avg))
    info("Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to "
         "the actual memory footprint of the model at runtime. Take the information at your discretion.")
    info("Memory footprint delta from the start of the tool (MB): init=%g overall=%g"
         % (1.5 + len(data) / 1e6, 2.25 + len(data) / 1e6))
    if flags.get("report_peak_memory_footprint") == "true":
        info("Overall peak memory footprint (MB) via periodic monitoring: %g" % (4.5 + len(data) / 1e6))
        info("Memory status at the end of exeution:")
        info("- VmRSS              : 9 MB")
'''


def write_fake_benchmark_model(path: Path) -> Path:
    """Write the FAKE binary at ``path`` (executable, run with this Python without site-packages)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable} -S\n{SCRIPT}")
    path.chmod(0o755)
    return path
