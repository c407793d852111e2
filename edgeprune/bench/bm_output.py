"""Read what LiteRT's ``benchmark_model`` printed, as untrusted input, into plain figures.

The phone's binary is not ours: its output is text of a version we do not
know, from a program that may crash half-way or print anything. So:

- only the lines below are read; any other line is counted and ignored;
- every number is parsed strictly (decimal or scientific notation, finite,
  within a range) and a known line with a bad number is refused, naming it;
- a figure the binary did not print is ``None`` and named in ``missing``,
  never filled in.

The lines (``tflite/tools/benchmark/benchmark_model.cc`` and the delegate
code in LiteRT; on Android most carry an ``INFO: `` prefix, older builds
none)::

    Running benchmark for at least 1 iterations and at least 0.5 seconds ...
    count=1 curr=81350                                        (the warm-up)
    count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929 p5=77500 median=79600 p95=86000
    count=50 curr=1200(all same) p5=1200 median=1200 p95=1200
    Inference timings in us: Init: 38467, First inference: 83235, Warmup (avg): 83235, Inference (avg): 79760.9
    Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9      (older builds)
    Initialized session in 38.467ms.
    Memory footprint delta from the start of the tool (MB): init=3.5 overall=8.125
    Overall peak memory footprint (MB) via periodic monitoring: 12.3
    Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
    Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 3 delegate kernels.
    Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.
    Replacing 29 out of 31 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions ...
    27 operations will run on the GPU, and the remaining 4 operations will run on the CPU.
    ERROR: Failed to apply GPU delegate.

and, with ``--enable_op_profiling=true``, the tables after ``Operator-wise
Profiling Info for Regular Benchmark Runs`` (``Top by Computation Time`` and
``Summary by node type``). Times are microseconds, except where the line says
ms or MB.

Example::

    out = parse_benchmark_output(stdout + stderr, where="benchmark_model on pixel-8")
    out.inference.median_us, out.delegate["fell_back"], out.missing
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeprune.errors import BenchmarkModelError

MAX_US = 3.6e9  # an hour per inference is not a measurement
MAX_LINES = 200_000
MAX_OPS = 500

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PREFIX = re.compile(r"^(?:(?:INFO|WARN|WARNING|ERROR|FATAL|VERBOSE): )+")
_KV = re.compile(r"(\w+)=(\S+)")
_RUNNING = re.compile(r"^Running benchmark for at least (\d+) iterations")
_PAIR = re.compile(r"([A-Za-z][A-Za-z ()]*?): (" + _NUM + r")")
_SESSION = re.compile(r"^Initialized session in (" + _NUM + r") ?ms")
_MEM_DELTA = re.compile(r"^Memory footprint delta from the start of the tool \(MB\): init=(\S+) overall=(\S+)")
_PEAK = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring: (\S+)")
_APPLIED_FULL = re.compile(r"^Explicitly applied (\S+) delegate, and the model graph will be completely executed")
_APPLIED_PART = re.compile(
    r"^Explicitly applied (\S+) delegate, and the model graph will be partially executed by the delegate w/ (\d+)")
_APPLIED_NONE = re.compile(r"^Though (\S+) delegate is explicitly applied, the model graph will not be executed")
_FAILED = re.compile(r"^Failed to apply (\S+) delegate")
_REPLACING = re.compile(r"^Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]{0,80})\) node, yielding (\d+) partition")
_GPU_SPLIT = re.compile(r"^(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU")
_GPU_NONE = re.compile(r"^No operations will run on the GPU, and all (\d+) operations will run on the CPU")
_GPU_UNSUPPORTED = re.compile(r"^GPU acceleration is unsupported on this platform")
_SECTION = re.compile(r"^=+ (.+?) =+$")
_OP = re.compile(r"^[A-Za-z][A-Za-z0-9_:/.-]{0,79}$")
_REGULAR_PROFILE = "Operator-wise Profiling Info for Regular Benchmark Runs"
# the binary's delegate names, and the kernel names of its "Replacing ..." line
KERNEL_PROVIDER = (("xnnpack", "XNNPACK"), ("gpu", "GPU"), ("nnapi", "NNAPI"), ("hexagon", "HEXAGON"))


@dataclass
class Stat:
    """One ``count=`` line, in microseconds (``None`` where the line did not say)."""

    count: int
    first_us: float | None = None
    curr_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    avg_us: float | None = None
    std_us: float | None = None
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None
    all_same: bool = False

    @property
    def center_us(self) -> float | None:
        """The median when printed, else the mean: what one run of the binary says a run takes."""
        return self.median_us if self.median_us is not None else self.avg_us


@dataclass
class BenchmarkOutput:
    """Everything read from one run of the binary; see the module docstring."""

    warmup: Stat | None = None
    inference: Stat | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    memory_init_mb: float | None = None
    memory_overall_mb: float | None = None
    peak_memory_mb: float | None = None
    delegate: dict[str, Any] = field(default_factory=dict)
    op_profile: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    ignored_lines: int = 0
    missing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def number(text: str, where: str, *, lo: float = 0.0, hi: float = MAX_US) -> float:
    """``text`` as a finite number in [lo, hi] (scientific notation allowed), else BenchmarkModelError."""
    if not re.fullmatch(_NUM, text or ""):
        raise BenchmarkModelError(f"{where}: {text[:40]!r} is not a number")
    value = float(text)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BenchmarkModelError(f"{where}: {text[:40]} is out of range [{lo:g}, {hi:g}]")
    return value


def _count(text: str, where: str) -> int:
    value = number(text, where, hi=1e9)
    if value != int(value):
        raise BenchmarkModelError(f"{where}: count {text[:40]} is not a whole number")
    return int(value)


def parse_stat(line: str, where: str) -> Stat:
    """A ``count=...`` line (prefix already removed) as a checked :class:`Stat`."""
    same = "(all same)" in line
    values = dict(_KV.findall(line.replace("(all same)", " ")))
    stat = Stat(count=_count(values.get("count", ""), f"{where}: count"), all_same=same)
    curr = values.get("curr")
    for key, attr in (("first", "first_us"), ("curr", "curr_us"), ("min", "min_us"), ("max", "max_us"),
                      ("avg", "avg_us"), ("std", "std_us"), ("p5", "p5_us"), ("median", "median_us"),
                      ("p95", "p95_us")):
        text = curr if key == "curr" else values.get(key)
        if text is not None:
            setattr(stat, attr, number(text, f"{where}: {key}"))
    if stat.all_same and stat.curr_us is not None:
        # "(all same)": every run took curr; the line leaves out what that already says
        for attr in ("first_us", "min_us", "max_us", "avg_us"):
            if getattr(stat, attr) is None:
                setattr(stat, attr, stat.curr_us)
        stat.std_us = 0.0 if stat.std_us is None else stat.std_us
    _check_order(stat, where)
    return stat


def _check_order(s: Stat, where: str) -> None:
    slack = 1.0  # us: min/max are whole microseconds, avg a double
    if s.count < 1:
        return
    if s.min_us is not None and s.max_us is not None:
        for name in ("avg_us", "median_us", "p5_us", "p95_us", "first_us", "curr_us"):
            v = getattr(s, name)
            if v is not None and not s.min_us - slack <= v <= s.max_us + slack:
                raise BenchmarkModelError(
                    f"{where}: {name[:-3]}={v:g} is outside min={s.min_us:g} .. max={s.max_us:g}; refused")
    pct = [v for v in (s.p5_us, s.median_us, s.p95_us) if v is not None]
    if pct != sorted(pct):
        raise BenchmarkModelError(f"{where}: p5 <= median <= p95 does not hold ({pct}); refused")


def _pairs(text: str, where: str) -> dict[str, float]:
    """``Init: 38467, First inference: 83235, ...`` as {label: us}."""
    out = {}
    for label, value in _PAIR.findall(text):
        out[label.strip()] = number(value, f"{where}: {label.strip()}")
    return out


def _coverage(delegate: dict[str, Any], provider: str, **values: Any) -> None:
    row = delegate.setdefault("applied", {}).setdefault(provider, {})
    row.update(values)


def _kernel_provider(kernel: str) -> str:
    low = kernel.lower()
    return next((p for k, p in KERNEL_PROVIDER if k in low), "EXTERNAL")


def parse_benchmark_output(text: bytes | str, *, where: str = "benchmark_model") -> BenchmarkOutput:
    """The figures in ``text`` (the binary's stdout and stderr together); see the module docstring.

    Raises :class:`BenchmarkModelError` only for a known line with a bad
    figure; a run that printed no timings parses (``inference`` is None),
    and the caller decides what that means.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = BenchmarkOutput()
    stats: list[tuple[int, Stat]] = []  # (phase, stat): phase 1 = warm-up, 2 = timed runs
    phase = 0
    table_lines: list[str] = []
    in_profile = False
    for n, raw in enumerate(text.splitlines()):
        if n >= MAX_LINES:
            out.ignored_lines += 1
            continue
        line = _PREFIX.sub("", raw.strip().lstrip("|"))  # '|': the batch script marks the binary's lines
        if raw.lstrip("|").startswith(("ERROR: ", "FATAL: ")):
            out.errors.append(line[:300])
        if in_profile or line.startswith(_REGULAR_PROFILE):
            in_profile = True
            table_lines.append(raw)
        if _RUNNING.match(line):
            phase += 1
        elif line.startswith("count="):
            stats.append((phase, parse_stat(line, f"{where}: timing line {len(stats) + 1}")))
        elif line.startswith(("Inference timings in us:", "Average inference timings in us:")):
            pairs = _pairs(line.split(":", 1)[1], f"{where}: inference timings")
            out.init_us = pairs.get("Init", out.init_us)
            out.first_inference_us = pairs.get("First inference", out.first_inference_us)
            out.warmup_avg_us = pairs.get("Warmup (avg)", pairs.get("Warmup", out.warmup_avg_us))
            out.inference_avg_us = pairs.get("Inference (avg)", pairs.get("Inference", out.inference_avg_us))
        elif m := _SESSION.match(line):
            if out.init_us is None:
                out.init_us = 1000.0 * number(m.group(1), f"{where}: initialized session", hi=MAX_US / 1000)
        elif m := _MEM_DELTA.match(line):
            # a delta can be negative (the tool freed memory it held at start)
            out.memory_init_mb = number(m.group(1), f"{where}: memory init", lo=-1e6, hi=1e6)
            out.memory_overall_mb = number(m.group(2), f"{where}: memory overall", lo=-1e6, hi=1e6)
        elif m := _PEAK.match(line):
            out.peak_memory_mb = number(m.group(1), f"{where}: peak memory", hi=1e7)
        elif m := _APPLIED_FULL.match(line):
            _coverage(out.delegate, m.group(1)[:20], executed="completely")
        elif m := _APPLIED_PART.match(line):
            _coverage(out.delegate, m.group(1)[:20], executed="partially",
                      kernels=_count(m.group(2), f"{where}: delegate kernels"))
        elif m := _APPLIED_NONE.match(line):
            _coverage(out.delegate, m.group(1)[:20], executed="not")
        elif m := _FAILED.match(line):
            _coverage(out.delegate, m.group(1)[:20], executed="failed")
        elif m := _REPLACING.match(line):
            done, total = _count(m.group(1), f"{where}: nodes"), _count(m.group(2), f"{where}: nodes")
            if done > total:
                raise BenchmarkModelError(f"{where}: {done} of {total} nodes delegated; refused")
            _coverage(out.delegate, _kernel_provider(m.group(3)), nodes_delegated=done, nodes_total=total,
                      partitions=_count(m.group(4), f"{where}: partitions"), kernel=m.group(3)[:80])
        elif m := _GPU_SPLIT.match(line):
            gpu, cpu = _count(m.group(1), f"{where}: GPU ops"), _count(m.group(2), f"{where}: CPU ops")
            _coverage(out.delegate, "GPU", nodes_delegated=gpu, nodes_total=gpu + cpu)
        elif m := _GPU_NONE.match(line):
            _coverage(out.delegate, "GPU", nodes_delegated=0, nodes_total=_count(m.group(1), f"{where}: CPU ops"),
                      executed="not")
        elif _GPU_UNSUPPORTED.match(line):
            _coverage(out.delegate, "GPU", executed="not", unsupported=True)
        elif not in_profile:
            out.ignored_lines += 1
    _assign_stats(out, stats)
    if table_lines:
        out.op_profile = parse_op_profile(table_lines, where=where, runs=out.inference.count if out.inference else None)
    out.missing = _missing(out)
    return out


def _assign_stats(out: BenchmarkOutput, stats: list[tuple[int, Stat]]) -> None:
    """Which ``count=`` line is the warm-up and which the timed runs."""
    if not stats:
        return
    if any(p for p, _ in stats):  # "Running benchmark ..." lines say which phase each line ends
        by_phase = {p: s for p, s in stats}
        out.warmup, out.inference = by_phase.get(1), by_phase.get(2)
        return
    # No phase lines (filtered or an old build): warm-up first, timed runs last.
    out.inference = stats[-1][1]
    out.warmup = stats[0][1] if len(stats) > 1 else None


def _missing(out: BenchmarkOutput) -> list[str]:
    """The :class:`~edgeprune.bench.result.BenchResult` figures this output does not give."""
    gaps = []
    s = out.inference
    if s is None:
        gaps.append("latency_ms")
    else:
        for attr, name in (("median_us", "p50"), ("min_us", "min"), ("max_us", "max"), ("avg_us", "mean"),
                           ("std_us", "std")):
            if getattr(s, attr) is None:
                gaps.append(f"latency_ms.{name}")
        gaps += ["latency_ms.p90", "latency_ms.p99"]  # benchmark_model prints p5, median and p95 only
    for value, name in ((out.init_us, "load_ms"), (out.first_inference_us, "first_inference_ms"),
                        (out.peak_memory_mb, "peak_memory_mb")):
        if value is None:
            gaps.append(name)
    return gaps


# -- op profiling -------------------------------------------------------------------------------


def _cells(raw: str) -> list[str]:
    line = _PREFIX.sub("", raw.strip().lstrip("|"))
    name = None
    if line.endswith("]") and "[" in line:  # the node name is the last column, in brackets, may hold spaces
        head, _, tail = line.rpartition("[")
        name, line = tail[:-1], head
    cells = line.split()
    return cells + ([name] if name is not None else [])


def _pct(text: str, where: str) -> float:
    return number(text.rstrip("%"), where, hi=100.0001) / 100.0


def parse_op_profile(lines: list[str], *, where: str, runs: int | None) -> dict[str, Any]:
    """The ``--enable_op_profiling`` tables of the timed runs: time per op type and the slowest nodes.

    Shaped like the agent's ``op_profile`` (``by_op_type``: op_type,
    ms_per_run, calls_per_run, share; ``top_nodes``: node, op_type,
    ms_per_run). Rows that do not have the table's shape are skipped.
    """
    section = None
    by_type: list[dict[str, Any]] = []
    top: list[dict[str, Any]] = []
    for raw in lines:
        stripped = _PREFIX.sub("", raw.strip().lstrip("|"))
        if m := _SECTION.match(stripped):
            section = m.group(1).strip()
            continue
        cells = _cells(raw)
        # a table row: an op type, then numbers (some with '%'); anything else is not a row
        shape = {"Summary by node type": 7, "Top by Computation Time": 9}.get(section or "")
        numeric = cells[1:7] if shape == 7 else cells[1:8]  # the Top table ends with the node's [name]
        if not shape or len(cells) < shape or not _OP.match(cells[0]) or not all(
                re.fullmatch(_NUM + "%?", c) for c in numeric):
            continue
        w = f"{where}: op profile ({section})"
        if shape == 7 and len(by_type) < MAX_OPS:
            by_type.append({"op_type": cells[0], "calls_per_run": float(_count(cells[1], w)),
                            "ms_per_run": number(cells[2], w, hi=MAX_US / 1000), "share": _pct(cells[3], w)})
        elif shape == 9 and len(top) < MAX_OPS:
            top.append({"node": cells[-1][:200], "op_type": cells[0],
                        "ms_per_run": number(cells[3], w, hi=MAX_US / 1000)})
    by_type.sort(key=lambda r: -r["ms_per_run"])
    if not by_type:
        return {"available": False, "source": "benchmark_model --enable_op_profiling=true",
                "reason": "the binary printed no per-op summary table", "runs": runs,
                "by_op_type": [], "top_nodes": []}
    return {"available": True, "source": "benchmark_model --enable_op_profiling=true", "runs": runs,
            "by_op_type": by_type, "top_nodes": top[:20]}
