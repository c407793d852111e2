"""`edgeprune deploy`: wall time per stage on --target local, board measurements, what a resumed run saves,
and three farm boards at once against one.

    .venv/bin/python benchmarks/bench_deploy.py                      # ~5 min; the farm part as root
    .venv/bin/python benchmarks/bench_deploy.py --no-farm --no-write # a quick look

1. A cold deploy (a fresh cache: no latency table, no cached measurement) of
   the README's quick start, through the CLI: every stage's wall time and
   board measurements, from its deploy.json.
2. The same command in a new folder, Ctrl-C (SIGINT) as soon as the ``ship``
   stage starts; then the same command again: its wall time against the cold
   run's (what resuming saves), and its board measurements.
3. Root only: the same model to 1 farm board, then to 3 boards at once (sshd
   in network namespaces, half a core and 100 Mbit/s each), ONNX fp32 with
   ``--ratio`` (the farm's boards use the raspberry-pi-5 profile; LiteRT
   conversions would dominate the comparison), each into a fresh folder.

Writes its section of benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import machine_line, write_section  # noqa: E402

QUICK = "--speedup 1.5 --format tflite --precision int8 --threads 1 --time-budget 2"


def loadavg() -> str:
    return open("/proc/loadavg").read().split()[0]


def edgeprune(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeprune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def run(args: list[str], env: dict) -> tuple[float, int, str]:
    t0 = time.monotonic()
    p = edgeprune(args, env)
    out, err = p.communicate()
    return time.monotonic() - t0, p.returncode, out + err


def stage_rows(report: dict) -> list[str]:
    return [f"| {s['name']} | {s['state']}{' (reused)' if s.get('reused') else ''} | {s.get('seconds') or 0:.1f} | "
            f"{s.get('board_measurements', 0)} |" for s in report["stages"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="fmnist-cnn")
    ap.add_argument("--farm-model", default="digits-cnn", help="the farm part's model (trains in seconds)")
    ap.add_argument("--args", default=QUICK, help="deploy options (default: the quick start's)")
    ap.add_argument("--no-farm", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgeprune-bench-deploy-"))
    from edgeprune.data import data_home

    env = {**os.environ, "EDGEPRUNE_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT),
           "EDGEPRUNE_DATA_DIR": str(data_home())}  # a fresh cache, the fetched data sets kept
    targets = tmp / "targets.toml"
    targets.write_text(f'[here]\nprofile = "local"\npython = "{sys.executable}"\ndeploy_dir = "{tmp / "board"}"\n')
    env["EDGEPRUNE_TARGETS"] = str(targets)
    base = ["deploy", "-t", "here", "-m", a.model, *shlex.split(a.args)]
    cmd_text = f"edgeprune deploy -t local -m {a.model} {a.args}"

    # 1. cold
    load0 = loadavg()
    cold_s, rc, text = run([*base, "-o", str(tmp / "cold")], env)
    if rc != 0:
        sys.exit(f"the cold deploy failed (exit {rc}):\n{text[-3000:]}")
    cold = json.loads((tmp / "cold" / "report" / "deploy.json").read_text())
    print(f"cold: {cold_s:.1f} s, {cold['run']['board_measurements']} board measurements (load {load0})")

    # 2. interrupted at the ship stage, then resumed
    out = tmp / "resume"
    p = edgeprune([*base, "-o", str(out)], env)
    t0 = time.monotonic()
    while p.poll() is None:
        try:
            st = json.loads((out / "run.json").read_text())["stages"]
        except (OSError, ValueError, KeyError):
            st = {}
        if st.get("ship", {}).get("state") == "running" or st.get("measure-final", {}).get("state") == "done":
            p.send_signal(signal.SIGINT)
            break
        time.sleep(0.05)
    p.communicate()
    interrupted_s = time.monotonic() - t0
    stages = json.loads((out / "run.json").read_text())["stages"]
    stopped = next((n for n, s in stages.items() if s.get("state") in ("interrupted", "running")), None)
    resumed_s, rc, text = run([*base, "-o", str(out)], env)
    if rc != 0:
        sys.exit(f"the resumed deploy failed (exit {rc}):\n{text[-3000:]}")
    resumed = json.loads((out / "report" / "deploy.json").read_text())
    print(f"interrupted after {interrupted_s:.1f} s at {stopped}; resumed in {resumed_s:.1f} s")

    lines = [
        "## Deploy: the whole job on `--target local`",
        "",
        f"`.venv/bin/python benchmarks/bench_deploy.py` ({machine_line()}; load average {load0} at the start). "
        f"Command: `{cmd_text}`, through the CLI, with a fresh edgeprune cache (no latency table, no cached "
        "measurement; fmnist-cnn trains first, about a minute, inside the measure stage).",
        "",
        f"**Cold run: {cold_s:.1f} s wall, {cold['run']['board_measurements']} board measurements** "
        f"(agent runs on the board). Result: {cold['stages'][4].get('note', '')}. "
        f"Shipped {cold['release']['id']} at {cold['latency']['final_ms']:.4g} ms against "
        f"{cold['latency']['unpruned_ms']:.4g} ms unpruned, measured side by side.",
        "",
        "| stage | state | wall s | board measurements |",
        "|---|---|---:|---:|",
        *stage_rows(cold),
        "",
        f"**Resume**: the same command in a new folder, interrupted with SIGINT (Ctrl-C) after "
        f"{interrupted_s:.1f} s, at the `{stopped}` stage; then run again: **{resumed_s:.1f} s** "
        f"({cold_s - resumed_s:.1f} s, {1 - resumed_s / cold_s:.0%}, less than the cold run), "
        f"{resumed['run']['board_measurements']} board measurement(s); reused: {', '.join(resumed['run']['reused'])}. "
        "(The interrupted run itself had the caches of the cold one: latency table and bench results.)",
        "",
        "| stage | state | wall s (a reused stage: the run that made it) | board measurements this run |",
        "|---|---|---:|---:|",
        *stage_rows(resumed),
    ]

    if not a.no_farm:
        from tests.farm.farm import BoardSpec, Farm, can_use_namespaces

        if not can_use_namespaces():
            print("farm part skipped: needs root")
        else:
            specs = [BoardSpec(f"d{i}", cpu_quota=0.5, rate_mbit=100) for i in range(3)]
            with Farm(specs) as farm:
                ft = tmp / "farm.toml"
                ft.write_text(farm.targets_toml(extra={f"farm-d{i}": {"deploy_dir": f"/tmp/deploy-bench-{os.getpid()}"}
                                                       for i in range(3)}))
                fenv = {**env, "EDGEPRUNE_TARGETS": str(ft)}
                fargs = ["-m", a.farm_model, "--ratio", "0.3", "--epochs", "6", "--format", "onnx", "--precision", "fp32"]
                one_s, rc1, t1 = run(["deploy", "-t", "farm-d0", *fargs, "-o", str(tmp / "f1")],
                                     {**fenv, "EDGEPRUNE_CACHE_DIR": str(tmp / "cache-f1")})
                many = [x for i in range(3) for x in ("-t", f"farm-d{i}")]
                three_s, rc3, t3 = run(["deploy", *many, *fargs, "-o", str(tmp / "f3")],
                                       {**fenv, "EDGEPRUNE_CACHE_DIR": str(tmp / "cache-f3")})
                if rc1 or rc3:
                    sys.exit(f"farm deploy failed:\n{t1[-2000:]}\n{t3[-2000:]}")
                summary = json.loads((tmp / "f3" / "deploy.json").read_text())
                ok = sum(o["ok"] for o in summary["targets"])
                print(f"farm: 1 board {one_s:.1f} s, 3 boards {three_s:.1f} s ({ok}/3 shipped)")
                lines += [
                    "",
                    "### Three farm boards at once against one",
                    "",
                    f"`edgeprune deploy -t farm-d0 -m {a.farm_model} --ratio 0.3 --epochs 6 --format onnx --precision fp32`, then the "
                    "same with `-t farm-d0 -t farm-d1 -t farm-d2`, each into a fresh folder with a fresh cache "
                    "(the model trains first in both). Boards: sshd in network namespaces, 0.5 core and 100 Mbit/s each, on "
                    "this 2-core machine: the torch stages of the three take turns here, measuring and shipping "
                    "overlap.",
                    "",
                    "| | wall s | shipped |",
                    "|---|---:|---:|",
                    f"| 1 board | {one_s:.1f} | 1/1 |",
                    f"| 3 boards at once | {three_s:.1f} ({three_s / one_s:.2f}x the one-board time) | {ok}/3 |",
                ]
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        write_section("deploy", body)


if __name__ == "__main__":
    main()
