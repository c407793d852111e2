"""The closed loop on busy boards and boards with a CPU quota, each result checked by an independent loop.

What it runs::

    python benchmarks/bench_loop_noisy.py --boards busy,quota0.5,quota0.25 \\
        --models mobilenetv2,resnet18 --speedups 1.25,1.667,2.5 --artifacts onnx-fp32,tflite-int8

For every (board, model, artifact, speedup):

1. the board: ``busy`` is this machine (``--target local``) with a load generator spinning on core 0 for
   the whole run; ``quota0.5`` / ``quota0.25`` are farm boards (real sshd in network namespaces,
   ``tests/farm``) whose CPU is capped by cgroup ``cpu.max`` at half / a quarter of a core;
2. ``edgeprune prune --target T --model M --speedup S --format F --precision P --threads 1 --json`` (a
   subprocess, as a user runs it);
3. the file the board timed for the chosen round (``measured.onnx`` / ``measured.tflite`` in the prune
   folder) and the unpruned model (exported here the way the loop exports it) are timed by
   ``benchmarks/_interleave.py`` ON THE SAME BOARD (over SSH for a farm board, so inside its quota; the
   load generator still running for ``busy``): interleaved rounds, the order alternating.
   measured / budget = S x the median over rounds of (pruned / unpruned), a round's figure the median of
   its runs; on a quota board the MEAN of its runs, each round spanning at least 3 quota periods (the
   medians' ratio is printed beside it: under a quota a round's median jumps between the free and the
   throttled run time; see edgeprune/latency/judge.py);
   With ``--budget-of-bench F`` the budget is absolute instead: ``edgeprune bench`` times the unpruned
   model on the board first and the prune runs with ``--latency-budget`` F x its p50 (the issue's third
   row); measured / budget is then the pruned model's own figure on the board (its round means on a quota
   board) over that budget. With ``--deploy`` the command is ``edgeprune deploy`` (the issue's fourth row:
   fmnist-cnn at its own input size, ``--input 0``) and the file timed is the one the deploy shipped;
4. one row per run in ``benchmarks/RESULTS.md`` (section ``loop-noisy``; a row with the same board, model,
   artifact and budget is replaced), with the command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from _interleave import interleaved_ratio  # noqa: E402
from _results import RESULTS, machine_line, write_section  # noqa: E402

SECTION = "loop-noisy"
HEAD = ("| board | model, input | artifact | asked (budget / unpruned) | rounds: judged / budget | edgeprune says "
        "(verdict, exit, rounds, wall) | measured / budget independently (pruned / unpruned: p50, or on a quota board "
        "round means; same board) |\n"
        "|---|---|---|---|---|---|---|")


def spin() -> subprocess.Popen:
    code = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def loadavg() -> str:
    return open("/proc/loadavg").read().split()[0]


def existing_rows() -> dict[tuple, str]:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"<!-- {SECTION}:start -->(.*?)<!-- {SECTION}:end -->", text, re.S)
    rows = {}
    for line in (m.group(1) if m else "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 7 and not cells[0].startswith("board") and "---" not in cells[0]:
            rows[tuple(cells[:4])] = line
    return rows


def existing_commands() -> list[str]:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"<!-- {SECTION}:start -->(.*?)<!-- {SECTION}:end -->", text, re.S)
    return re.findall(r"^- `(python benchmarks/bench_loop_noisy\.py[^`]*)`$", m.group(1) if m else "", re.M)


def existing_reading() -> str:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"<!-- {SECTION}:start -->(.*?)<!-- {SECTION}:end -->", text, re.S)
    r = re.search(r"^Reading \(by the lead\).*", m.group(1) if m else "", re.S | re.M)
    return r.group(0).strip() if r else ""


def write(rows: dict[tuple, str], commands: list[str]) -> None:
    body = "\n".join([
        "## The closed loop on busy boards and boards with a CPU quota (issue 20)",
        "",
        f"`.venv/bin/python benchmarks/bench_loop_noisy.py` ({machine_line()}). `busy`: `--target local` with "
        "a load generator spinning on core 0 throughout; `quota0.5` / `quota0.25`: farm boards (sshd in network "
        "namespaces) capped by cgroup `cpu.max` at 0.5 / 0.25 of a core. Every prune runs with `--threads 1` "
        "and the default `--tolerance 0.1` / `--max-rounds 5`: a budget is met when the board's figure is within "
        "[0.9, 1.0] of it. The last column is this script's own interleaved loop (`benchmarks/_interleave.py`, "
        "not the agent) timing the file the board measured against the unpruned model on the same board; on a quota "
        "board, the ratio of round means (rounds of at least 3 quota periods), the ratio of medians beside it.",
        "",
        HEAD,
        *[rows[k] for k in sorted(rows)],
        "",
        "Commands run for these rows (latest first):",
        "",
        *[f"- `{c}`" for c in commands[:8]],
        *(["", existing_reading()] if existing_reading() else []),
    ])
    write_section(SECTION, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--boards", default="busy")
    ap.add_argument("--models", default="mobilenetv2")
    ap.add_argument("--speedups", default="1.667")
    ap.add_argument("--artifacts", default="onnx-fp32")
    ap.add_argument("--input", type=int, default=224, help="input size on the busy local board (0: the model's)")
    ap.add_argument("--farm-input", type=int, default=96, help="input size on the quota boards (0: the model's)")
    ap.add_argument("--budget-of-bench", type=float, default=None, metavar="F",
                    help="--latency-budget F x the unpruned model's bench p50 on the board, instead of --speedup")
    ap.add_argument("--deploy", action="store_true", help="edgeprune deploy instead of edgeprune prune")
    args = ap.parse_args()
    boards = args.boards.split(",")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-noisy-", dir="/var/tmp"))
    os.chmod(tmp, 0o755)
    env["EDGEPRUNE_CACHE_DIR"] = str(tmp / "cache")
    farm = None
    quotas = {b: float(b.removeprefix("quota")) for b in boards if b.startswith("quota")}
    if quotas:
        sys.path.insert(0, str(ROOT / "tests"))
        from farm.farm import BoardSpec, Farm, can_use_namespaces

        if not can_use_namespaces():
            sys.exit("the quota boards need root and the farm's tools (farm boards in network namespaces): "
                     "run bash scripts/install-farm-deps.sh")
        farm = Farm([BoardSpec(b.replace(".", ""), cpu_quota=q) for b, q in quotas.items()]).__enter__()
        targets = tmp / "targets.toml"
        targets.write_text(farm.targets_toml())
        env["EDGEPRUNE_TARGETS"] = str(targets)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    this = f"python benchmarks/bench_loop_noisy.py {' '.join(sys.argv[1:])}"
    rows, commands = existing_rows(), [this, *(c for c in existing_commands() if c != this)]
    try:
        for board in boards:
            size = args.input if board == "busy" else args.farm_input
            target = "local" if board == "busy" else f"farm-{board.replace('.', '')}"
            for model in args.models.split(","):
                shape = (1, 3, size, size) if size else model_shape(model)
                for art in args.artifacts.split(","):
                    fmt, precision = art.split("-")
                    for s in (float(v) for v in args.speedups.split(",")):
                        rows.update(one_run(board, target, model, fmt, precision, s, shape, tmp, env, farm,
                                            budget_of_bench=args.budget_of_bench, deploy=args.deploy))
                        write(rows, commands)
    finally:
        if farm is not None:
            farm.__exit__(None, None, None)


def model_shape(model: str) -> tuple:
    from edgeprune.load import load_model

    return tuple(load_model(model).input_shape)


def edgeprune_json(args: list[str], env) -> tuple[dict, int, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgeprune", *args], env=env, capture_output=True, text=True,
                          timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"edgeprune {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}", file=sys.stderr)
    try:
        return json.loads(proc.stdout), proc.returncode, wall
    except json.JSONDecodeError:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        raise


def one_run(board, target, model, fmt, precision, speedup, shape, tmp: Path, env, farm, *,
            budget_of_bench: float | None = None, deploy: bool = False) -> dict:
    from edgeprune.latency.loop import _export
    from edgeprune.load import load_model

    kind = f"budget{budget_of_bench:g}" if budget_of_bench else f"{speedup:g}"
    out = tmp / f"{board}-{model}-{fmt}{precision}-{kind}{'-deploy' if deploy else ''}"
    out.mkdir(parents=True)
    quota = board != "busy"
    load = spin() if board == "busy" else None
    try:
        lm = load_model(model, input_shape=shape)
        profile = target if board == "busy" else "raspberry-pi-5"
        shape_arg = ["--input-shape", ",".join(map(str, shape))]
        if budget_of_bench:
            first = _export(lm.module, lm, profile, fmt, precision, out, "bench")
            doc, _, _ = edgeprune_json(["bench", "--target", target, "--threads", "1", "--json", str(first)], env)
            row = doc[0] if isinstance(doc, list) else doc
            row = (row.get("results") or [row])[0] if "results" in row else row
            p50 = row["latency_ms"]["p50"]
            how_asked = ["--latency-budget", f"{budget_of_bench * p50:.4g}"]
        else:
            how_asked = ["--speedup", f"{speedup:g}"]
        cmd = ["prune", "--target", target, "--model", model, *how_asked, *shape_arg, "--format", fmt,
               "--precision", precision, "--threads", "1", "--json", "-o", str(out / "run")]
        if deploy:  # with the user's cache: the trained weights and the data the deploy needs are there
            cmd[0] = "deploy"
            env = {k: v for k, v in env.items() if k != "EDGEPRUNE_CACHE_DIR"}
        doc, rc, wall = edgeprune_json(cmd, env)
        if deploy:  # the file shipped and the deploy's own unpruned export
            run = json.loads((out / "run" / "run.json").read_text())
            lat = run["stages"]["prune"]["result"]["latency"]
            timed = Path(run["stages"]["export"]["result"]["artifact"])
            unpruned = out / "run" / run["stages"]["measure"]["outputs"]["artifact"]["path"]
        else:
            lat = doc.get("latency") or doc.get("result", {}).get("latency")
            unpruned = _export(lm.module, lm, profile, fmt, precision, out, "unpruned",
                               io_precision=lat.get("io_precision"))
            timed = out / "run" / f"measured{unpruned.suffix}"
        budget = lat["budget_ms"]
        if board == "busy":
            got = interleaved_ratio(timed, unpruned, shape)
        else:  # each round spans at least 3 quota periods; the figure is the ratio of round means
            period = (lat.get("quota_runs") or {}).get("period_ms") or 100.0
            runs = max(10, math.ceil(3 * period / max(lat["unpruned_ms"], 1e-3)))
            got = on_board(farm, board.replace(".", ""), timed, unpruned, shape, runs)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    rounds = ", ".join(f"{r['judged_ms'] / r['budget_ms']:.2f}" for r in lat["rounds"])
    if budget_of_bench:  # absolute: the pruned file's own figure over the budget
        ratio = (got["a_mean_ms"] if quota else got["a_ms"]) / budget
        asked = f"{budget:.3g} ms = {budget_of_bench:g} x bench p50 {p50:.3g} ms"
    else:
        ratio = speedup * (got["mean_ratio"] if quota else got["ratio"])
        asked = f"{1 / speedup:.3f}x"
    ok = "in [0.9, 1.0]" if 0.9 <= ratio <= 1.0 else ("over" if ratio > 1.0 else "under")
    key = (board, f"{model}, {shape[-1]} px" + (" (deploy)" if deploy else ""), f"{fmt} {precision}", asked)
    how = (f"means {got['a_mean_ms']:.2f} / {got['b_mean_ms']:.2f} ms, {got['runs']} runs a round; ratio of "
           f"medians {speedup * got['ratio']:.2f}" if quota else f"p50 {got['a_ms']:.2f} / {got['b_ms']:.2f} ms")
    if budget_of_bench and quota:
        how += f"; pruned / unpruned means {got['mean_ratio']:.2f}"
    line = (f"| {' | '.join(key)} | {rounds} | {lat['verdict']}, exit {rc}, {len(lat['rounds'])} "
            f"rounds, {wall:.0f} s | **{ratio:.2f}** ({ok}; {how}; {got['rounds']} rounds; load {loadavg()}) |")
    print(line, flush=True)
    return {key: line}


def on_board(farm, name: str, a: Path, b: Path, shape, runs: int) -> dict:
    """The interleaved timing run on the farm board over SSH, so inside its cgroup quota."""
    bd = farm.boards[name]
    remote = " ".join(shlex.quote(v) for v in [farm.python, str(ROOT / "benchmarks" / "_interleave.py"),
                                                str(a), str(b), ",".join(map(str, shape)), str(runs)])
    ssh = ["ssh", "-i", str(farm.client_key), "-o", f"UserKnownHostsFile={farm.known_hosts}",
           "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(bd.port), f"{farm.user}@{bd.addr}",
           remote]
    return json.loads(subprocess.run(ssh, capture_output=True, text=True, check=True, timeout=1800).stdout)


if __name__ == "__main__":
    main()
