"""edgeprune's latency-aware plans against Torch-Pruning 1.6.1 (uniform and global magnitude).

Torch-Pruning (TP) prunes by a ratio and rounds kept counts to ``round_to``;
its "speed up" is a MAC ratio. For each model, TP config (uniform or
global magnitude, L2 group importance, round_to 8 and 16, ``--ratio``), with
the same protected layers as edgeprune (the stem and the output layers):

1. **equal MACs**: edgeprune's allocation (measured table on this board) for
   the largest budget whose plan has no more MACs than TP's model; both models
   and the unpruned one measured in one interleaved batch. Goal: edgeprune 20 %
   faster on ONNX Runtime;
2. **equal measured latency**: ``prune --latency-budget`` = TP's measured p50
   (closed loop on the board); parameters kept by each;
3. **accuracy without fine-tuning at equal measured latency**, on digits-cnn
   (sklearn digits test split): TP's model vs edgeprune's (L1 and Taylor
   importance). The accuracy after fine-tuning belongs to the fine-tuning issue.

ONNX Runtime fp32, ``--target local``, 1 thread. Writes the ``vs-torchpruning``
section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_vs_torchpruning.py               # ~1 h on an idle machine
    .venv/bin/python benchmarks/bench_vs_torchpruning.py --quick --no-write
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine_line, write_section  # noqa: E402


def tp_prune(net, shape, *, global_pruning: bool, round_to: int, ratio: float, protected_layers):
    """Torch-Pruning's MagnitudePruner on a copy of ``net``, same protected layers as edgeprune."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(net).eval()
    mods = dict(model.named_modules())
    pruner = tp.pruner.MagnitudePruner(
        model, torch.zeros(*shape), importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, global_pruning=global_pruning, round_to=round_to,
        ignored_layers=[mods[n] for n in protected_layers if n in mods],
    )
    pruner.step()
    return model.eval()


def protected_layer_names(inv) -> list[str]:
    return sorted({n for g in inv.groups if not g.prunable for n in g.layers})


def layer_macs(inv, keep) -> int:
    return sum(lay.shape_under(keep).macs * lay.calls for lay in inv.layers)


def run_model(name, shape, ratio, round_tos, threads, work: Path, digits: bool) -> list[dict]:
    import edgeprune
    from edgeprune.bench.batch import BatchSession, BatchSettings
    from edgeprune.boards.profiles import load_profile
    from edgeprune.boards.reach import resolve_target
    from edgeprune.errors import BudgetError
    from edgeprune.export.onnx import export_onnx
    from edgeprune.latency.allocate import allocate, channel_importance
    from edgeprune.latency.layers import candidate_counts, layer_inventory
    from edgeprune.latency.loop import WHOLE, _export, export_stage_probes
    from edgeprune.latency.measure import MICRO, measure_shapes, shapes_to_measure
    from edgeprune.latency.predict import Calibration, Predictor, StageFit
    from edgeprune.latency.table import cache_path, load_cached
    from edgeprune.load import load_model
    from edgeprune.models.stats import count_macs_params
    from edgeprune.prune import ChannelPlan, example_input, prune_

    lm = load_model(name, input_shape=shape)
    net, x = lm.module, example_input(shape)
    inv = layer_inventory(net, x)
    protected = protected_layer_names(inv)
    multiple = load_profile("local").alignment("fp32")
    space = {g.id: candidate_counts(g.channels, multiple=math.lcm(multiple, g.slices)) for g in inv.prunable}
    full = {g: c[-1] for g, c in space.items()}
    scores = channel_importance(net, x, inv.groups, criterion="l1")
    macs0, params0 = count_macs_params(net, shape)
    fixed_macs = macs0 - layer_macs(inv, full)
    whole = BatchSettings(**{**WHOLE.__dict__, "threads": threads})
    rows = []
    full_art = _export(net, lm, "local", "onnx", "fp32", work, f"{name}-unpruned")
    sf = StageFit.plan(inv.layers, space)  # the loop's stage probes: the predictor the loop plans with
    probe_arts = export_stage_probes(sf, lm, full, inv.prunable, profile_name="local", fmt="onnx",
                                     precision="fp32", folder=work, align=multiple, prefix=f"{name}-")
    with BatchSession(resolve_target("local"), settings=BatchSettings(threads=threads)) as board:
        first = board.measure({"unpruned": full_art, **probe_arts}, settings=whole)
        table = load_cached(board.identity(first), fmt="onnx", precision="fp32")
        missing = table.missing(shapes_to_measure(inv.layers, space))
        if missing:
            measure_shapes(board, table, missing, settings=BatchSettings(**{**MICRO.__dict__, "threads": threads}))
            table.save(cache_path(table))
        base = first.baseline.p50_ms if first.baseline else 0.0
        pred = Predictor(inv.layers, table, calibration=Calibration(base_ms=base))
        sf.apply(pred, full, sf.measured(first.timings), first.timings["unpruned"].p50_ms, base)
        pred.calibration.add(pred.table_ms(full), first.timings["unpruned"].p50_ms)
        for global_pruning in (False, True):
            for round_to in round_tos:
                cfg = f"TP {'global' if global_pruning else 'uniform'} magnitude, round_to {round_to}"
                tpm = tp_prune(net, shape, global_pruning=global_pruning, round_to=round_to, ratio=ratio,
                               protected_layers=protected)
                tp_macs, tp_params = count_macs_params(tpm, shape)
                tp_art = export_onnx(tpm, shape, work / f"{name}-tp-{int(global_pruning)}-{round_to}.onnx")
                # 1. equal MACs: the largest budget whose plan has at most TP's MACs
                lo, hi, best = 0.0, pred.predict(full), None
                for _ in range(30):
                    mid = (lo + hi) / 2
                    a = allocate(space, scores, pred, mid)
                    if a.feasible and fixed_macs + layer_macs(inv, a.keep) <= tp_macs:
                        best, lo = a, mid
                    else:
                        hi = mid
                row = {"model": name, "config": cfg, "tp_macs": tp_macs, "tp_params": tp_params,
                       "macs0": macs0, "params0": params0}
                if best is not None:
                    plan = ChannelPlan.from_keep(inv.prunable, best.keep, align=multiple, input_shape=shape,
                                                 base=lm.base)
                    epm = copy.deepcopy(net)
                    prune_(epm, plan, x=x, verify=False)
                    ep_macs, _ = count_macs_params(epm, shape)
                    ep_art = export_onnx(epm, shape, work / f"{name}-ep-macs-{int(global_pruning)}-{round_to}.onnx")
                    res = board.measure({"unpruned": full_art, "tp": tp_art, "ep": ep_art}, settings=whole)
                    row.update(unpruned_ms=res.timings["unpruned"].p50_ms, tp_ms=res.timings["tp"].p50_ms,
                               ep_macs=ep_macs, ep_ms_equal_macs=res.timings["ep"].p50_ms,
                               busy=res.other_busy_cores)
                else:
                    res = board.measure({"unpruned": full_art, "tp": tp_art}, settings=whole)
                    row.update(unpruned_ms=res.timings["unpruned"].p50_ms, tp_ms=res.timings["tp"].p50_ms,
                               ep_macs=None, ep_ms_equal_macs=None, busy=res.other_busy_cores)
                # 2. equal measured latency: the closed loop asked for TP's speedup over the unpruned model,
                # measured in the same batch (raw p50s minutes apart drift 30-40 % on this VM; ratios hold)
                row["tp_speedup"] = row["unpruned_ms"] / row["tp_ms"]
                out = work / f"{name}-ep-lat-{int(global_pruning)}-{round_to}"
                for importance in (["l1", "taylor"] if digits else ["l1"]):
                    try:
                        s = edgeprune.prune_model(name, target="local", output=out / importance,
                                                  speedup=row["tp_speedup"], threads=threads, fmt="onnx",
                                                  precision="fp32", importance=importance, input_shape=shape)
                    except BudgetError:
                        s = json.loads((out / importance / "summary.json").read_text())
                    lat = s["latency"]
                    chosen = next(r for r in lat["rounds"] if r["round"] == lat["chosen_round"])
                    row[f"ep_{importance}_ms"] = chosen["measured_ms"]
                    row[f"ep_{importance}_speedup"] = chosen.get("speedup_same_batch")
                    row[f"ep_{importance}_met"] = lat["met"]
                    row[f"ep_{importance}_params"] = s["params_after"]
                    if digits:
                        row[f"ep_{importance}_acc"] = s.get("accuracy_after")
                if digits:
                    from edgeprune.models.digits import digits_accuracy

                    row["tp_acc"] = digits_accuracy(tpm)
                    row["acc0"] = digits_accuracy(net)
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
    return rows


def report(rows, cmd, ratio) -> str:
    lines = [
        f"## edgeprune vs Torch-Pruning 1.6.1 (ONNX Runtime fp32, target `local`, TP ratio {ratio})",
        "",
        f"Command: `{cmd}`. Machine: {machine_line()}.",
        "TP: `MagnitudePruner`, `GroupMagnitudeImportance(p=2)`, the same protected layers as edgeprune (stem, "
        "outputs). *Equal MACs*: edgeprune's plan for the largest budget whose MACs do not exceed TP's, measured "
        "with TP's model and the unpruned one in one interleaved batch (edgeprune's predictor with its stage "
        "scales, as the loop plans). *Equal latency*: `prune --speedup <TP's speedup over the unpruned model, "
        "measured in that batch>` (closed loop, up to 3 rounds, each round judged beside the unpruned model); "
        "`met` = at least TP's speedup.",
        "",
        "| model | TP config | TP MMACs | edgeprune MMACs | TP ms | edgeprune ms (equal MACs) | edgeprune faster by "
        "| TP params (speedup) | edgeprune params (equal latency; speedup, met) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        faster = (f"{100 * (r['tp_ms'] / r['ep_ms_equal_macs'] - 1):+.0f} %" if r.get("ep_ms_equal_macs") else "n/a")
        ep_macs = f"{r['ep_macs'] / 1e6:.0f}" if r.get("ep_macs") else "n/a"
        ep_ms = f"{r['ep_ms_equal_macs']:.3f}" if r.get("ep_ms_equal_macs") else "n/a"
        lines.append(
            f"| {r['model']} | {r['config']} | {r['tp_macs'] / 1e6:.0f} | {ep_macs} | {r['tp_ms']:.3f} | {ep_ms} | "
            f"{faster} | {r['tp_params']:,} ({r['tp_speedup']:.2f}x) | {r['ep_l1_params']:,} "
            f"({r.get('ep_l1_speedup') or 0:.2f}x, "
            f"{'met' if r['ep_l1_met'] else 'NOT met'}) |"
        )
    acc = [r for r in rows if "tp_acc" in r]
    if acc:
        lines += [
            "",
            "Accuracy without fine-tuning at equal measured latency (digits-cnn, sklearn digits test split, "
            f"unpruned {acc[0]['acc0']:.3f}):",
            "",
            "| TP config | TP accuracy | edgeprune L1 accuracy (met) | edgeprune Taylor accuracy (met) |",
            "|---|---|---|---|",
        ]
        for r in acc:
            lines.append(
                f"| {r['config']} | {r['tp_acc']:.3f} | {r['ep_l1_acc']:.3f} ({'yes' if r['ep_l1_met'] else 'no'}) | "
                f"{r['ep_taylor_acc']:.3f} ({'yes' if r['ep_taylor_met'] else 'no'}) |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small settings: does it run? (minutes)")
    ap.add_argument("--models", default="mobilenetv2,resnet18")
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--round-to", default="8,16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-digits", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    shape = (1, 3, 224, 224)
    models, round_tos = args.models.split(","), [int(r) for r in args.round_to.split(",")]
    if args.quick:
        shape, models, round_tos = (1, 3, 64, 64), ["resnet18"], [16]
    os.environ.setdefault("EDGEPRUNE_CACHE_DIR", tempfile.mkdtemp(prefix="edgeprune-bench-tp-"))
    cmd = "python benchmarks/bench_vs_torchpruning.py " + " ".join(sys.argv[1:])
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-tp-") as tmp:
        for name in models:
            rows += run_model(name, shape, args.ratio, round_tos, args.threads, Path(tmp), digits=False)
        if not args.no_digits:
            rows += run_model("digits-cnn", (1, 1, 16, 16), args.ratio, round_tos, args.threads, Path(tmp),
                              digits=True)
    text = report(rows, cmd, args.ratio) + f"\n\n({(time.perf_counter() - t0) / 60:.1f} min)"
    print(text)
    if not args.no_write:
        write_section("vs-torchpruning", text)


if __name__ == "__main__":
    main()
