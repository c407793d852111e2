"""Reading benchmark_model's output as untrusted input (edgeprune.bench.bm_output).

Two sources of text: lines written here in the format LiteRT's
``benchmark_model.cc``, ``benchmark_tflite_model.cc`` and delegates print
(with and without ``INFO:``, percentiles, scientific notation), and the
output of the FAKE binary (tests/fake_benchmark_model.py) run for real.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from edgeprune.bench.bm_output import parse_benchmark_output, parse_stat
from edgeprune.bench.delegates import Delegate, describe_delegate, judge_delegate
from edgeprune.bench.phone import parse_facts, parse_thermal
from edgeprune.errors import BenchmarkModelError
from tests.fake_benchmark_model import write_fake_benchmark_model

MODERN = """INFO: STARTING!
INFO: Graph: [/data/local/tmp/edgeprune/model-3f2a.tflite]
INFO: Loaded model /data/local/tmp/edgeprune/model-3f2a.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Initialized session in 38.467ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=6 first=90412 curr=80010 min=79001 max=90412 avg=81877.3 std=4012 p5=79001 median=80233 p95=90412
INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929 p5=77500 median=79600 p95=86000
INFO: Inference timings in us: Init: 38467, First inference: 90412, Warmup (avg): 81877.3, Inference (avg): 79732
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE
INFO: Memory footprint delta from the start of the tool (MB): init=3.5 overall=8.125
INFO: Overall peak memory footprint (MB) via periodic monitoring: 12.3
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 30 MB
"""

OLD = """STARTING!
Graph: [/data/local/tmp/m.tflite]
Loaded model /data/local/tmp/m.tflite
Initialized session in 2.1ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=2950
Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=1260 curr=1237 min=1199 max=1403 avg=1240.27 std=31
Average inference timings in us: Warmup: 2950, Init: 2100, Inference: 1240.27
"""


def test_modern_output_every_figure_in_microseconds_and_the_warmup_told_apart():
    out = parse_benchmark_output(MODERN)
    s = out.inference
    assert (s.count, s.min_us, s.max_us, s.avg_us, s.std_us) == (50, 77385, 88213, 79732, 1929)
    assert (s.p5_us, s.median_us, s.p95_us) == (77500, 79600, 86000)
    assert out.warmup.count == 6 and out.warmup.first_us == 90412
    assert (out.init_us, out.first_inference_us, out.inference_avg_us) == (38467, 90412, 79732)
    assert (out.memory_init_mb, out.memory_overall_mb, out.peak_memory_mb) == (3.5, 8.125, 12.3)
    assert out.missing == ["latency_ms.p90", "latency_ms.p99"]  # benchmark_model prints p5/median/p95 only
    assert out.ignored_lines >= 5  # STARTING!, Graph, Loaded model, Note, VmRSS: read past, not guessed at


def test_old_output_without_prefix_or_percentiles_says_what_is_missing():
    out = parse_benchmark_output(OLD)
    assert out.inference.count == 50 and out.inference.median_us is None and out.inference.center_us == 1240.27
    assert out.warmup.count == 1 and out.init_us == 2100.0 and out.first_inference_us is None
    assert {"latency_ms.p50", "latency_ms.p90", "first_inference_ms", "peak_memory_mb"} <= set(out.missing)


def test_scientific_notation_and_all_same_lines():
    s = parse_stat("count=20 first=1.2e+06 curr=1.24e+06 min=1.1e+06 max=1.3e+06 avg=1.24027e+06 std=4.5e4 "
                   "p5=1.1e+06 median=1.24e+06 p95=1.29e+06", "t")
    assert s.avg_us == pytest.approx(1240270.0) and s.std_us == 45000.0 and s.median_us == 1240000.0
    same = parse_stat("count=50 curr=1200(all same) p5=1200 median=1200 p95=1200", "t")
    assert same.all_same and (same.min_us, same.max_us, same.avg_us, same.std_us) == (1200, 1200, 1200, 0.0)


@pytest.mark.parametrize("line, why", [
    ("count=50 first=10 curr=10 min=-5 max=12 avg=11 std=1", "out of range"),
    ("count=50 first=10 curr=10 min=9 max=12 avg=nan std=1", "not a number"),
    ("count=50 first=10 curr=10 min=9 max=12 avg=inf std=1", "not a number"),
    ("count=50 first=10 curr=10 min=9 max=12 avg=1e400 std=1", "out of range"),
    ("count=50 first=10 curr=10 min=9 max=12 avg=99 std=1", "outside min"),
    ("count=50 first=10 curr=10 min=9 max=12 avg=10 std=1 p5=11 median=10 p95=12", "p5 <= median <= p95"),
    ("count=2.5 curr=10", "not a whole number"),
    ("count=lots curr=10", "not a number"),
])
def test_a_timing_line_with_a_bad_figure_is_refused_naming_it(line, why):
    with pytest.raises(BenchmarkModelError, match=why) as exc:
        parse_benchmark_output("INFO: " + line + "\n", where="benchmark_model on pixel-8")
    assert str(exc.value).startswith("benchmark_model on pixel-8: timing line 1") and "\n" not in str(exc.value)


def test_garbage_and_huge_text_parse_to_no_timings_without_raising():
    garbage = bytes(range(256)) * 40 + b"\n\x00\xff count=\n"
    out = parse_benchmark_output(garbage)
    assert out.inference is None and "latency_ms" in out.missing
    huge = "INFO: " + "x" * 300 + "\n"
    out = parse_benchmark_output(huge * 250_000 + MODERN)
    assert out.inference is None and out.ignored_lines > 200_000  # past MAX_LINES nothing is read


DELEGATE_LINES = {
    "full": ("INFO: Replacing 31 out of 31 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions "
             "for the whole graph.\nINFO: Explicitly applied GPU delegate, and the model graph will be completely "
             "executed by the delegate.\n", False, "gpu", (31, 31)),
    "partial": ("ERROR: Following operations are not supported by GPU delegate:\nMEAN: Unsupported reduction\n"
                "27 operations will run on the GPU, and the remaining 4 operations will run on the CPU.\n"
                "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the "
                "delegate w/ 2 delegate kernels.\n", True, "gpu+cpu", (27, 31)),
    "none": ("INFO: GPU acceleration is unsupported on this platform.\nINFO: Though GPU delegate is explicitly "
             "applied, the model graph will not be executed by the delegate.\n", True, "cpu", (None, None)),
    "silent": ("INFO: Loaded model m.tflite\n", None, "unknown", (None, None)),
}


@pytest.mark.parametrize("case", sorted(DELEGATE_LINES))
def test_which_delegate_ran_and_whether_it_fell_back(case):
    text, fell_back, ran, nodes = DELEGATE_LINES[case]
    gpu = Delegate(name="gpu", provider="GPU", label="GPU", flags=("--use_gpu=true",))
    d = judge_delegate(parse_benchmark_output(text + MODERN), gpu)
    assert (d["fell_back"], d["ran"], (d["nodes_delegated"], d["nodes_total"])) == (fell_back, ran, nodes)
    line = describe_delegate(d)
    assert line.startswith("GPU delegate") and ("fell back" in line) == bool(fell_back)


def test_op_profiling_tables_of_the_timed_runs_not_the_initialization():
    table = """INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t 0.000\t 4.100\t 4.100\t 99.000%\t 99.000%\t 0.000\t 1\t[ModifyGraphWithDelegate/0]
============================== Summary by node type ==============================
\t [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t ModifyGraphWithDelegate\t 1\t 4.100\t 99.000%\t 99.000%\t 0.000\t 1
INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Top by Computation Time ==============================
\t [node type]\t  [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t CONV_2D\t 19.352\t 6.652\t 6.652\t 8.340%\t 8.340%\t 0.000\t 1\t[MobilenetV1/Conv2d_3_pointwise/Relu6]
\t CONV_2D\t 6.421\t 6.107\t 6.107\t 7.660%\t 16.000%\t 0.000\t 1\t[MobilenetV1/Conv2d_1_pointwise/Relu6]
Number of nodes executed: 31
============================== Summary by node type ==============================
\t [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t CONV_2D\t 15\t 71.240\t 89.270%\t 89.270%\t 0.000\t 15
\t DEPTHWISE_CONV_2D\t 13\t 8.562\t 10.730%\t 100.000%\t 0.000\t 13
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed
"""
    ops = parse_benchmark_output(MODERN + table).op_profile
    assert ops["available"] and [r["op_type"] for r in ops["by_op_type"]] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert ops["by_op_type"][0] == {"op_type": "CONV_2D", "calls_per_run": 15.0, "ms_per_run": 71.24,
                                    "share": pytest.approx(0.8927)}
    assert ops["top_nodes"][0] == {"node": "MobilenetV1/Conv2d_3_pointwise/Relu6", "op_type": "CONV_2D",
                                   "ms_per_run": 6.652}
    assert ops["runs"] == 50
    # the profiler's own "Timings (microseconds): count=" line is not the benchmark's
    assert parse_benchmark_output(MODERN + table).inference.median_us == 79600


@pytest.fixture(scope="module")
def fake_bm(tmp_path_factory):
    d = tmp_path_factory.mktemp("bm")
    model = d / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + b"w" * 60000)
    return write_fake_benchmark_model(d / "benchmark_model"), model


def run_fake(fake_bm, mode, *flags):
    bm, model = fake_bm
    env = {**os.environ, "FAKE_BM_MODE": mode}
    res = subprocess.run([str(bm), f"--graph={model}", "--num_runs=30", *flags], capture_output=True, env=env,
                         timeout=60)
    return res.returncode, parse_benchmark_output(res.stdout + b"\n" + res.stderr)


@pytest.mark.parametrize("mode", ["modern", "old", "sci", "fallback", "nogpu"])
def test_the_fake_binarys_real_output_parses_in_every_mode(fake_bm, mode):
    rc, out = run_fake(fake_bm, mode, "--use_gpu=true", "--enable_op_profiling=true",
                       "--report_peak_memory_footprint=true")
    assert rc == 0 and out.inference.count == 30 and out.inference.center_us > 0
    assert out.op_profile["available"] and out.op_profile["by_op_type"][0]["op_type"] == "CONV_2D"
    assert (out.inference.median_us is None) == (mode == "old")
    if mode == "sci":
        assert out.inference.avg_us > 1e6  # printed like 1.24027e+06
    gpu = Delegate(name="gpu", provider="GPU", label="GPU", flags=("--use_gpu=true",))
    assert judge_delegate(out, gpu)["fell_back"] is (mode in ("fallback", "nogpu"))


def test_the_fake_binarys_failures_parse_to_no_timings_or_a_refusal(fake_bm):
    rc, out = run_fake(fake_bm, "delegate_fails", "--use_gpu=true")
    assert rc == 1 and out.inference is None and out.errors[-1] == "Benchmarking failed."
    assert out.delegate["applied"]["GPU"]["executed"] == "failed"
    rc, out = run_fake(fake_bm, "crash")
    assert rc < 0 and out.inference is None
    with pytest.raises(BenchmarkModelError, match="min: -5 is out of range"):
        run_fake(fake_bm, "badnum")


def test_getprop_and_thermal_answers_are_read_as_untrusted():
    facts = parse_facts(b"ro.product.model=Pixel 8\nro.product.cpu.abi=arm64-v8a\nro.soc.manufacturer=Google\n"
                        b"ro.soc.model=Tensor G3\nro.build.version.release=14\nro.build.version.sdk=34\n"
                        b"nproc=9\nmem_kb=7812345\nro.serialno=\x1b[31mABC\n", serial="ABC")
    assert facts["machine"] == "arm64-v8a" and facts["cpu_model"] == "Google Tensor G3" and facts["cores"] == 9
    assert facts["os"] == "Android 14 (SDK 34)" and facts["id"].startswith("android-") and len(facts["id"]) == 24
    assert parse_facts(b"ro.product.cpu.abi=../../etc\n", serial="x")["machine"].startswith("unknown")
    t = parse_thermal("Thermal Status: 2\nCurrent temperatures from HAL:\n"
                      "\tTemperature{mValue=44.8, mType=0, mName=AP, mStatus=2}\n"
                      "\tTemperature{mValue=9999, mType=0, mName=bogus, mStatus=0}\n")
    assert t["status_name"] == "MODERATE" and t["temperatures_c"] == {"AP": 44.8}
    assert parse_thermal("Can't find service: thermalservice")["answered"] is False
