"""Measured speedup vs MAC reduction of uniformly pruned models, aligned and not.

For MobileNetV2 (torchvision's ImageNet weights when installed) and
ResNet-18 at 224x224, 30 % and 50 % of channels removed (L1 importance),
kept counts rounded to 1 (not aligned), 8 and 16: ONNX Runtime CPU, one
intra-op thread, on this machine (``--target local``).

Timing: every variant is exported to ONNX (opset 17) and warmed up; then
``--rounds`` rounds, each timing ``--runs`` inferences of every variant in
turn (interleaved, so that a noisy neighbour hits all variants alike). A
variant's latency is the median over rounds of its per-round median; the
fastest per-round median ("best round") is reported too, as the figure least
disturbed by other jobs on a shared machine.
/proc/stat is read around each round; the share of the machine that was busy
is reported, and rounds where more than our one core was busy are counted.

    .venv/bin/python benchmarks/bench_staircase.py            # writes the 'staircase' section
    .venv/bin/python benchmarks/bench_staircase.py --rounds 3 --runs 5 --no-write   # quick look
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _results import machine_line, write_section  # noqa: E402

from edgeprune.boards.profiles import load_profile  # noqa: E402
from edgeprune.export.onnx import export_onnx, onnx_session  # noqa: E402
from edgeprune.models import build, pretrained_available  # noqa: E402
from edgeprune.models.stats import count_macs_params  # noqa: E402
from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_  # noqa: E402

SHAPE = (1, 3, 224, 224)


def cpu_times() -> tuple[int, int]:
    with open("/proc/stat", encoding="ascii") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


def busy_cores(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return (os.cpu_count() or 1) * busy / max(total, 1)


def variants(models: list[str], ratios: list[float], aligns: list[int], tmp: Path) -> list[dict]:
    out = []
    for name in models:
        base = build(name)
        macs0, params0 = count_macs_params(base, SHAPE)
        out.append(
            {
                "model": name,
                "ratio": 0.0,
                "align": "-",
                "macs": macs0,
                "params": params0,
                "onnx": export_onnx(base, SHAPE, tmp / f"{name}-base.onnx"),
                "pretrained": pretrained_available(name),
            }
        )
        for ratio in ratios:
            for align in aligns:
                model = build(name)
                x = example_input(SHAPE)
                plan = ChannelPlan.uniform(
                    prunable_groups(model, x), ratio, align=align, input_shape=SHAPE, base=name
                )
                prune_(model, plan, x=x)
                macs, params = count_macs_params(model, SHAPE)
                aligned = sum(k % 8 == 0 for k in plan.keep.values())
                out.append(
                    {
                        "model": name,
                        "ratio": ratio,
                        "align": align,
                        "macs": macs,
                        "params": params,
                        "onnx": export_onnx(model, SHAPE, tmp / f"{name}-{ratio}-{align}.onnx"),
                        "removed": plan.removed_fraction(),
                        "mult8": f"{aligned}/{len(plan.keep)}",
                    }
                )
    return out


def measure(rows: list[dict], rounds: int, runs: int) -> list[float]:
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    for r in rows:
        r["sess"] = onnx_session(r["onnx"], threads=1)
        r["name_in"] = r["sess"].get_inputs()[0].name
        for _ in range(5):
            r["sess"].run(None, {r["name_in"]: x})
        r["per_round"] = []
    loads = []
    rng = np.random.default_rng(1)
    for _ in range(rounds):
        t0 = cpu_times()
        for k in rng.permutation(
            len(rows)
        ):  # a fresh order each round: no variant always goes first
            r = rows[int(k)]
            ts = []
            for _ in range(runs):
                t = time.perf_counter()
                r["sess"].run(None, {r["name_in"]: x})
                ts.append(time.perf_counter() - t)
            r["per_round"].append(statistics.median(ts) * 1000)
        loads.append(busy_cores(t0, cpu_times()))
    quiet = [i for i, load in enumerate(loads) if load <= 1.3]
    for r in rows:
        r["ms"] = statistics.median(r["per_round"])
        r["best"] = min(r["per_round"])
        r["spread"] = (max(r["per_round"]) - min(r["per_round"])) / r["ms"]
        r["quiet_ms"] = (
            statistics.median([r["per_round"][i] for i in quiet]) if len(quiet) >= 5 else None
        )
    return loads


def report(rows: list[dict], loads: list[float], args, elapsed: float) -> str:
    lines = [
        "## Pruning staircase: measured speedup vs MAC reduction (ONNX Runtime, 1 thread)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_staircase.py --rounds {args.rounds} --runs {args.runs}` "
        f"({elapsed / 60:.1f} min).",
        f"Machine: {machine_line()}; onnxruntime {__import__('onnxruntime').__version__}, "
        f"torch {torch.__version__}. Target `local` (alignment {load_profile('local').alignment()}).",
        f"Load: busy cores during the timed rounds (ours is 1 of {os.cpu_count()}): median "
        f"{statistics.median(loads):.2f}, max {max(loads):.2f}; {sum(load > 1.3 for load in loads)}/{len(loads)} rounds "
        "had another process using more than 0.3 core"
        + (". **The machine was shared with other jobs**" if any(load > 1.3 for load in loads) else "")
        + "; timings between passes of the same measurement vary by 8-17 % here (FACTS.md).",
        "",
        "Uniform plans, L1 importance, kept counts per group rounded to `align` (1 = not aligned). "
        "MobileNetV2 has torchvision's ImageNet weights; ResNet-18 is randomly initialised "
        "(latency does not depend on the values). `mult of 8` counts the groups whose kept count is "
        "a multiple of 8. Speedup = baseline latency / variant latency; `efficiency` = speedup / MAC reduction "
        "(1.0 = the model got as much faster as its MACs say).",
        "",
        "| model | removed | align | mult of 8 | MMACs | MAC reduction | latency ms (median / best round) "
        "| speedup (median / best) | efficiency (median / best) | round spread |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["model"]: r for r in rows if r["ratio"] == 0.0}
    for r in rows:
        b = base[r["model"]]
        red = b["macs"] / r["macs"]
        sp, spb = b["ms"] / r["ms"], b["best"] / r["best"]
        removed = (
            "0 (baseline)" if r["ratio"] == 0 else f"{100 * r['removed']:.1f} % (R={r['ratio']})"
        )
        lines.append(
            f"| {r['model']} | {removed} | {r['align']} | {r.get('mult8', '-')} | {r['macs'] / 1e6:.0f} | "
            f"{red:.2f}x | {r['ms']:.2f} / {r['best']:.2f} | {sp:.2f}x / {spb:.2f}x | "
            f"{sp / red:.2f} / {spb / red:.2f} | {100 * r['spread']:.0f} % |"
        )
    if all(r["quiet_ms"] is not None for r in rows):
        lines += [
            "",
            "Median over the quiet rounds only (no other process above 0.3 core): "
            + ", ".join(
                f"{r['model']} R={r['ratio']} a={r['align']}: {r['quiet_ms']:.2f} ms" for r in rows
            ),
        ]
    lines += [
        "",
        "Reading, per model and ratio (median speedup, not aligned -> align 8 -> align 16):",
        "",
    ]
    for model, b in base.items():
        for ratio in sorted({r["ratio"] for r in rows if r["model"] == model and r["ratio"] > 0}):
            rs = sorted(
                (r for r in rows if r["model"] == model and r["ratio"] == ratio),
                key=lambda r: r["align"],
            )
            steps = " -> ".join(f"{b['ms'] / r['ms']:.2f}x" for r in rs)
            reds = ", ".join(f"{b['macs'] / r['macs']:.2f}x" for r in rs)
            lines.append(f"- {model}, R={ratio}: speedup {steps} (MAC reductions {reds})")
    naturally = [
        r for r in rows if r["align"] == 1 and r["mult8"].split("/")[0] == r["mult8"].split("/")[1]
    ]
    for r in naturally:
        lines += [
            "",
            f"Note: {r['model']} at R={r['ratio']} 'not aligned' keeps counts that are all multiples of 8 "
            "anyway (half of channel counts that are multiples of 16), so there align 1 and 8 give the "
            "same model and their difference is measurement noise.",
        ]
    lines += [
        "",
        "`best round` = the fastest per-round median (least disturbed by other jobs); "
        "`round spread` = (slowest - fastest per-round median) / median.",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> bool:
    """Speedup against MAC reduction, one marker per alignment; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    base = {r["model"]: r for r in rows if r["ratio"] == 0.0}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    top = 1.0
    for model, color in zip(base, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        for align, marker in ((1, "x"), (8, "o"), (16, "s")):
            pts = [r for r in rows if r["model"] == model and r["align"] == align]
            red = [base[model]["macs"] / r["macs"] for r in pts]
            sp = [base[model]["ms"] / r["ms"] for r in pts]
            top = max([top, *red, *sp])
            label = f"{model}, align {align}" if align > 1 else f"{model}, not aligned"
            ax.scatter(red, sp, marker=marker, color=color, label=label)
    ax.plot([1, top * 1.05], [1, top * 1.05], "k--", lw=0.8, label="speedup = MAC reduction")
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("MAC reduction (x)")
    ax.set_ylabel("measured speedup, ONNX Runtime 1 thread (x)")
    ax.set_title("Uniform pruning, 30 % and 50 % of channels removed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", default="mobilenetv2,resnet18")
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--aligns", default="1,8,16")
    ap.add_argument(
        "--note", default="", help="a sentence added to the section (e.g. other passes)"
    )
    ap.add_argument(
        "--no-write", action="store_true", help="print the section, do not touch RESULTS.md"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows = variants(
            args.models.split(","),
            [float(r) for r in args.ratios.split(",")],
            [int(a) for a in args.aligns.split(",")],
            Path(tmp),
        )
        loads = measure(rows, args.rounds, args.runs)
    body = report(rows, loads, args, time.time() - t0)
    if args.note:
        body += f"\n{args.note}\n"
    png = Path(__file__).resolve().parent / "staircase-prune.png"
    if not args.no_write and plot(rows, png):
        body += f"\nPlot: [{png.name}]({png.name}).\n"
    print(body)
    if not args.no_write:
        write_section("staircase", body)


if __name__ == "__main__":
    main()
