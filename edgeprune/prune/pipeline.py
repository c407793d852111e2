"""The ``edgeprune prune`` stage as one function: load, plan, prune, save, export, check.

``prune_model`` takes plain values and returns the JSON summary the CLI
prints. It writes into ``output``:

- ``model.ept``: the pruned model (:mod:`edgeprune.prune.io`);
- ``plan.json``: the :class:`ChannelPlan`;
- ``model.onnx``: ONNX export (opset 17), checked against PyTorch on
  ``CHECK_SAMPLES`` inputs: ``max_abs <= ONNX_TOL * max(1, max|pytorch output|)``,
  else :class:`ExportError`;
- ``summary.json``: the summary.

Kept counts round to the target profile's channel alignment for its export
precision (``Profile.alignment``); ``align=1`` turns that off.

Example::

    summary = prune_model("mobilenetv2", target="local", ratio=0.3, output="out/")
    summary["macs_before"] / summary["macs_after"]     # ~1.8
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from edgeprune._paths import atomic_write_text, staged_output
from edgeprune.checks.outputs import flatten_numpy
from edgeprune.errors import BudgetError, ExportError, PruneError
from edgeprune.progress import step
from edgeprune.prune.threads import single_threaded

ONNX_TOL = 1e-4
CHECK_SAMPLES = 4


ACCURACY_SAMPLES = 2000  # held-out images for accuracy before/after pruning


def _check_inputs(lm, n: int, split=None) -> torch.Tensor:
    """Real held-out images when there is data (``--data`` or the model's own), else seeded noise."""
    if split is not None:
        return split.heldout.get(range(min(n, len(split.heldout))))[0]
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *lm.input_shape[1:], generator=g)


def _outputs(model, x: torch.Tensor) -> list[np.ndarray]:
    outs = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            outs.append(flatten_numpy(model(x[i : i + 1])))  # nested outputs: edgeprune.checks.outputs
    return [np.concatenate([s[k] for s in outs]) for k in range(len(outs[0]))]


def export_checked(model, lm, path: Path, *, metadata: dict[str, str], split=None) -> dict:
    """Export to ONNX and compare with PyTorch; returns the agreement figures."""
    from edgeprune.export.onnx import export_onnx, run_onnx
    from edgeprune.verify import agreement

    export_onnx(model, lm.input_shape, path, metadata=metadata)
    x = _check_inputs(lm, CHECK_SAMPLES, split)
    ref = _outputs(model, x)
    got = run_onnx(path, x.numpy())
    agree = agreement(ref, got)
    scale = max(1.0, max(float(np.abs(r).max()) for r in ref))
    agree["tolerance"] = ONNX_TOL * scale
    agree["passed"] = agree["max_abs"] <= agree["tolerance"]
    if not agree["passed"]:
        raise ExportError(
            f"{path}: ONNX output differs from PyTorch by {agree['max_abs']:.3g} "
            f"(tolerance {agree['tolerance']:.3g})"
        )
    return agree


@single_threaded
def prune_model(
    model: str,
    *,
    target: str,
    output: str | os.PathLike[str],
    ratio: float | None = None,
    plan_file: str | None = None,
    weights: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    importance: str = "l1",
    protect: tuple[str, ...] = (),
    align: bool = True,
    protect_stem: bool | None = None,
    latency_budget: float | None = None,
    speedup: float | None = None,
    fmt: str | None = None,
    precision: str | None = None,
    max_rounds: int = 3,
    min_keep: float | None = None,
    threads: int = 0,
    estimate: bool = False,
    data=None,
    host: str | None = None,
    use_cache: bool = True,
    accept_new_host_key: bool = False,
    trust_factory: str | None = None,
    verify: bool = True,
    val_data=None,
    normalize=None,
) -> dict:
    """Prune ``model`` for ``target`` and write the four files; returns the summary.

    ``weights``, ``input_shape``, ``trust_factory``: see :func:`edgeprune.load.load_model`.
    ``verify=False`` (CLI ``--no-verify``) skips the surgery check, for ops known
    not to keep 0 at 0 (:mod:`edgeprune.prune.check`). The files are written
    into a staging folder and swapped into ``output`` only when all are
    complete (:func:`edgeprune._paths.staged_output`).

    With ``latency_budget`` (ms) or ``speedup``, the plan comes from the
    latency model and the closed loop on the board (:mod:`edgeprune.latency.loop`:
    ``fmt``/``precision`` pick the artifact the board runs, ``max_rounds``,
    ``min_keep``, ``threads``, ``estimate`` to plan from the profile only,
    ``data`` batches for Taylor importance); it also writes
    ``latency_table.json`` and puts the budget and every round in
    ``summary.json`` (``latency``) and ``plan.json``. A budget not met on the
    board raises :class:`BudgetError` after writing everything.

    ``protect_stem``: whether the input stem's group (the first conv's output
    channels; in a ResNet the whole first stage, which adds to it) keeps all
    its channels. By default (None) it does under a uniform ``ratio``, which
    would cut it like any layer, and it does not under a budget, whose
    allocation weighs it like every group (importance lost per ms saved), nor
    under a ``plan_file``, which says what each group keeps. At small inputs
    the stem runs at the highest resolution and is a large share of the
    latency: protected, MobileNetV2-fmnist at 0.4x its LiteRT INT8 latency
    scored 85.39 % after fine-tuning, weighed 88.85 % (benchmarks/RESULTS.md).

    ``data``: an :func:`edgeprune.data.load_data` spec (or a DataSplit) for
    importance (its train split: Taylor scores for channels with
    ``importance="taylor"``, and with a budget the sensitivity that compares
    groups), the ONNX check's inputs and the accuracy before and after (its
    held-out split); or an iterable of batches (``split.train.batches(64)``),
    used for importance only. Without it the model's own data set is used
    where its data hook names one that is here.
    """
    from edgeprune.profiles import load_profile

    budgeted = latency_budget is not None or speedup is not None
    if protect_stem is None:
        protect_stem = ratio is not None
    if sum(v is not None for v in (ratio, plan_file, latency_budget, speedup)) != 1:
        raise PruneError(
            "give exactly one of --ratio R, --plan FILE, --latency-budget MS or --speedup S"
        )
    if budgeted and not estimate:  # a board to measure on: a targets-file name or a profile
        from edgeprune.reach import resolve_target

        profile = resolve_target(target, host=host).profile
    else:
        profile = load_profile(target)  # an unknown board is refused before anything is written
    budget = dict(
        latency_budget=latency_budget, speedup=speedup, fmt=fmt, precision=precision,
        max_rounds=max_rounds, min_keep=min_keep, threads=threads, estimate=estimate,
        host=host, use_cache=use_cache, accept_new_host_key=accept_new_host_key,
    ) if budgeted else None
    with staged_output(output) as stage:
        summary, latency = _prune_into(
            stage, Path(output).expanduser(), model, profile=profile, target=target, ratio=ratio,
            plan_file=plan_file, weights=weights, input_shape=input_shape, importance=importance,
            protect=protect, align=align, protect_stem=protect_stem, trust_factory=trust_factory,
            verify=verify, data=data, val_data=val_data, normalize=normalize, budget=budget,
        )
    if latency is not None and latency.met is False:  # raised after the result is in place
        raise BudgetError(f"{latency.status} (written anyway: {summary['summary']})", result=summary)
    return summary


def _prune_into(
    out: Path,
    final: Path,
    model: str,
    *,
    profile,
    target: str,
    ratio: float | None,
    plan_file: str | None,
    weights: str | None,
    input_shape: tuple[int, ...] | None,
    importance: str,
    protect: tuple[str, ...],
    align: bool,
    protect_stem: bool,
    trust_factory: str | None,
    verify: bool,
    data,
    val_data,
    normalize,
    budget: dict | None,
):
    """The work of :func:`prune_model`, writing into ``out`` and recording paths in ``final``.

    Returns ``(summary, LoopResult or None)``.
    """
    from edgeprune.load import load_model
    from edgeprune.models.stats import count_macs_params
    from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_, save_pruned

    multiple = profile.alignment(profile.export_precision) if align else 1
    step(f"loading {model}")
    lm = load_model(model, weights=weights, input_shape=input_shape, trust_factory=trust_factory)
    earlier = [*lm.earlier_plans, lm.plan] if lm.plan is not None else []
    if lm.base is None:
        raise PruneError(
            f"{lm.source}: {lm.notes[0] if lm.notes else 'cannot be pruned'}; "
            "give the Python factory (--model pkg.module:function --weights FILE)"
        )
    net = lm.module
    shape = tuple(lm.input_shape)
    macs0, params0 = count_macs_params(net, shape)
    x = example_input(shape)
    step("tracing coupled channel groups")
    every = prunable_groups(net, x, protect=protect, protect_stem=protect_stem, include_protected=True)
    groups = [g for g in every if g.prunable]
    if not groups:
        raise PruneError(
            f"{lm.name}: no prunable channel groups (every group is protected or an output)"
        )
    from edgeprune.data import Dataset, DataSplit, split_for

    batches = None
    if data is not None and not isinstance(data, (str, os.PathLike, Dataset, DataSplit)):
        batches, data = list(data), None  # already an iterable of batches (the API): importance only
    if data is not None:
        step(f"loading data {data}")
    split = split_for(lm, data, val_data=val_data, normalize=normalize)
    if batches is None and split is not None and split.train.labelled and (
        importance == "taylor" or (budget is not None and data is not None)
    ):
        batches = list(split.train.batches(64, limit=512))
    if importance == "taylor" and batches is None:
        raise PruneError(
            f"--importance taylor needs data: give --data (a folder of class folders, .npz, "
            f"pkg.mod:fn, or a built-in data set); '{lm.name}' has none of its own here"
        )
    latency = None
    if budget is not None:
        from edgeprune.latency.layers import DEFAULT_MIN_KEEP
        from edgeprune.latency.loop import plan_for_budget

        min_keep = budget["min_keep"]
        latency = plan_for_budget(
            lm, target=target, host=budget["host"], latency_budget=budget["latency_budget"],
            speedup=budget["speedup"], fmt=budget["fmt"], precision=budget["precision"],
            max_rounds=budget["max_rounds"], importance=importance, data=batches,
            sensitivity="taylor" if batches is not None else None,
            protect=tuple(protect), protect_stem=protect_stem, align=align,
            min_keep=DEFAULT_MIN_KEEP if min_keep is None else min_keep, threads=budget["threads"],
            estimate=budget["estimate"], use_cache=budget["use_cache"],
            accept_new_host_key=budget["accept_new_host_key"],
        )
        plan = latency.plan
        plan.latency = latency.to_dict()
        multiple = plan.align
    elif plan_file is not None:
        path = Path(plan_file)
        if not path.is_file():
            raise PruneError(f"--plan {path}: file not found")
        plan = ChannelPlan.from_json(path.read_text(encoding="utf-8"), where=str(path))
        plan.base = plan.base or lm.base
    else:
        plan = ChannelPlan.uniform(groups, ratio, align=multiple, input_shape=shape, base=lm.base)
    acc0 = _accuracy(split, net)
    step("removing channels and checking the surgery")
    prune_(
        net, plan, importance=importance, data=batches, protect=protect, protect_stem=protect_stem, x=x,
        verify=verify,
    )
    macs1, params1 = count_macs_params(net, shape)
    from edgeprune.prune.groups import kept_whole, protected_note

    whole = kept_whole(every, plan)  # which layers were kept whole, and why
    ept = save_pruned(net, plan, out / "model.ept", name=lm.name, task=lm.task, earlier=earlier)
    plan_path = out / "plan.json"
    atomic_write_text(plan_path, plan.to_json() + "\n")
    onnx_path = out / "model.onnx"
    step("exporting ONNX and checking it against PyTorch")
    agree = export_checked(
        net,
        lm,
        onnx_path,
        metadata={
            "edgeprune.base": lm.base,
            "edgeprune.target": target,
            "edgeprune.plan": plan.note,
        },
        split=split,
    )
    summary = {  # the paths the files will have once the staging folder is swapped in
        "model": str(final / ept.name),
        "plan": str(final / plan_path.name),
        "onnx": str(final / onnx_path.name),
        "summary": str(final / "summary.json"),
        "source": lm.source,
        "base": lm.base,
        "task": lm.task,
        "target": target,
        "input_shape": list(shape),
        "ratio": ratio,
        "align": multiple,
        "importance": importance,
        "removed_fraction": round(plan.removed_fraction(), 4),
        "groups_total": len(groups),
        "groups_pruned": len(plan.pruned_groups()),
        "protected": whole,
        "protected_note": protected_note(whole),
        "rewrites": plan.rewrites,
        "earlier_plans": len(earlier),
        "params_before": params0,
        "params_after": params1,
        "macs_before": macs0,
        "macs_after": macs1,
        "mac_reduction": round(macs0 / max(macs1, 1), 3),
        "onnx_check": {
            k: agree[k] for k in ("max_abs", "mean_abs", "cosine", "top1", "tolerance", "passed")
        },
        "pretrained": lm.pretrained,
        "notes": plan.ratio_notes(ratio, groups) if ratio is not None else [],
    }
    if latency is not None:
        summary["latency"] = latency.to_dict()
        if latency.table is not None:
            latency.table.save(out / "latency_table.json")
            summary["latency_table"] = str(final / "latency_table.json")
    if split is not None:
        summary["data"] = split.to_dict()
    if acc0 is not None:
        n = min(len(split.heldout), ACCURACY_SAMPLES)  # as _accuracy measures
        summary["accuracy_before"] = acc0
        summary["accuracy_after"] = _accuracy(split, net)
        summary["accuracy_note"] = (f"top-1 on {n} held-out images ({split.heldout.source}), before fine-tuning")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary, latency


def _accuracy(split, net) -> float | None:
    """Top-1 on the held-out split (labelled data only), None without labels."""
    if split is None or not split.heldout.labelled:
        return None
    from edgeprune.finetune.loop import predict, score

    held = split.heldout
    if len(held) > ACCURACY_SAMPLES:  # evenly spread: a split in class order still gives every class
        held = held.subset(np.linspace(0, len(held) - 1, ACCURACY_SAMPLES).round().astype(int))
    return round(score(predict(net, held), held)["top1"], 4)
