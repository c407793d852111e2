"""mAP of the reference detector at 0.8x / 0.6x / 0.4x of its measured latency: edgeprune against Torch-Pruning.

Issue 19's figures. The model is ``yolov8n-fmnist-det`` (Ultralytics' real YOLOv8n, nc=10, trained on
the semi-synthetic fmnist-det by ``benchmarks/train_reference.py``), at its 160 px, on ``--target local``
(ONNX Runtime fp32, 1 thread). For each budget factor F (a fraction of the unpruned model's latency
measured here):

- **edgeprune**: ``edgeprune.prune_model(..., speedup=1/F)``, the closed loop a user runs
  (``edgeprune prune --speedup``): latency table measured on the board, allocation, prune, export,
  measure, correct; L1 importance; the layers edgeprune keeps whole are its own decision.
- **Torch-Pruning**: its own YOLOv8 recipe (``examples/yolov8/yolov8_pruning.py`` in
  VainF/Torch-Pruning, copied here as :class:`C2f_v2` / :func:`tp_prune`): every C2f replaced by
  C2f_v2 (its ``cv1`` split in two convs so that both halves can be pruned), Ultralytics'
  ``initialize_weights``, L2 magnitude group importance, ``round_to=8``, the whole Detect head
  ignored. One shot, not the example's 16 iterative steps (each with its own fine-tune): the
  same fine-tuning budget for both is the comparison asked for. The ratio is searched (bisection on
  this script's own interleaved timing against the unpruned file, :mod:`_interleave`) for the
  largest model whose measured latency is at most F.
  Ultralytics 8.4's Detect returns a dict that TP's dependency graph cannot follow (IndexError
  in its concat index mapping), so while TP traces, Detect returns what it returned in the 8.0
  versions the example was written for: the per-level ``cat(cv2, cv3)`` maps.

Then both go through the same steps, by the same functions:

1. BatchNorm recalibration on 50 training batches, then fine-tuning for ``--steps`` steps
   (``edgeprune.finetune.loop.train``: deploy's defaults, SGD Nesterov lr 0.01, batch 64,
   flips and shifts, distillation from the unpruned original on the head's raw outputs plus
   Ultralytics' v8DetectionLoss on the labels, early stopping on validation mAP, best kept);
2. ``edgeprune.export_model`` to ONNX fp32 and to full-INT8 TFLite (LiteRT), with its own
   accuracy check: mAP50-95 by pycocotools on 500 images of fmnist-det's test split (never
   trained on nor used for early stopping), the same images for every file;
3. each file's latency against the unpruned file of its runtime, by :mod:`_interleave`
   (30 alternating rounds; the same loop for every method), in a stage of its own
   (``--stage latency``) to run when nothing else does.

Work is kept in ``--work`` (default ``<cache>/bench-detect-vs-tp``) one JSON per step, so
that a run resumes, and ``--stage finetune --method tp`` in one shell and ``--method edgeprune``
in another use both cores. Writes the ``detect-vs-tp`` section of benchmarks/RESULTS.md.

    python benchmarks/bench_detect_vs_tp.py                      # every stage (~1.5 h on 2 idle cores)
    python benchmarks/bench_detect_vs_tp.py --stage prune        # latency-sensitive: run it alone
    python benchmarks/bench_detect_vs_tp.py --stage finetune --method tp &
    python benchmarks/bench_detect_vs_tp.py --stage finetune --method edgeprune
    python benchmarks/bench_detect_vs_tp.py --stage export --int8-factors 0.6
    python benchmarks/bench_detect_vs_tp.py --stage latency      # alone again
    python benchmarks/bench_detect_vs_tp.py --stage write
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _interleave import interleaved_ratio  # noqa: E402
from _results import machine_line, write_section  # noqa: E402

NAME = "yolov8n-fmnist-det"
SHAPE = (1, 3, 160, 160)
FACTORS = (1.0, 0.8, 0.6, 0.4)  # 1.0: the unpruned control only
METHODS = ("edgeprune", "tp", "edgeprune_l1", "unpruned")
# edgeprune_l1: edgeprune's rule before 2026-12-04 (commit 7040b8a), which compared a detector's groups by their
# magnitudes, each group worth 1; kept as measured then (its prune stage is not rerun by this script)
LABELS = {"edgeprune": "edgeprune", "tp": "Torch-Pruning (YOLOv8 recipe)",
          "edgeprune_l1": "edgeprune, groups compared by magnitude (before 2026-12-04)",
          "unpruned": "unpruned, fine-tuned the same (control)"}
# the control: the unpruned reference through the same fine-tuning and export, at budget 1.0 (``--factors 1.0``)


def _load() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def _save(path: Path, obj: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)
    return obj


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def reference():
    """The trained reference as a LoadedModel (what ``--model yolov8n-fmnist-det`` loads)."""
    from edgeprune.load import load_model

    lm = load_model(NAME)
    if not lm.pretrained:
        sys.exit(f"{NAME} has no trained weights here: python benchmarks/train_reference.py --model {NAME}")
    return lm


_PRISTINE = {}


def pristine():
    """The reference as Ultralytics builds it (its C2f blocks as they are; edgeprune's pruning rewrites
    them in place into two half convs, which TP's recipe would not find), with the trained weights."""
    if "m" not in _PRISTINE:
        from edgeprune.models import build

        _PRISTINE["m"] = build(NAME, pretrained=True).eval()
    return _PRISTINE["m"]


# --- Torch-Pruning's YOLOv8 recipe (examples/yolov8/yolov8_pruning.py, VainF/Torch-Pruning) -------------

def _c2f_v2_class():
    import torch
    from torch import nn
    from ultralytics.nn.modules import Bottleneck, Conv

    class C2f_v2(nn.Module):  # noqa: N801 - the example's name
        """C2f with its ``cv1`` split into ``cv0`` and ``cv1`` (TP's example, verbatim in substance)."""

        def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
            super().__init__()
            self.c = int(c2 * e)
            self.cv0 = Conv(c1, self.c, 1, 1)
            self.cv1 = Conv(c1, self.c, 1, 1)
            self.cv2 = Conv((2 + n) * self.c, c2, 1)
            self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0)
                                   for _ in range(n))

        def forward(self, x):
            y = [self.cv0(x), self.cv1(x)]
            y.extend(m(y[-1]) for m in self.m)
            return self.cv2(torch.cat(y, 1))

    return C2f_v2


def _transfer(c2f, v2) -> None:
    v2.cv2, v2.m = c2f.cv2, c2f.m
    sd, sd2 = c2f.state_dict(), v2.state_dict()
    w = sd["cv1.conv.weight"]
    half = w.shape[0] // 2
    sd2["cv0.conv.weight"], sd2["cv1.conv.weight"] = w[:half], w[half:]
    for k in ("weight", "bias", "running_mean", "running_var"):
        b = sd[f"cv1.bn.{k}"]
        sd2[f"cv0.bn.{k}"], sd2[f"cv1.bn.{k}"] = b[:half], b[half:]
    for k in sd:
        if not k.startswith("cv1."):
            sd2[k] = sd[k]
    for attr in dir(c2f):  # the layer's routing attributes (f, i, type, np)
        value = getattr(c2f, attr)
        if not callable(value) and "_" not in attr:
            setattr(v2, attr, value)
    v2.load_state_dict(sd2)


def replace_c2f(module) -> None:
    from ultralytics.nn.modules import C2f

    cls = _c2f_v2_class()
    for name, child in module.named_children():
        if isinstance(child, C2f):
            b = child.m[0]
            shortcut = b.cv1.conv.in_channels == b.cv2.conv.out_channels and getattr(b, "add", False)
            v2 = cls(child.cv1.conv.in_channels, child.cv2.conv.out_channels, n=len(child.m), shortcut=shortcut,
                     g=b.cv2.conv.groups, e=child.c / child.cv2.conv.out_channels)
            _transfer(child, v2)
            setattr(module, name, v2)
        else:
            replace_c2f(child)


def tp_prune(module, ratio: float):
    """A pruned copy of ``module`` by TP's recipe at ``ratio`` (deterministic: same weights, same model)."""
    import torch
    import torch_pruning as tp
    from ultralytics.nn.modules import Detect
    from ultralytics.utils.torch_utils import initialize_weights

    model = copy.deepcopy(module).cpu()
    replace_c2f(model)
    initialize_weights(model)  # BN eps 1e-3 / momentum 0.03 for the new convs, as the example does
    model.eval()
    heads = [m for m in model.modules() if isinstance(m, Detect)]

    def raw(self, x):
        return [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]

    for h in heads:
        h.forward = types.MethodType(raw, h)
    try:
        pruner = tp.pruner.MagnitudePruner(
            model, torch.zeros(*SHAPE), importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio, round_to=8, ignored_layers=heads,
            output_transform=lambda out: sum(t.sum() for t in out))
        pruner.step()
    finally:
        for h in heads:
            del h.forward
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


def _macs(module) -> int:
    import torch
    import torch_pruning as tp

    return int(tp.utils.count_ops_and_params(copy.deepcopy(module).eval(), torch.zeros(*SHAPE))[0])


# --- stages -------------------------------------------------------------------------------------------

def _export(lm, out: Path, *, fmt: str, precision: str) -> dict:
    """``edgeprune.export_model`` of ``lm``; the final file, its mAP on the test images, wall, peak RSS."""
    import edgeprune

    t0 = time.perf_counter()
    rep = edgeprune.export_model(lm, target="local", output=out, fmt=fmt, precision=precision, data="fmnist-det")
    acc = rep.accuracy or {}
    final = rep.final
    return {"path": str(final.path), "map50_95": (acc.get("artifacts") or {}).get(final.step),
            "model_map50_95": acc.get("model"), "original_map50_95": acc.get("original"),
            "samples": acc.get("samples"), "heldout": acc.get("heldout"), "seconds": round(time.perf_counter() - t0, 1)}


def stage_base(work: Path, ref) -> dict:
    got = _read(work / "base.json")
    if got:
        return got
    fp32 = _export(ref, work / "base" / "fp32", fmt="onnx", precision="fp32")
    return _save(work / "base.json", {"fp32": fp32, "macs": _macs(ref.module)})


def stage_base_int8(work: Path, ref) -> dict:
    base = stage_base(work, ref)
    if "int8" not in base:
        base["int8"] = _export(ref, work / "base" / "int8", fmt="tflite", precision="int8")
        _save(work / "base.json", base)
    return base


def _ratio(a, b) -> dict:
    return interleaved_ratio(Path(a), Path(b), SHAPE)


def choose(tries: list[dict], factor: float) -> dict:
    """The tried ratio TP's model is judged at: the smallest ratio (the largest model) measured at most
    ``factor``; when none is, the fastest tried (latency does not fall monotonically with the ratio:
    thin layers of 8 channels ran slower here than thicker ones)."""
    ok = [t for t in tries if t["measured"] <= factor]
    best = min(ok, key=lambda t: t["ratio"]) if ok else min(tries, key=lambda t: t["measured"])
    return {"ratio": best["ratio"], "measured": best["measured"], "reached": bool(ok), "tries": tries}


def search_tp(ref, base_onnx: str, factor: float, work: Path, *, iterations: int = 7) -> dict:
    """Bisection on TP's ratio against this script's own timing (see :func:`choose`)."""
    from edgeprune.export.onnx import export_onnx

    lo, hi = 0.0, 0.9  # ratio lo: too slow (or unpruned); hi: fast enough
    tries = []
    for _ in range(iterations):
        mid = round((lo + hi) / 2, 4)
        path = export_onnx(tp_prune(pristine(), mid), SHAPE, work / f"tp-search-{mid}.onnx")
        r = _ratio(path, base_onnx)["ratio"]
        tries.append({"ratio": mid, "measured": round(r, 4)})
        print(f"  tp {factor}: ratio {mid} -> {r:.3f} of the unpruned", flush=True)
        lo, hi = (lo, mid) if r <= factor else (mid, hi)
    return choose(tries, factor)


def stage_prune(work: Path, ref, factors, methods) -> None:
    import edgeprune

    base = stage_base(work, ref)
    for f in factors:
        if "unpruned" in methods and f == 1.0 and not _read(work / "unpruned-1.0" / "prune.json"):
            _save(work / "unpruned-1.0" / "prune.json", {"note": "not pruned: the control", "met": True})
        if f >= 1.0:
            continue
        if "edgeprune" in methods and not _read(work / f"edgeprune-{f}" / "prune.json"):
            t0 = time.perf_counter()
            load0 = _load()
            try:
                summary = edgeprune.prune_model(ref, target="local", output=work / f"edgeprune-{f}" / "prune",
                                                speedup=round(1 / f, 4), data="fmnist-det", threads=1,
                                                fmt="onnx", precision="fp32")
                met = True
            except edgeprune.errors.BudgetError:
                summary = json.loads((work / f"edgeprune-{f}" / "prune" / "summary.json").read_text())
                met = False
            _save(work / f"edgeprune-{f}" / "prune.json",
                  {"seconds": round(time.perf_counter() - t0, 1), "met": met, "load": [load0, _load()],
                   "latency": summary.get("latency"), "macs_kept": summary.get("macs_kept"),
                   "model": str(work / f"edgeprune-{f}" / "prune" / "model.ept")})
        tp_info = _read(work / f"tp-{f}" / "prune.json")
        if tp_info and "reached" not in tp_info:  # chosen by an earlier rule: choose again from its tries
            _save(work / f"tp-{f}" / "prune.json", {**tp_info, **choose(tp_info["tries"], f)})
        if "tp" in methods and not tp_info:
            t0 = time.perf_counter()
            got = search_tp(ref, base["fp32"]["path"], f, work / f"tp-{f}")
            _save(work / f"tp-{f}" / "prune.json", {**got, "seconds": round(time.perf_counter() - t0, 1)})


def student(method: str, f: float, ref, work: Path):
    """The pruned model of ``method`` at ``f`` as a LoadedModel whose original is the reference."""
    from edgeprune.load import load_model
    from edgeprune.models import LoadedModel

    info = _read(work / f"{method}-{f}" / "prune.json")
    if info is None:
        sys.exit(f"{method} {f}: run --stage prune first")
    if method.startswith("edgeprune"):
        return load_model(info["model"])
    if method == "unpruned":
        return load_model(NAME)  # a fresh copy with the trained weights
    module = tp_prune(pristine(), info["ratio"])
    return LoadedModel(module=module, input_shape=SHAPE, name=f"{NAME}-tp{info['ratio']}",
                       source=f"torch-pruning ratio {info['ratio']}", task="detect", base=None,
                       normalize=ref.normalize, num_classes=ref.num_classes, original=ref)


def stage_finetune(work: Path, ref, factors, methods, steps: int) -> None:
    import torch

    from edgeprune.data import DataOptions
    from edgeprune.finetune.loop import Recipe, recalibrate_batchnorm, train
    from edgeprune.finetune.objectives import objective_for
    from edgeprune.finetune.run import BN_BATCHES
    from edgeprune.load import split_for_model

    torch.set_num_threads(1)
    split = split_for_model(ref, DataOptions(data="fmnist-det"))
    recipe = Recipe(steps=steps, augment="flip+shift").resolved()  # deploy's defaults (FinetuneOptions)
    teacher = ref.module.eval()
    for f in factors:
        for method in methods:
            out = work / f"{method}-{f}"
            if _read(out / "finetune.json") or not _read(out / "prune.json"):
                continue
            lm = student(method, f, ref, work)
            module = lm.module
            objective = objective_for(lm, teacher=teacher, labelled=True)
            torch.manual_seed(0)
            t0 = time.perf_counter()
            pruned = objective.measure(module, split.val)["map50_95"]
            recalibrate_batchnorm(module, split.train, batches=BN_BATCHES, batch_size=recipe.batch_size)
            recal = objective.measure(module, split.val)["map50_95"]
            load0 = _load()
            res = train(module, split, recipe=recipe, teacher=teacher, objective=objective,
                        ckpt_dir=out / "checkpoints", key=f"{method}-{f}-{steps}")
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, out / "finetuned.pt")
            _save(out / "finetune.json", {
                "val_map50_95": {"pruned": pruned, "bn_recalibrated": recal,
                                 "finetuned": (res.get("best") or {}).get("metric")},
                "steps": res["steps"], "best": res.get("best"), "stopped": res.get("stopped"),
                "images_per_s": res.get("images_per_s"), "train_seconds": res.get("train_seconds"),
                "seconds": round(time.perf_counter() - t0, 1), "load": [load0, _load()],
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
            print(f"{method} {f}: fine-tuned {res['steps']} steps, {res.get('images_per_s')} img/s", flush=True)


def finetuned(method: str, f: float, ref, work: Path):
    from edgeprune.safeload import torch_load

    lm = student(method, f, ref, work)
    lm.module.load_state_dict(torch_load(work / f"{method}-{f}" / "finetuned.pt"))
    return lm


def stage_export(work: Path, ref, factors, methods, int8_factors) -> None:
    stage_base_int8(work, ref) if int8_factors else stage_base(work, ref)  # the unpruned files to time against
    for f in factors:
        for method in methods:
            out = work / f"{method}-{f}"
            if not _read(out / "finetune.json"):
                continue
            got = _read(out / "export.json") or {}
            kinds = ["fp32"] + (["int8"] if f in int8_factors else [])
            for kind in kinds:
                if kind in got:
                    continue
                lm = finetuned(method, f, ref, work)
                fmt, prec = ("onnx", "fp32") if kind == "fp32" else ("tflite", "int8")
                t0 = time.perf_counter()
                fig = _export(lm, out / kind, fmt=fmt, precision=prec)
                fig["macs"] = _macs(lm.module)
                fig["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
                got[kind] = fig
                _save(out / "export.json", got)
                print(f"{method} {f} {kind}: mAP50-95 {fig['map50_95']} ({time.perf_counter() - t0:.0f} s)", flush=True)


def stage_latency(work: Path, factors, methods) -> None:
    """Every exported file against the unpruned file of its runtime, one after another (run it alone)."""
    base = _read(work / "base.json") or {}
    for f in factors:
        for method in methods:
            path = work / f"{method}-{f}" / "export.json"
            got = _read(path) or {}
            for kind, fig in got.items():
                if "latency" in fig or kind not in base:
                    continue
                fig["latency"] = {**_ratio(fig["path"], base[kind]["path"]), "load": _load()}
                _save(path, got)
                print(f"{method} {f} {kind}: {fig['latency']['ratio']:.3f} of the unpruned", flush=True)


READING = """Reading (the 2026-12-04 run; the figures above are regenerated by `--stage write`, this paragraph is not):

- **edgeprune is ahead at every budget**: +1.45 / +4.09 / +6.60 test mAP50-95 points over Torch-Pruning's recipe
  at 0.8x / 0.6x / 0.4x. Measured by the same loop, the two files are equally fast at 0.8x and 0.6x (0.741 vs
  0.746, 0.546 vs 0.543); at 0.4x TP's recipe, which keeps the Detect head whole, cannot get under 0.42x (its
  fastest tried, ratio 0.87; thinner layers ran slower), and edgeprune's file is faster too (0.365).
- **Within 1 point of the unpruned model at 0.6x**: 0.3210 against the unpruned 0.3111 (+0.99), and against the
  control (the unpruned model fine-tuned the same 150 steps: 0.3242) -0.32. The reference is a short 6-epoch
  training, so the same fine-tuning improves it too; the control row is the fair comparison: edgeprune is
  +0.04 / -0.32 / -2.71 points from it, TP -1.41 / -4.41 / -9.31.
- Before fine-tuning, edgeprune's 0.8x model already keeps val 0.3514 of 0.3576: the allocation compares groups by
  the detector's own loss on labelled boxes. Compared by magnitudes (the rule before 2026-12-04, 0.8x row) it cut
  the P3 neck output to 16 of 64 channels and fell to 0.0002 before fine-tuning and 0.2769 after, 3.3 points behind TP.
- The loop said met at 0.93-0.95 of each budget on its own figure; this script's independent loop puts the files at
  0.91-0.93 of the budget (0.741 / 0.546 / 0.365 of the unpruned).
- **LiteRT full INT8** of the same models (pruned for ONNX Runtime fp32, not searched again for LiteRT) loses 1.9-3.3
  points against their fp32 files, the unpruned model 3.0 (0.3111 -> 0.2813); edgeprune stays ahead of TP in INT8 at
  every budget (0.2960 / 0.2927 / 0.2666 against 0.2770 / 0.2543 / 0.2126).
- No GPU was lent to this task: every figure is CPU, one thread."""


def _cell(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def stage_write(work: Path, factors, steps: int) -> None:
    base = _read(work / "base.json")
    if base is None:
        sys.exit("nothing measured yet")
    b32 = base["fp32"]
    rows = []
    for f in factors:
        for method in METHODS:
            d = work / f"{method}-{f}"
            pr, ft, ex = _read(d / "prune.json"), _read(d / "finetune.json"), _read(d / "export.json") or {}
            if not (pr and ft and "latency" in (ex.get("fp32") or {})):
                continue
            e32, e8 = ex["fp32"], ex.get("int8")
            int8 = "-"
            if e8 and base.get("int8") and "latency" in e8:
                loss = 100 * (e32["map50_95"] - e8["map50_95"]) if e8["map50_95"] is not None else None
                int8 = (f"{_cell(e8['map50_95'])} ({_cell(loss, 2)} pts vs fp32), {e8['latency']['ratio']:.2f}x "
                        f"the unpruned INT8")
            how = ("-" if method == "unpruned" else
                   f"loop {'met' if pr.get('met') else 'not met'}" if method.startswith("edgeprune") else
                   f"ratio {pr['ratio']} ({len(pr['tries'])} tries{'' if pr.get('reached') else '; budget not reached'})")
            rows.append(
                f"| {f} | {LABELS[method]} | {how} | "
                f"**{e32['latency']['ratio']:.3f}** | {e32['macs'] / base['macs']:.2f} | "
                f"{_cell(ft['val_map50_95']['pruned'])} / {_cell(ft['val_map50_95']['bn_recalibrated'])} / "
                f"{_cell(ft['val_map50_95']['finetuned'])} | **{_cell(e32['map50_95'])}** "
                f"({100 * (e32['map50_95'] - b32['map50_95']):+.2f} pts) | {int8} | {ft['images_per_s']} | "
                f"{ft['load'][0]:.1f}, {ft['load'][1]:.1f} |")
    b8 = base.get("int8")
    lines = [
        "## mAP at 0.8x / 0.6x / 0.4x of the measured latency: edgeprune vs Torch-Pruning's YOLOv8 recipe (issue 19)",
        "",
        f"Command: `python benchmarks/bench_detect_vs_tp.py` (stages as in its docstring; fine-tuning {steps} steps "
        "of batch 64 for every model, by the same function). Model: yolov8n-fmnist-det (Ultralytics YOLOv8n, "
        "nc=10, 160 px, the cached reference). mAP50-95: pycocotools on 500 images of fmnist-det's test split "
        "(never trained on nor used for early stopping), by `edgeprune export`'s own accuracy check of each file. "
        "Latency: `benchmarks/_interleave.py` (30 alternating rounds, 1 thread), each file against the unpruned "
        "file of its runtime. fmnist-det is semi-synthetic: the figures compare methods, they do not say how a "
        "detector would do on camera images.",
        "",
        f"Machine: {machine_line()}. Unpruned: ONNX fp32 mAP50-95 **{_cell(b32['map50_95'])}**"
        + (f", LiteRT full INT8 {_cell(b8['map50_95'])}" if b8 else "") + f"; {base['macs'] / 1e6:.0f} M MACs.",
        "",
        "| budget | method | how | measured latency (ORT fp32) / unpruned | MACs kept | val mAP50-95: pruned / "
        "BN recal. / fine-tuned | **test mAP50-95, ONNX fp32** (vs unpruned) | LiteRT full INT8: mAP (loss), latency "
        "| fine-tune img/s (CPU, 1 thread) | load (before, after fine-tune) |",
        "|---:|---|---|---:|---:|---|---|---|---:|---|",
        *rows,
        "",
        READING,
    ]
    write_section("detect-vs-tp", "\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=("all", "prune", "finetune", "export", "latency", "write"), default="all")
    ap.add_argument("--method", choices=METHODS, action="append", help="default: all three")
    ap.add_argument("--factors", type=float, nargs="+", default=list(FACTORS))
    ap.add_argument("--int8-factors", type=float, nargs="*", default=None, help="default: every factor")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    from edgeprune._paths import cache_dir
    from edgeprune.models import ultra

    ultra.import_ultralytics()
    work = args.work or cache_dir() / "bench-detect-vs-tp"
    methods = tuple(args.method or METHODS)
    int8 = args.factors if args.int8_factors is None else args.int8_factors
    if args.stage == "write":
        return stage_write(work, args.factors, args.steps)
    ref = reference()
    if args.stage in ("all", "prune"):
        stage_prune(work, ref, args.factors, methods)
    if args.stage in ("all", "finetune"):
        stage_finetune(work, ref, args.factors, methods, args.steps)
    if args.stage in ("all", "export"):
        stage_export(work, ref, args.factors, methods, int8)
    if args.stage in ("all", "latency"):
        stage_latency(work, args.factors, methods)
    if args.stage == "all":
        stage_write(work, args.factors, args.steps)


if __name__ == "__main__":
    main()
