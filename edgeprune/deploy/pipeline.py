"""The eight stages of ``edgeprune deploy`` for one board, resumable, and many boards at once.

See :mod:`edgeprune.deploy` for what each stage does and writes. Each stage
is a function ``(ctx) -> StageOut`` that writes only into its own folder
``ctx.root / <stage>`` (through the stages' own staged outputs, so a stage
interrupted half-way leaves no half-written result that looks finished);
:func:`_run_stage` around it decides whether a completed earlier run can be
reused (:mod:`edgeprune.deploy.manifest`), records the outcome, and turns
Ctrl-C or a failure into a manifest entry that the next run starts from.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import __version__
from edgeprune._paths import atomic_write_text, sha256_file
from edgeprune._threads import DEFAULT_PARALLEL, NotStarted, fan_out
from edgeprune.bench.batch import BatchSession, BatchSettings
from edgeprune.bench.runner import BenchSettings, bench_target
from edgeprune.boards.reach import resolve_target
from edgeprune.checks.gate import decide
from edgeprune.checks.preprocess import check_preprocessing
from edgeprune.checks.thresholds import Thresholds
from edgeprune.data import DEFAULT_VAL_FRACTION, DataOptions
from edgeprune.deploy.manifest import STAGES, RunManifest, digest
from edgeprune.deploy.report import write_report
from edgeprune.errors import (
    AgentError,
    BudgetError,
    DistributedError,
    EdgePruneError,
    GateError,
    Interrupted,
    OutputError,
    PruneError,
)
from edgeprune.export.pipeline import AgreementError, ExportOptions, export, model_sha256
from edgeprune.export.runners import model_inputs
from edgeprune.finetune.distributed import World, check_options
from edgeprune.finetune.launch import launch
from edgeprune.finetune.run import FinetuneOptions, finetune_model
from edgeprune.latency.job import BudgetOptions, prune_for_budget
from edgeprune.latency.judge import judge, round_figures, with_runs
from edgeprune.latency.loop import WHOLE
from edgeprune.load import load_model, say_loaded, split_for_model
from edgeprune.models.loading import parse_shape
from edgeprune.progress import note, step
from edgeprune.prune.pipeline import (
    PruneOptions,
    PruneResult,
    importance_batches,
    prune_to_plan,
    uniform_plan,
)
from edgeprune.ship import folder_lock, ship_artifact, why_not_current
from edgeprune.validate import check_all

DEFAULT_MAX_DROP = 1.0  # points of top-1 (or of a detector's mAP50-95) on held-out data; the gate
LATENCY_SLACK = 0.10  # the final artifact may measure this much over the budget before it is flagged
SHIP_SAMPLES = 32  # held-out inputs run on the board by the ship stage's check
GATE_SAMPLES = 10_000  # held-out images the gate is measured on (all of a built-in test split)
_CPU = threading.Lock()  # torch-heavy stages of several boards run one at a time on this computer


@dataclass(frozen=True)
class DeployOptions:
    """Everything a deploy takes, built once (by the CLI or :func:`deploy_model`) and handed to every stage.

    The model as the user named it (``model``, ``weights``, ``trust_factory``,
    ``input_shape``, ``normalize``); the data (``data``: a
    :class:`~edgeprune.data.DataOptions`); the plan (``budget``: a
    :class:`~edgeprune.latency.job.BudgetOptions`, or ``ratio``); how
    channels go (``prune``), how it is fine-tuned (``finetune``) and exported
    (``export``: format, precision, I/O type); the gate; the board and the
    run. Only what changes a stage's result is part of its resume key
    (:func:`_stage_args`): trust, ``--json`` and verbosity are not.
    """

    model: str
    output: str
    weights: str | None = None
    trust_factory: str | None = None
    task: str | None = None
    input_shape: tuple[int, ...] | None = None
    normalize: Any = None
    data: DataOptions = DataOptions()
    budget: BudgetOptions | None = None
    ratio: float | None = None
    prune: PruneOptions = PruneOptions()
    finetune: FinetuneOptions = FinetuneOptions()
    export: ExportOptions = ExportOptions()
    max_accuracy_drop: float = DEFAULT_MAX_DROP
    force: bool = False
    host: str | None = None
    delegate: str | None = None  # --delegate: phones measured with benchmark_model
    accept_new_host_key: bool = False
    keep: int = 3
    use_cache: bool = True
    fresh: bool = False
    # --nproc-per-node: the fine-tune stage trains in N processes under torchrun (not part of its resume key:
    # a checkpoint written at one process count resumes at any other)
    nproc_per_node: int | None = None

    @classmethod
    def from_options(cls, *, model: str, output: str, data: Any = None, val_data: Any = None,
                     val_fraction: float = DEFAULT_VAL_FRACTION, latency_budget: float | None = None,
                     speedup: float | None = None, ratio: float | None = None, fmt: str | None = None,
                     precision: str | None = None, io_precision: str | None = None, max_rounds: int = 5,
                     tolerance: float = 0.10, min_keep: float | None = None, threads: int = 0,
                     importance: str = "l1", protect: tuple[str, ...] = (), epochs: int | None = None,
                     steps: int | None = None, time_budget: float | None = None, device: str = "cpu",
                     input_shape: Any = None, use_cache: bool = True, **rest: Any) -> DeployOptions:
        """From the CLI's option names (the API's keywords), e.g. ``speedup=1.5, data="images/"``."""
        given = [n for n, v in (("--latency-budget", latency_budget), ("--speedup", speedup),
                                ("--ratio", ratio)) if v is not None]
        if len(given) != 1:
            raise PruneError("give exactly one of --latency-budget MS, --speedup S or --ratio R"
                             + (f" (got {' and '.join(given)})" if given else ""))
        unknown = sorted(set(rest) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise TypeError(f"deploy_model() got unexpected options: {', '.join(unknown)}")
        budget = None if ratio is not None else BudgetOptions(
            latency_budget=latency_budget, speedup=speedup, fmt=fmt, precision=precision, io_precision=io_precision,
            max_rounds=max_rounds, tolerance=tolerance, min_keep=min_keep, threads=threads, use_cache=use_cache)
        shape = parse_shape(input_shape) if input_shape is not None else None
        opts = cls(model=str(model), output=str(output), input_shape=shape,
                   data=DataOptions(data=data, val_data=val_data, val_fraction=val_fraction),
                   budget=budget, ratio=ratio, prune=PruneOptions(importance=importance, protect=tuple(protect)),
                   finetune=FinetuneOptions(epochs=epochs, steps=steps, time_budget=time_budget, device=device,
                                            threads=threads or None),
                   export=ExportOptions(fmt=fmt, precision=precision, io_precision=io_precision),
                   use_cache=use_cache, **rest)
        opts.check()
        return opts

    @property
    def threads(self) -> int:
        return self.budget.threads if self.budget is not None else (self.finetune.threads or 0)

    def check(self) -> None:
        check_all(max_accuracy_drop=self.max_accuracy_drop, keep=self.keep, ratio=self.ratio,
                  nproc_per_node=self.nproc_per_node)
        if (self.nproc_per_node or 1) > 1:
            self.check_processes()

    def check_processes(self) -> None:
        """Refuse, in one line, what fine-tuning in ``nproc_per_node`` processes cannot honour (before any work)."""
        f = self.finetune
        check_options(World(), device=f.device, time_budget=f.time_budget, sync_bn=f.sync_bn, amp=f.amp,
                      nproc_per_node=self.nproc_per_node)
        if self.data.data is not None and not isinstance(self.data.data, (str, os.PathLike)):
            raise DistributedError("--nproc-per-node: the processes read the data themselves; give --data as a "
                                   "path or a name, not arrays in memory")
        if self.normalize is not None and not isinstance(self.normalize, str):
            raise DistributedError("--nproc-per-node: give --normalize as text (imagenet, unit or MEAN/STD)")


@dataclass
class StageOut:
    outputs: dict[str, Path] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    board_measurements: int = 0
    state: str = "done"


@dataclass
class Ctx:
    """One board's deploy: the resolved board, the model and data loaded once, and what the stages made.

    ``reach`` is resolved once for the whole run; ``original`` (the user's
    model with the user's weights: the teacher and the reference of every
    accuracy figure) and ``split`` (the data) are loaded once and shared by
    every stage. Stages that run hand their model on in memory (``models``);
    a stage reused from an earlier run is read back from its folder, rebuilt
    with the factories the user named for this run.
    """

    target: str
    reach: Any
    root: Path
    opts: DeployOptions
    manifest: RunManifest
    original: Any
    split: Any = None
    label: str = ""
    reused: list[str] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)

    @property
    def profile(self):
        return self.reach.profile

    def dir(self, stage: str) -> Path:
        return self.root / stage

    def result(self, stage: str) -> dict[str, Any]:
        return self.manifest.stage(stage).get("result") or {}

    def say(self, text: str) -> None:
        note(f"{self.label}{text}")

    def model_of(self, stage: str):
        """The model stage ``stage`` (prune or finetune) made: in memory, else read back from its folder."""
        if stage not in self.models:
            self.models[stage] = load_model(self.dir(stage) / "model.ept", trust_factory=self.original.trusted,
                                            original=self.original)
        return self.models[stage]


# -- stages ---------------------------------------------------------------------------------

def _bench(ctx: Ctx, artifact: Path, dest: Path):
    res = bench_target(ctx.reach, artifact, settings=BenchSettings(threads=ctx.opts.threads),
                       use_cache=ctx.opts.use_cache, accept_new_host_key=ctx.opts.accept_new_host_key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    return res


def _artifact_accuracy(report) -> tuple[float | None, dict[str, Any]]:
    acc = report.accuracy or {}
    final = report.final
    value = (acc.get("artifacts") or {}).get(final.step)
    return value, acc


def _export_options(ctx: Ctx, **over: Any) -> ExportOptions:
    return replace(ctx.opts.export, accuracy_count=GATE_SAMPLES, **over)


def stage_measure(ctx: Ctx) -> StageOut:
    """1. The unpruned model, exported in the board's format and precision, measured on the board."""
    folder = ctx.dir("measure")
    step(f"{ctx.label}exporting the unpruned model for {ctx.target}")
    with _CPU:
        report = export(ctx.original, profile=ctx.profile, output_dir=folder / "export", split=ctx.split,
                        options=_export_options(ctx, min_agreement=Thresholds(top1=0.0, cosine=-1.0)))
    art = report.final  # a timing reference, not shipped: no agreement gate
    step(f"{ctx.label}{ctx.target}: measuring the unpruned model")
    res = _bench(ctx, art.path, folder / "bench.json")
    value, acc = _artifact_accuracy(report)
    result = {"p50_ms": res.latency_ms.get("p50"), "p90_ms": res.latency_ms.get("p90"),
              "format": report.format, "precision": report.precision, "step": art.step,
              "bytes": art.size_bytes, "file": art.path.name, "cached": res.cached,
              "runtime": res.runtime, "runtime_version": res.runtime_version,
              "board": _board_facts(res), "metric": acc.get("metric"), "accuracy": value,
              "original_accuracy": acc.get("original"), "heldout": acc.get("heldout"),
              "samples": acc.get("samples")}
    return StageOut(outputs={"artifact": art.path, "bench": folder / "bench.json"}, result=result,
                    board_measurements=0 if res.cached else 1,
                    note=f"unpruned {report.format} {report.precision}: {_latency_text(res.latency_ms)}"
                         + (" (cached measurement)" if res.cached else ""))


def _latency_text(ms: dict[str, Any]) -> str:
    """``p50 X ms``, or what the board gave instead (a phone's binary may print no percentiles)."""
    for key in ("p50", "mean", "avg"):
        if isinstance(ms.get(key), (int, float)):
            return f"{'p50' if key == 'p50' else key + ' (no p50 from the board)'} {ms[key]:.4g} ms"
    return "no latency figure from the board"


def _prune_result(pr: PruneResult) -> dict[str, Any]:
    """What the report needs of the prune stage (the whole summary is prune/summary.json)."""
    d = pr.to_dict()
    lat = d.get("latency") or {}
    return {
        "latency": {k: lat.get(k) for k in ("budget_ms", "met", "verdict", "status", "unpruned_ms", "rounds", "budget_from",
                                             "board_visits", "chosen_round", "table")} if lat else None,
        "channels": [{"group": g, "channels": pr.plan.channels[g], "keep": k} for g, k in pr.plan.keep.items()],
        **{k: d.get(k) for k in ("protected", "removed_fraction", "align", "params_before", "params_after",
                                 "macs_before", "macs_after", "accuracy_before", "accuracy_after", "accuracy_note")},
    }


def stage_prune(ctx: Ctx) -> StageOut:
    """2. Latency-aware pruning with the closed loop on the board (or ``--ratio``)."""
    o = ctx.opts
    folder = ctx.dir("prune")
    forced_budget = None
    with _CPU:
        if o.budget is None:
            plan = uniform_plan(ctx.original, o.ratio, profile=ctx.profile, options=o.prune)
            batches = importance_batches(ctx.split, importance=o.prune.importance, budget=False,
                                         name=ctx.original.name, task=ctx.original.task,
                                         module=ctx.original.module)
            pr = prune_to_plan(ctx.original, plan, profile=ctx.profile, target=ctx.target, output=folder,
                               options=o.prune, kind="ratio", split=ctx.split, batches=batches, ratio=o.ratio)
        else:
            try:
                pr = prune_for_budget(ctx.original, reach=ctx.reach, budget=o.budget, options=o.prune,
                                      output=folder, split=ctx.split, accept_new_host_key=o.accept_new_host_key)
            except BudgetError as exc:
                if not o.force:
                    raise BudgetError(f"{exc}; loosen the budget, or --force to deploy the closest plan") from None
                forced_budget = str(exc)
                pr = None
    if pr is not None:
        ctx.models["prune"] = pr.model
        result = _prune_result(pr)
    else:  # --force past a budget not met: the closest plan was written; read it back
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
        lat = summary.get("latency") or {}
        result = {"latency": {k: lat.get(k) for k in ("budget_ms", "met", "verdict", "status", "unpruned_ms", "rounds",
                                                       "budget_from", "board_visits", "chosen_round", "table")},
                  "channels": [{"group": g["id"], "channels": g["channels"], "keep": g["keep"]}
                               for g in plan.get("groups", [])],
                  **{k: summary.get(k) for k in ("protected", "removed_fraction", "align", "params_before",
                                                 "params_after", "macs_before", "macs_after", "accuracy_before",
                                                 "accuracy_after", "accuracy_note")}}
    result["forced_budget"] = forced_budget
    lat = result.get("latency") or {}
    text = (lat.get("status") or "") if lat else \
        f"--ratio {o.ratio}: removed {result.get('removed_fraction') or 0:.0%} of prunable channels"
    return StageOut(outputs={"model": folder / "model.ept", "plan": folder / "plan.json"}, result=result,
                    board_measurements=int(lat.get("board_visits") or 0) if lat else 0,
                    note=(f"FORCED: {text}" if forced_budget else text))


def stage_finetune(ctx: Ctx) -> StageOut:
    """3. Fine-tuning with distillation from the original (the user's weights), when there is data."""
    if ctx.split is None:
        return StageOut(state="skipped", note="no data: give --data (a folder of class folders, .npz, pkg.mod:fn "
                                              "or a built-in data set) to recover accuracy by fine-tuning")
    folder = ctx.dir("finetune")
    nproc = ctx.opts.nproc_per_node or 1
    step(f"{ctx.label}fine-tuning with distillation on {ctx.split.to_dict().get('source')}"
         + (f" in {nproc} processes (torchrun)" if nproc > 1 else ""))
    with _CPU:
        if nproc > 1:
            rep = _finetune_in_processes(ctx, folder, nproc)
        else:
            fr = finetune_model(ctx.model_of("prune"), split=ctx.split, output=folder, options=ctx.opts.finetune)
            ctx.models["finetune"] = fr.model
            rep = fr.to_dict()
    acc = rep.get("accuracy") or {}
    result = {k: rep.get(k) for k in ("metric", "heldout", "steps", "epochs", "best_epoch", "stopped",
                                      "images_per_s", "drop_points", "teacher")}
    result["accuracy"] = acc
    text = (f"{rep.get('metric')} pruned {_pct(acc.get('pruned'))} -> fine-tuned {_pct(acc.get('finetuned'))} "
            f"(original {_pct(acc.get('original'))}) in {rep.get('steps')} steps")
    return StageOut(outputs={"model": folder / "model.ept", "report": folder / "finetune.json"},
                    result=result, note=text)


def _finetune_in_processes(ctx: Ctx, folder: Path, nproc: int) -> dict[str, Any]:
    """``edgeprune finetune`` on the prune stage's ``model.ept`` in ``nproc`` processes (torchrun, DDP), with
    this deploy's data, split and recipe; returns its ``finetune.json``. The fine-tuned model is read back
    from ``folder`` when the next stage asks for it. Its own checkpoints make it resumable like any stage."""
    o, f = ctx.opts, ctx.opts.finetune
    data = o.data.data if o.data.data is not None else ctx.split.to_dict().get("source")
    args = ["--model", str(ctx.dir("prune") / "model.ept"), "--data", str(data), "--output", str(folder),
            "--val-fraction", str(o.data.val_fraction), "--seed", str(o.data.seed), "--device", f.device]
    given = {"--val-data": o.data.val_data, "--epochs": f.epochs, "--steps": f.steps, "--threads": f.threads,
             "--normalize": o.normalize, "--limit": o.data.limit, "--amp": f.amp,
             "--trust-factory": o.trust_factory or (o.model if ":" in o.model else None)}
    for flag, value in given.items():
        args += [flag, str(value)] if value is not None else []
    args += ["--sync-bn"] if f.sync_bn else []
    code = launch(nproc, args, stdout=subprocess.DEVNULL)
    if code == 128 + signal.SIGINT:
        raise Interrupted("interrupted while fine-tuning: run the same command again to resume")
    if code:
        raise DistributedError(f"fine-tuning in {nproc} processes failed (exit {code}): its error is above")
    ctx.models.pop("finetune", None)
    return json.loads((folder / "finetune.json").read_text(encoding="utf-8"))


def _model_to_export(ctx: Ctx):
    ft = ctx.manifest.stage("finetune")
    return ctx.model_of("finetune" if ft.get("state") == "done" else "prune")


def stage_export(ctx: Ctx) -> StageOut:
    """4. Quantize and export in the profile's format and precision, accuracy on held-out data."""
    folder = ctx.dir("export")
    model = _model_to_export(ctx)
    step(f"{ctx.label}exporting the pruned model for {ctx.target}")
    with _CPU:
        try:
            report = export(model, profile=ctx.profile, output_dir=folder, split=ctx.split,
                            options=_export_options(ctx))
        except AgreementError as exc:
            raise AgreementError(f"{exc} (the export's report is in {folder}; nothing was shipped)",
                                 exc.report) from None
    art = report.final
    value, acc = _artifact_accuracy(report)
    result = {"artifact": str(art.path), "file": art.path.name, "step": art.step, "sha256": art.sha256,
              "bytes": art.size_bytes, "format": report.format, "precision": report.precision,
              "accuracy": acc, "final_accuracy": value, "verdict": report.verdict,
              "artifacts": [{"step": a.step, "file": a.path.name, "bytes": a.size_bytes,
                             "top1_agreement": (a.agreement or {}).get("top1"),
                             "cosine": (a.agreement or {}).get("cosine")} for a in report.artifacts],
              "warnings": report.warnings, "pruning": report.pruning}
    return StageOut(outputs={"artifact": art.path, "report": folder / "export.json"}, result=result,
                    note=f"{art.step}: {art.size_bytes / 1e6:.3f} MB, {acc.get('metric', 'accuracy')} {_pct(value)}")


def _why_no_gate(ctx: Ctx, exp: dict[str, Any]) -> str:
    """Exactly why the gate cannot be checked."""
    if ctx.split is None:
        return ("no held-out data to measure accuracy on: give --data (labelled images the fine-tuning does "
                "not see)")
    acc = exp.get("accuracy") or {}
    if acc.get("original") is None:
        note = (exp.get("pruning") or {}).get("note") or "the unpruned original's accuracy was not measured"
        return f"the original's accuracy is unknown: {note}"
    return f"the exported file's accuracy was not measured ({acc.get('metric')} on {acc.get('heldout')})"


def stage_verify(ctx: Ctx) -> StageOut:
    """5. The accuracy gate: the file to ship against the original, on data the fine-tuning never saw."""
    o = ctx.opts
    exp = ctx.result("export")
    acc = exp.get("accuracy") or {}
    verdict = exp.get("verdict") or {}
    gate = decide(metric=acc.get("metric"), original=acc.get("original"), final=exp.get("final_accuracy"),
                  max_drop=o.max_accuracy_drop, step=exp.get("step"), heldout=acc.get("heldout"),
                  samples=acc.get("samples"),
                  export_failed=verdict.get("reason") if verdict.get("status") == "failed" else None,
                  cannot_check=_why_no_gate(ctx, exp) + "; or --force to ship unchecked")
    gate["forced"] = not gate["passed"] and o.force
    folder = ctx.dir("verify")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "gate.json", json.dumps(gate, indent=2) + "\n")
    if not gate["passed"] and not o.force:
        raise GateError(f"not shipped: below the accuracy gate: {gate['reason']}; fine-tune longer "
                        "(--epochs), prune less, or --force to ship anyway", report=gate)
    text = ("passed: " if gate["passed"] else "FAILED, shipped anyway with --force: ") + str(gate["reason"])
    return StageOut(outputs={"gate": folder / "gate.json"}, result=gate, note=text)


def stage_measure_final(ctx: Ctx) -> StageOut:
    """6. The artifact to ship, measured on the board interleaved with the unpruned one (one agent run).

    Interleaving (the closed loop's method) puts both under the same load, so
    the speedup is a ratio measured at one moment, not two measurements taken
    minutes apart on a board whose load moved.
    """
    o = ctx.opts
    folder = ctx.dir("measure-final")
    art = Path(ctx.result("export")["artifact"])
    unpruned = ctx.root / ctx.manifest.stage("measure")["outputs"]["artifact"]["path"]
    models = {"shipped": art}
    if unpruned.suffix == art.suffix:  # one agent run takes one format
        models["unpruned"] = unpruned
    step(f"{ctx.label}{ctx.target}: measuring the artifact to ship, interleaved with the unpruned one")
    lat = ctx.result("prune").get("latency") or {}
    # as many runs a round as the closed loop timed (enough to span several periods of a CPU quota)
    settings = with_runs(BatchSettings(**{**WHOLE.__dict__, "threads": o.threads}),
                         (lat.get("quota_runs") or {}).get("runs_per_round") or WHOLE.runs)
    with BatchSession(ctx.reach, settings=settings, accept_new_host_key=o.accept_new_host_key) as board:
        res = board.measure(models, settings=settings)
    bad = [f"{k}: {t.error}" for k, t in res.timings.items() if not t.ok]
    if bad:
        raise AgentError(f"{ctx.target}: the board could not run {'; '.join(bad)}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "measure.json", json.dumps(asdict(res), indent=2, default=str) + "\n")
    p50 = res.timings["shipped"].p50_ms
    same = res.timings["unpruned"].p50_ms if "unpruned" in res.timings else None
    before = same or ctx.result("measure").get("p50_ms")
    budget = lat.get("budget_ms")
    # judged as the closed loop judges (latency.judge): --speedup is relative, so by the speedup measured in
    # this batch; on a board with a CPU quota from the rounds' means, what the board sustains
    quota = (res.board or {}).get("cpu_quota")
    relative = bool(same and lat.get("unpruned_ms") and str(lat.get("budget_from", "")).startswith("speedup"))
    a = round_figures(res.timings["shipped"], quota)
    b = round_figures(res.timings["unpruned"], quota) if same else a
    if len(a) != len(b):
        a, b = [p50], [same or p50]
    judged = judge(a, b, relative_to=lat["unpruned_ms"] if relative else None)[0]
    how = "speedup in the same batch" if relative else "measured p50"
    if quota and getattr(res.timings["shipped"], "rounds_mean_ms", None):
        how += " (round means: the board has a CPU quota)"
    result = {"p50_ms": round(p50, 5), "unpruned_same_batch_ms": None if same is None else round(same, 5),
              "speedup": round(before / p50, 3) if before and p50 else None, "budget_ms": budget,
              "judged_ms": round(judged, 5),
              "judged_by": how,
              "within_budget": None if budget is None else bool(judged <= budget * (1 + LATENCY_SLACK)),
              "board": _board_facts(res), "throttled": res.throttled, "other_busy_cores": res.other_busy_cores}
    text = f"p50 {p50:.4g} ms" + (f", {result['speedup']:.2f}x the unpruned {before:.4g} ms measured beside it"
                                  if same else "")
    if budget is not None:
        text += f"; budget {budget:.4g} ms" + (f" (judged {judged:.4g} ms at the load the budget was set at)"
                                               if relative else "")
        if not result["within_budget"]:
            text += (f": OVER by more than {LATENCY_SLACK:.0%} (the closed loop measured it within; "
                     "the board may be busier now)")
    if (res.other_busy_cores or 0) > 0.5:
        text += f" [contended: other processes used {res.other_busy_cores:.1f} cores meanwhile]"
    return StageOut(outputs={"measure": folder / "measure.json"}, result=result, board_measurements=1, note=text)


def stage_ship(ctx: Ctx) -> StageOut:
    """7. Ship: staging name, sha256, the held-out inputs run on the board, atomic switch (edgeprune.ship)."""
    o = ctx.opts
    folder = ctx.dir("ship")
    exp = ctx.result("export")
    art = Path(exp["artifact"])
    x, source = _check_inputs(ctx)
    gate = ctx.result("verify")
    manifest = {
        "source_model": o.model, "source_model_sha256": model_sha256(ctx.original.module),
        "plan": json.loads((ctx.dir("prune") / "plan.json").read_text(encoding="utf-8")),
        "profile": ctx.profile.name, "format": exp.get("format"), "precision": exp.get("precision"),
        "latency_ms": ctx.result("measure-final").get("p50_ms"),
        "latency_unpruned_ms": ctx.result("measure").get("p50_ms"),
        "budget_ms": ctx.result("measure-final").get("budget_ms"),
        "accuracy": {"metric": gate.get("metric"), "original": gate.get("original"), "shipped": gate.get("final"),
                     "drop_points": gate.get("drop"), "heldout": gate.get("heldout"), "samples": gate.get("samples")},
        "forced": bool(gate.get("forced") or ctx.result("prune").get("forced_budget")),
        "forced_why": "; ".join(r for r in (gate.get("reason") if gate.get("forced") else None,
                                            ctx.result("prune").get("forced_budget")) if r) or None,
        "edgeprune_version": __version__, "check_inputs": source,
    }
    step(f"{ctx.label}{ctx.target}: shipping {art.name}")
    res = ship_artifact(art, target=ctx.reach, manifest=manifest, verify_inputs=x,
                        precision=exp.get("precision"), keep=o.keep, accept_new_host_key=o.accept_new_host_key)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "ship.json", json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    result = {"id": res.release, "target": res.target, "path": res.release_dir, "deploy_dir": res.deploy_dir,
              "artifact": art.name, "sha256": res.sha256, "format": exp.get("format"),
              "precision": exp.get("precision"), "previous": res.previous, "removed": res.removed,
              "kept_releases": o.keep, "check_inputs": source,
              "verification": {k: v for k, v in (res.check or {}).items() if isinstance(v, (int, float, str, bool))},
              "forced": manifest["forced"]}
    return StageOut(outputs={"ship": folder / "ship.json"}, result=result, board_measurements=1,
                    note=res.summary())


STAGE_FUNCS: dict[str, Callable[[Ctx], StageOut]] = {
    "measure": stage_measure, "prune": stage_prune, "finetune": stage_finetune, "export": stage_export,
    "verify": stage_verify, "measure-final": stage_measure_final, "ship": stage_ship,
}


def _stage_args(o: DeployOptions, name: str, target: str) -> dict[str, Any]:
    """The options each stage's result depends on (its part of the resume key).

    Not in it: what does not change a result (trust in a factory, ``--json``,
    verbosity, ``--fresh``); naming ``--trust-factory`` for a completed run
    reuses every stage.
    """
    model = {"model": o.model, "model_file": _file_sha(o.model), "weights": o.weights,
             "weights_file": _file_sha(o.weights), "input_shape": o.input_shape,
             "normalize": None if o.normalize is None else str(o.normalize), "task": o.task}
    data = {"data": o.data.data, "data_file": _file_sha(o.data.data), "val_data": o.data.val_data,
            "val_fraction": o.data.val_fraction}
    board = {"target": target, "host": o.host, "delegate": o.delegate, "fmt": o.export.fmt, "precision": o.export.precision,
             "io_precision": o.export.io_precision, "threads": o.threads}
    return {
        "measure": {**model, **data, **board},
        "prune": {"budget": asdict(o.budget) if o.budget is not None else None, "ratio": o.ratio,
                  "prune": asdict(o.prune)},
        "finetune": asdict(o.finetune),
        "export": {},
        "verify": {"max_accuracy_drop": o.max_accuracy_drop, "force": o.force},
        "measure-final": {},
        "ship": {"keep": o.keep},
    }[name]


def _file_sha(spec: str | None) -> str | None:
    """A file's sha256 when the spec names a file (an edited model or data file starts the stages over)."""
    if not spec:
        return None

    p = Path(str(spec)).expanduser()
    try:
        return sha256_file(p) if p.is_file() else None
    except OSError:
        return None


def _run_stage(ctx: Ctx, name: str, key: str, *, ran: bool) -> tuple[bool, dict[str, Any]]:
    """Run or reuse stage ``name``; returns (ran, its record). Raises what the stage raised, after recording it."""
    m = ctx.manifest
    if not ran and not ctx.opts.fresh and m.reusable(name, key, ctx.root) and not _board_moved_on(ctx, name):
        rec = m.stage(name)
        ctx.reused.append(name)
        ctx.say(f"{name}: reused from an earlier run ({rec.get('note') or rec.get('state')})")
        return False, rec
    m.start(name, key)
    t0 = time.perf_counter()
    step(f"{ctx.label}{name}")
    try:
        out = STAGE_FUNCS[name](ctx)
    except KeyboardInterrupt:
        m.fail(name, state="interrupted", error="interrupted (Ctrl-C); run the same command again to resume here",
               seconds=time.perf_counter() - t0)
        raise
    except EdgePruneError as exc:
        m.fail(name, state="failed", error=str(exc), seconds=time.perf_counter() - t0, kind=exc.kind)
        raise
    except Exception as exc:
        m.fail(name, state="failed", error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)
        raise
    rec = m.finish(name, state=out.state, root=ctx.root, outputs=out.outputs, seconds=time.perf_counter() - t0,
                   result=out.result, note=out.note, board_measurements=out.board_measurements,
                   run=m.data.get("runs"))
    ctx.say(f"{name}: {out.note or out.state} ({rec['seconds']:.1f} s)")
    return True, rec


def _board_moved_on(ctx: Ctx, name: str) -> bool:
    """A completed ship stage is reused only while the board still runs what it shipped (else: ship again)."""
    if name != "ship":
        return False
    res = ctx.manifest.stage(name).get("result") or {}
    try:
        why = why_not_current(ctx.reach, release=str(res.get("id")), sha256=str(res.get("sha256")),
                              accept_new_host_key=ctx.opts.accept_new_host_key)
    except EdgePruneError as exc:  # the board cannot say: shipping again says what is wrong
        why = f"it could not be checked ({exc})"
    if why:
        ctx.say(f"ship: not reused: {why}; shipping again")
    return why is not None


def deploy_one(target: str, root: Path, opts: DeployOptions, *, reach, original, split, label: str = "",
               command: list[str] | None = None) -> dict[str, Any]:
    """Run the eight stages for one board in ``root``; returns the report dict (also written as deploy.json).

    ``reach``, ``original`` and ``split``: the board, the model and the data,
    resolved and loaded once by :func:`deploy_model`. Raises the failing
    stage's error after the report of the failed run is written.
    """
    root.mkdir(parents=True, exist_ok=True)
    args = {"options": _json_able(asdict(opts)), "target": target}
    manifest = RunManifest.load_or_new(root / "run.json", args=args, command=command)
    ctx = Ctx(target=target, reach=reach, root=root, opts=opts, manifest=manifest, original=original,
              split=split, label=label)
    prev_key, prev_out = "", {}
    ran = False
    error: BaseException | None = None
    t0 = time.perf_counter()
    try:
        for i, name in enumerate(STAGES[:-1]):
            key = digest({"stage": name, "args": _stage_args(opts, name, target), "prev": prev_key,
                          "prev_outputs": prev_out})
            did, _ = _run_stage(ctx, name, key, ran=ran)
            if did and not ran:
                ran = True
                manifest.forget_after(list(STAGES[i + 1 : -1]))  # every later stage runs again
            prev_key, prev_out = key, manifest.output_sha(name)
    except BaseException as exc:  # the report of a failed or interrupted run is still written
        error = exc
    report = write_report(ctx, seconds=time.perf_counter() - t0, error=error)
    if error is not None:
        raise error
    return report


def _json_able(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _board_facts(res) -> dict[str, Any]:
    board = dict(res.board or {})
    board.update(runtime=res.runtime, runtime_version=res.runtime_version, throttled=res.throttled)
    return board


def _pct(v: Any) -> str:
    return f"{v:.2%}" if isinstance(v, (int, float)) else "-"


def _check_inputs(ctx: Ctx):
    """Held-out inputs for the on-board check, in the artifact's own layout and dtype; and where they came from."""
    art = Path(ctx.result("export")["artifact"])
    split = ctx.split
    if split is not None:
        n = min(SHIP_SAMPLES, len(split.heldout))
        x = split.heldout.get(range(n))[0].numpy()
        source = f"{n} held-out samples ({split.heldout_name})"
    else:
        shape = tuple(ctx.original.input_shape)
        x = np.random.default_rng(0).standard_normal((8, *shape[1:])).astype(np.float32)
        source = "8 seeded random inputs (no data was given)"
    return model_inputs(art, x), source


# -- many boards ------------------------------------------------------------------------------

def load_once(opts: DeployOptions):
    """The model with the user's weights and the data, loaded once for every board and every stage.

    Before anything is measured or pruned, the preprocessing is checked on
    labelled data (:func:`edgeprune.checks.preprocess.check_preprocessing`):
    an original that scores far below what its data allows stops the run,
    naming the normalisation that fits.
    """
    spec_data = opts.data.data if isinstance(opts.data.data, (str, os.PathLike)) else None
    original = load_model(opts.model, weights=opts.weights, input_shape=opts.input_shape,
                          trust_factory=opts.trust_factory, normalize=opts.normalize, data=spec_data, task=opts.task)
    say_loaded(original)
    split = split_for_model(original, opts.data)
    if split is not None:
        check_preprocessing(original, split, confirmed=opts.normalize is not None)
    return original, split


def deploy_model(model: str, *, target: str | list[str], output: str | os.PathLike[str],
                 command: list[str] | None = None, parallel: int = DEFAULT_PARALLEL, canary: int = 0,
                 **options: Any) -> dict[str, Any]:
    """Deploy ``model`` to one board or several; see :mod:`edgeprune.deploy`.

    ``options`` have the CLI's names (:meth:`DeployOptions.from_options`).
    One target: returns its report (``deploy.json``) and raises the failing
    stage's error (a :class:`GateError` below the gate, ``BudgetError`` for a
    budget not met, ...). Several: each board in ``output/<target>/``, at most
    ``parallel`` at once; returns ``{"ok": all shipped, "targets": [...]}``
    (also written as ``output/deploy.json``); one board's failure never stops
    the others. ``canary=K``: the first K boards are deployed (and checked on
    the board by the ship stage) first; when one fails, the others are never
    started (``"state": "not started"``, nothing measured or shipped there).
    The model and data are loaded once and every target is resolved once.
    """
    targets = [target] if isinstance(target, str) else list(dict.fromkeys(target))
    if not targets:
        raise EdgePruneError("give at least one --target")
    opts = DeployOptions.from_options(model=str(model), output=str(output), **options)
    _refuse_bad_output(Path(output))
    reaches = {t: resolve_target(t, host=opts.host, delegate=opts.delegate) for t in targets}  # an unknown board is refused first
    root = Path(output).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    # Two deploys into one folder would mix their stages' files: the second is refused here, at its start.
    with folder_lock(root, what=f"deploy {opts.model} to {', '.join(targets)}", label=f"--output {output}",
                     error=OutputError):
        return _deploy_locked(targets, root, opts, reaches=reaches, command=command, parallel=parallel,
                              canary=canary)


def _deploy_locked(targets: list[str], root: Path, opts: DeployOptions, *, reaches, command, parallel: int,
                   canary: int) -> dict[str, Any]:
    original, split = load_once(opts)
    if len(targets) == 1:
        return deploy_one(targets[0], root, opts, reach=reaches[targets[0]], original=original, split=split,
                          command=command)

    def one(t: str) -> dict[str, Any]:
        try:
            rep = deploy_one(t, root / t, opts, reach=reaches[t], original=original, split=split,
                             label=f"[{t}] ", command=command)
            return {"target": t, "ok": True, "state": "shipped", "shipped": (rep.get("release") or {}).get("id"),
                    "report": rep}
        except EdgePruneError as exc:
            return {"target": t, "ok": False, "state": "failed",
                    "error": {"kind": exc.kind, "message": str(exc), "exit_code": exc.exit_code},
                    "report": _read_json(root / t / "report" / "deploy.json")}

    done = fan_out(targets, one, parallel=parallel, canary=canary, passed=lambda o: o["ok"], name="edgeprune-deploy")
    outcomes = [o if not isinstance(o, NotStarted) else
                {"target": t, "ok": False, "state": "not started",
                 "error": {"kind": "not-started", "message": str(o), "exit_code": 1}, "report": None}
                for t, o in zip(targets, done, strict=True)]
    summary = {"ok": all(o["ok"] for o in outcomes), "output": str(root), "parallel": parallel, "canary": canary,
               "targets": outcomes}
    atomic_write_text(root / "deploy.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _refuse_bad_output(path: Path) -> None:
    if not str(path).strip():
        raise OutputError("--output is empty: name a folder for the deploy's stages and report")
    if path.exists() and not path.is_dir():
        raise OutputError(f"--output {path}: a file is there; name a folder")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
