"""Does ONNX Runtime's per-node profile fit the latency table better than the stage scales? (issue 20, item 6)

    python benchmarks/bench_node_profile.py mobilenetv2 64 20      # model, input px, random plans

The predictor the loop uses prices each layer from the table (the layer measured alone) with a scale per
resolution stage (edgeprune/latency/predict.py). Here two per-layer alternatives from ORT's own profiler
(``enable_profiling``, 1 thread, 50 runs, the median per node) are tried on the same random plans:

- ``node``: each layer's scale = its in-graph time in the unpruned model / its table entry at full width
  (ORT's fused Conv nodes matched to the model's convs in execution order; the counts must agree);
- ``node2``: the same with a second point per layer from the stage probes' profiles (the unpruned model
  with one stage's groups at their minimum), the scale interpolated between the two widths.

Plans keep channel counts that are multiples of the ``local`` profile's alignment, as the loop's and
``bench_latency.py``'s do. Every predictor is calibrated on the unpruned model measured in the same batch (one point, as in a closed
loop's first round); MAPE (max) against the plans measured on ``local`` through the agent. Writes the
section ``node-profile`` of benchmarks/RESULTS.md (one row per model and size; a new run replaces its row).
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import RESULTS, machine_line, write_section  # noqa: E402

CONV_OPS = ("Conv", "FusedConv")
LINEAR_OPS = ("Gemm", "MatMul", "FusedGemm")
PREDICTORS = ("staged", "table", "node", "node2")


def node_profile(path: Path, shape, work: Path, runs: int = 50) -> list[tuple[str, str, float]]:
    """(node, op type, median ms) of every node ORT ran, in execution order."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.enable_profiling, so.profile_file_prefix = True, str(work / "prof")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(runs):
        sess.run(None, feed)
    by: dict[str, list] = {}
    for ev in json.loads(Path(sess.end_profiling()).read_text()):
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            by.setdefault(ev["name"][:-12], [ev["args"].get("op_name"), []])[1].append(ev["dur"])
    return [(k, op, statistics.median(v) / 1000.0) for k, (op, v) in by.items()]


def matched(nodes, conv_layers, linear_layers) -> list | None:
    """[(layer, in-graph ms)] pairing the model's convs and Linears with ORT's nodes in order; None if the
    counts differ."""
    convs = [ms for _, op, ms in nodes if op in CONV_OPS]
    lins = [ms for _, op, ms in nodes if op in LINEAR_OPS]
    if len(convs) != len(conv_layers) or len(lins) != len(linear_layers):
        return None
    return list(zip(conv_layers, convs, strict=True)) + list(zip(linear_layers, lins, strict=True))


def main() -> None:
    from edgeprune.bench.batch import BatchSession, BatchSettings
    from edgeprune.boards.profiles import load_profile
    from edgeprune.boards.reach import resolve_target
    from edgeprune.latency.layers import candidate_counts, layer_inventory
    from edgeprune.latency.loop import WHOLE, _export, export_stage_probes
    from edgeprune.latency.measure import MICRO, measure_shapes, shapes_to_measure
    from edgeprune.latency.predict import SCALE_LIMITS, Calibration, Predictor, StageFit
    from edgeprune.latency.table import cache_path, load_cached
    from edgeprune.load import load_model
    from edgeprune.prune import ChannelPlan, example_input, prune_

    name, px, n_plans = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    shape = (1, 3, px, px)
    work = Path(tempfile.mkdtemp(prefix="bench-node-profile-"))
    lm = load_model(name, input_shape=shape)
    net, x = lm.module, example_input(shape)
    inv = layer_inventory(net, x)
    align = load_profile("local").alignment("fp32")  # the channel counts the loop would try (bench_latency.py too)
    space = {g.id: candidate_counts(g.channels, multiple=math.lcm(align, g.slices)) for g in inv.prunable}
    full = {g: c[-1] for g, c in space.items()}
    rng = random.Random(0)
    plans = []
    for i in range(n_plans):
        keep = {g: rng.choice(c) for g, c in space.items()}
        plan = ChannelPlan.from_keep(inv.prunable, keep, align=align, input_shape=shape, base=lm.base)
        m = copy.deepcopy(net)
        prune_(m, plan, x=x, verify=False)
        plans.append((keep, _export(m, lm, "local", "onnx", "fp32", work, f"p{i}")))
    full_art = _export(net, lm, "local", "onnx", "fp32", work, "unpruned")
    convs = [lay for lay in inv.layers if lay.shape.kind != "linear"]
    lins = [lay for lay in inv.layers if lay.shape.kind == "linear"]
    pairs = matched(node_profile(full_art, shape, work), convs, lins)
    if pairs is None:
        sys.exit(f"{name}: ORT's conv/linear nodes do not pair up with the model's layers")
    sf = StageFit.plan(inv.layers, space)
    probe_arts = export_stage_probes(sf, lm, full, inv.prunable, profile_name="local", fmt="onnx",
                                     precision="fp32", folder=work, align=align, prefix="probe-")
    whole = BatchSettings(**{**WHOLE.__dict__, "threads": 1})
    with BatchSession(resolve_target("local"), settings=BatchSettings(threads=1)) as board:
        first = board.measure({"unpruned": full_art, **probe_arts}, settings=whole)
        table = load_cached(board.identity(first), fmt="onnx", precision="fp32")
        missing = table.missing(shapes_to_measure(inv.layers, space))
        if missing:
            measure_shapes(board, table, missing, settings=BatchSettings(**{**MICRO.__dict__, "threads": 1}))
            table.save(cache_path(table))
        base = first.baseline.p50_ms if first.baseline else 0.0
        staged = Predictor(inv.layers, table)
        sf.apply(staged, full, sf.measured(first.timings), first.timings["unpruned"].p50_ms, base)
        raw = Predictor(inv.layers, table)
        ratio = {lay.name: ms / max(raw.layer_ms(lay, full), 1e-9) for lay, ms in pairs}
        single = sum(ms for _, ms in pairs) / sum(raw.layer_ms(lay, full) for lay, _ in pairs)
        lo, hi = SCALE_LIMITS
        node_scale = {k: min(max(v / single, lo), hi) for k, v in ratio.items()}
        # node2: a second (table ms, in-graph ms) point per layer from each stage probe's own profile
        points = {lay.name: [(raw.layer_ms(lay, full), ms)] for lay, ms in pairs}
        for k, keep in sf.probes.items():
            art = probe_arts.get(sf.probe_name(k))
            got = matched(node_profile(art, shape, work), convs, lins) if art else None
            for lay, ms in got or []:
                t = raw.layer_ms(lay, {**full, **keep})
                if abs(t - points[lay.name][0][0]) > 1e-9:
                    points[lay.name].append((t, ms))

        class TwoWidths(Predictor):
            def layer_ms(self, layer, keep):
                t = Predictor.layer_ms(self, layer, keep)
                ps = sorted(points[layer.name])
                (t0, m0), (t1, m1) = ps[0], ps[-1]
                r0, r1 = m0 / max(t0, 1e-12), m1 / max(t1, 1e-12)
                f = min(max((t - t0) / max(t1 - t0, 1e-12), 0.0), 1.0) if t1 > t0 else 0.0
                return t * (r0 + f * (r1 - r0))

        errs: dict[str, list[float]] = {k: [] for k in PREDICTORS}
        for start in range(0, len(plans), 10):  # 10 plans + the unpruned model per batch
            part = plans[start:start + 10]
            res = board.measure({"unpruned": full_art, **{str(start + j): p[1] for j, p in enumerate(part)}},
                                settings=whole)
            m_full = res.timings["unpruned"].p50_ms
            preds = {"table": Predictor(inv.layers, table, calibration=Calibration(base_ms=base)),
                     "staged": Predictor(inv.layers, table, calibration=Calibration(base_ms=base),
                                         layer_scale=staged.layer_scale),
                     "node": Predictor(inv.layers, table, calibration=Calibration(base_ms=base),
                                       layer_scale=node_scale),
                     "node2": TwoWidths(inv.layers, table, calibration=Calibration(base_ms=base))}
            for p in preds.values():
                p.calibration.add(p.table_ms(full), m_full)
            for j, (keep, _) in enumerate(part):
                measured = res.timings[str(start + j)].p50_ms
                for k, p in preds.items():
                    errs[k].append(abs(p.predict(keep) - measured) / measured)
    for k, v in errs.items():
        print(f"{k}: MAPE {100 * statistics.mean(v):.1f} % (max {100 * max(v):.1f} %)")
    row = (f"| {name} | {px} px | {len(plans)} | "
           + " | ".join(f"{100 * statistics.mean(errs[k]):.1f} % ({100 * max(errs[k]):.1f} %)" for k in PREDICTORS)
           + f" | {open('/proc/loadavg').read().split()[0]} |")
    m = re.search(r"<!-- node-profile:start -->(.*?)<!-- node-profile:end -->", RESULTS.read_text(), re.S)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in (m.group(1) if m else "").splitlines()
            if line.startswith("| ") and not line.startswith("| model")}
    rows[(name, f"{px} px")] = row
    write_section("node-profile", "\n".join([
        "## Latency table fitted with ONNX Runtime's per-node profile (issue 20, item 6; `bench_node_profile.py`)",
        "",
        f"`.venv/bin/python benchmarks/bench_node_profile.py MODEL PX 20` ({machine_line()}; ONNX Runtime fp32, "
        "1 thread, target `local`; load: the 1-minute load average at the end). MAPE (max) over random plans, "
        "each predictor calibrated on the unpruned model measured in the same batch; see the script's docstring.",
        "",
        "| model | input | plans | table + stage scales (the loop's) | table, one scale | per-node scales "
        "| per-node, two widths | load |",
        "|---|---|---|---|---|---|---|---|",
        *rows.values()]))


if __name__ == "__main__":
    main()
