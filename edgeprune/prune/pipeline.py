"""The ``prune`` stage: a loaded model and a plan go in, a pruned model and its files come out.

This stage knows nothing of budgets. The caller chooses the plan: a uniform
one (:func:`uniform_plan`, ``--ratio``), one read from a file
(:func:`read_plan`, ``--plan``), or one from the latency search
(:func:`edgeprune.latency.prune_for_budget`, ``--latency-budget``/``--speedup``),
and hands it to :func:`prune_to_plan`, which writes into ``output``:

- ``model.ept``: the pruned model (:mod:`edgeprune.prune.io`);
- ``plan.json``: the :class:`ChannelPlan`;
- ``model.onnx``: ONNX export (opset 17), checked against PyTorch on
  ``CHECK_SAMPLES`` inputs: ``max_abs <= ONNX_TOL * max(1, max|pytorch output|)``,
  else :class:`ExportError`;
- ``summary.json``: the summary (:class:`PruneResult`);
- whatever the caller attaches (the latency search's table and the
  artifact the board measured).

Kept counts round to the target profile's channel alignment for its export
precision (``Profile.alignment``); ``align=False`` turns that off.

Example::

    lm = load_model("mobilenetv2")
    plan = uniform_plan(lm, 0.3, profile=load_profile("local"), options=PruneOptions())
    result = prune_to_plan(lm, plan, profile=load_profile("local"), target="local", output="out/",
                           options=PruneOptions())
    result.macs_before / result.macs_after     # ~1.8
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeprune._paths import atomic_write_text, staged_output
from edgeprune._threads import single_threaded
from edgeprune.checks.agreement import agreement
from edgeprune.checks.outputs import flatten_numpy
from edgeprune.errors import ExportError, PruneError
from edgeprune.export.onnx import export_onnx, run_onnx
from edgeprune.finetune.objectives import objective_for
from edgeprune.models import LoadedModel
from edgeprune.models.stats import count_macs_params
from edgeprune.progress import step
from edgeprune.prune.apply import example_input, prune_
from edgeprune.prune.groups import kept_whole, protected_note, prunable_groups
from edgeprune.prune.io import save_pruned
from edgeprune.prune.plan import ChannelPlan
from edgeprune.tasks.detect_loss import DetectionTaylorBatches, supports_supervised

ONNX_TOL = 1e-4
CHECK_SAMPLES = 4
ACCURACY_SAMPLES = 2000  # held-out images for accuracy before/after pruning
DETECT_ACCURACY_SAMPLES = 200  # a detector's mAP before/after pruning (the export measures more)
IMPORTANCES = ("l1", "l2", "bn", "taylor", "first")


@dataclass(frozen=True)
class PruneOptions:
    """How channels are chosen and checked, whatever the plan (the CLI's ``prune`` options).

    ``protect_stem``: whether the input stem's group (the first conv's output
    channels; in a ResNet the whole first stage, which adds to it) keeps all
    its channels. None (the default) resolves per plan kind
    (:meth:`stem_for`): protected under a uniform ``--ratio``, which would cut
    it like any layer; weighed like every group under a budget, whose
    allocation compares importance lost per ms saved, and under ``--plan``,
    which says what each group keeps. At small inputs the stem runs at the
    highest resolution and is a large share of the latency: protected,
    MobileNetV2-fmnist at 0.4x its LiteRT INT8 latency scored 85.39 % after
    fine-tuning, weighed 88.85 % (benchmarks/RESULTS.md).
    ``verify=False`` (``--no-verify``) skips the surgery check, for ops known
    not to keep 0 at 0 (:mod:`edgeprune.prune.check`).
    """

    importance: str = "l1"
    protect: tuple[str, ...] = ()
    align: bool = True
    protect_stem: bool | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCES:
            raise PruneError(f"--importance {self.importance}: use one of {', '.join(IMPORTANCES[:4])}")
        object.__setattr__(self, "protect", tuple(self.protect))

    def stem_for(self, kind: str) -> bool:
        """Whether the stem is protected for a plan of ``kind`` ('ratio', 'budget' or 'plan')."""
        return (kind == "ratio") if self.protect_stem is None else bool(self.protect_stem)


@dataclass
class PruneResult:
    """What :func:`prune_to_plan` made: the pruned model in memory, its files, and the figures.

    ``model`` is the pruned :class:`LoadedModel` (its ``original`` is the
    unpruned model it came from); ``to_dict()`` is ``summary.json``.
    """

    model: LoadedModel
    plan: ChannelPlan
    files: dict[str, Path]
    target: str
    ratio: float | None
    align: int
    importance: str
    groups_total: int
    protected: list[dict]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    onnx_check: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    latency: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    accuracy_note: str | None = None

    @property
    def removed_fraction(self) -> float:
        return round(self.plan.removed_fraction(), 4)

    def to_dict(self) -> dict[str, Any]:
        lm = self.model
        d: dict[str, Any] = {
            **{k: str(v) for k, v in self.files.items()},
            "source": (lm.original or lm).source, "base": lm.base, "task": lm.task, "target": self.target,
            "input_shape": list(lm.input_shape), "input_shape_source": lm.input_shape_source, "ratio": self.ratio, "align": self.align,
            "importance": self.importance, "removed_fraction": self.removed_fraction,
            "groups_total": self.groups_total, "groups_pruned": len(self.plan.pruned_groups()),
            "protected": self.protected, "protected_note": protected_note(self.protected),
            "rewrites": self.plan.rewrites, "earlier_plans": len(lm.earlier_plans),
            "params_before": self.params_before, "params_after": self.params_after,
            "macs_before": self.macs_before, "macs_after": self.macs_after,
            "mac_reduction": round(self.macs_before / max(self.macs_after, 1), 3),
            "onnx_check": self.onnx_check, "pretrained": lm.pretrained, "notes": self.notes,
            "original_weights": (lm.original.weights if lm.original is not None else None),
            "normalize": _norm_text(lm.normalize), "normalize_source": lm.normalize_source,
        }
        if self.latency is not None:
            d["latency"] = self.latency
        if self.data is not None:
            d["data"] = self.data
        if self.accuracy_before is not None:
            d.update(accuracy_before=self.accuracy_before, accuracy_after=self.accuracy_after,
                     accuracy_note=self.accuracy_note)
        return d


def _norm_text(norm: Any) -> Any:
    return norm if norm is None or isinstance(norm, str) else f"{list(norm[0])}/{list(norm[1])}"


# -- choosing a plan (the caller's part) -----------------------------------------------------

def alignment(profile, *, align: bool, precision: str | None = None) -> int:
    """The channel multiple kept counts round to on ``profile`` (1 with ``align=False``)."""
    return profile.alignment(precision or profile.export_precision) if align else 1


def groups_of(lm: LoadedModel, options: PruneOptions, kind: str):
    """``(every group, prunable groups)`` of ``lm`` traced on its input; one line if none can be pruned."""
    if lm.base is None:
        raise PruneError(
            f"{lm.source}: {lm.notes[0] if lm.notes else 'cannot be pruned'}; "
            "give the Python factory (--model pkg.module:function --weights FILE)"
        )
    step("tracing coupled channel groups")
    x = example_input(tuple(lm.input_shape))
    every = prunable_groups(lm.module, x, protect=options.protect, protect_stem=options.stem_for(kind),
                            include_protected=True)
    groups = [g for g in every if g.prunable]
    if not groups:
        raise PruneError(f"{lm.name}: no prunable channel groups (every group is protected or an output)")
    return every, groups


def uniform_plan(lm: LoadedModel, ratio: float, *, profile, options: PruneOptions) -> ChannelPlan:
    """``--ratio R``: remove the fraction R of every prunable group's channels, aligned to the board."""
    _, groups = groups_of(lm, options, "ratio")
    return ChannelPlan.uniform(groups, ratio, align=alignment(profile, align=options.align),
                               input_shape=tuple(lm.input_shape), base=lm.base)


def read_plan(path: str | os.PathLike[str], lm: LoadedModel) -> ChannelPlan:
    """``--plan FILE``: a channel plan JSON written earlier (one line if it is not one)."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"--plan {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PruneError(f"--plan {path}: not a text file; give the plan.json that edgeprune prune wrote") from None
    plan = ChannelPlan.from_json(text, where=str(path))
    plan.base = plan.base or lm.base
    return plan


# a detector's Taylor scores: images at 224 px and below, fewer above (the backward pass grows with the pixels)
DETECT_TAYLOR_IMAGES, DETECT_TAYLOR_BATCH = 256, 32


def importance_batches(split, *, importance: str, budget: bool, given: Any = None, name: str = "the model",
                       task: str = "classify", module: Any = None):
    """Batches for channel importance: ``given`` (the API's iterable of batches), else the data's train
    split when Taylor scores need it (``--importance taylor``, or a budget with ``--data``, whose
    sensitivity compares groups); None otherwise. One line when Taylor has no data.

    A classifier's Taylor scores are the loss of its labels. A detector's
    (``module``: an Ultralytics model, whose library has the loss) are the
    loss of its labelled boxes (:class:`edgeprune.tasks.detect_loss.DetectionTaylorBatches`),
    from :data:`DETECT_TAYLOR_IMAGES` training images: with labelled
    ``--data`` its budget's allocation compares groups by them, as a
    classifier's does. Without labels, or without the library's loss, a
    detector's channels are scored by magnitude."""
    if task == "detect":
        return _detection_batches(split, importance=importance, budget=budget, given=given, name=name,
                                  module=module)
    if task != "classify":
        if importance == "taylor":
            raise PruneError(f"--importance taylor scores channels by a classifier's or a detector's loss; '{name}' "
                             f"is a {task} model: use --importance l1 (the default), l2 or bn")
        return None
    batches = list(given) if given is not None else None
    if batches is None and split is not None and split.train.labelled and (importance == "taylor" or budget):
        batches = list(split.train.batches(64, limit=512))
    if importance == "taylor" and batches is None:
        raise PruneError(
            "--importance taylor needs data: give --data (labelled: a folder of class folders, .npz, "
            f"pkg.mod:fn, or a built-in data set); '{name}' has none of its own here"
        )
    return batches


def _detection_batches(split, *, importance: str, budget: bool, given: Any, name: str, module: Any):
    own_loss = module is not None and supports_supervised(module)
    labelled = split is not None and split.train.labelled
    if importance == "taylor" and not (own_loss and (labelled or given is not None)):
        why = ("its library has no detection loss here (an Ultralytics model has one)" if not own_loss else
               "it needs labelled boxes: give --data with labels (a YOLO folder's data.yaml, or COCO JSON)")
        raise PruneError(f"--importance taylor scores a detector's channels by its own loss on labelled boxes; for "
                         f"'{name}' {why}; or use --importance l1 (the default), l2 or bn")
    if not own_loss:
        return None
    if given is not None:
        return DetectionTaylorBatches(given)
    if not labelled or not (importance == "taylor" or budget):
        return None
    h, w = split.train.input_size
    images = int(max(DETECT_TAYLOR_BATCH, min(DETECT_TAYLOR_IMAGES, DETECT_TAYLOR_IMAGES * 224 * 224 / (h * w))))
    return DetectionTaylorBatches(split.train.batches(DETECT_TAYLOR_BATCH, limit=images))


# -- the stage -------------------------------------------------------------------------------

def _check_inputs(lm: LoadedModel, n: int, split=None) -> torch.Tensor:
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


def export_checked(model, lm: LoadedModel, path: Path, *, metadata: dict[str, str], split=None) -> dict:
    """Export to ONNX and compare with PyTorch; returns the agreement figures."""
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
def prune_to_plan(
    lm: LoadedModel,
    plan: ChannelPlan,
    *,
    profile,
    target: str,
    output: str | os.PathLike[str],
    options: PruneOptions,
    kind: str = "plan",
    split=None,
    batches=None,
    ratio: float | None = None,
    attach: dict[str, Callable[[Path], None]] | None = None,
) -> PruneResult:
    """Prune a copy of ``lm`` to ``plan`` and write the stage's files into ``output``; see the module docstring.

    ``kind``: 'ratio', 'budget' or 'plan' (which protections apply: the stem,
    :meth:`PruneOptions.stem_for`). ``split``: the data (a DataSplit) for the
    ONNX check's inputs and the accuracy before and after (its held-out
    split); ``batches``: importance batches (:func:`importance_batches`).
    ``attach``: ``{file name: writer(path)}`` for more files in the same
    folder (the latency search's table, the artifact the board measured).
    The files are written into a staging folder and swapped into ``output``
    only when all are complete (:func:`edgeprune._paths.staged_output`).
    ``lm`` itself is not changed.
    """
    final = Path(output).expanduser()
    every, groups = groups_of(lm, options, kind)
    shape = tuple(lm.input_shape)
    net = copy.deepcopy(lm.module)
    macs0, params0 = count_macs_params(net, shape)
    acc0 = _accuracy(split, net, lm)
    step("removing channels and checking the surgery")
    prune_(net, plan, importance=options.importance, data=batches, protect=options.protect,
           protect_stem=options.stem_for(kind), x=example_input(shape), verify=options.verify)
    macs1, params1 = count_macs_params(net, shape)
    pruned = lm.derive(net.eval(), plan=plan, source=str(final / "model.ept"))
    with staged_output(output) as out:
        files = {"model": final / "model.ept", "plan": final / "plan.json", "onnx": final / "model.onnx",
                 "summary": final / "summary.json"}
        save_pruned(net, plan, out / "model.ept", name=lm.name, task=lm.task, earlier=pruned.earlier_plans,
                    original=pruned.original, normalize=lm.normalize)
        atomic_write_text(out / "plan.json", plan.to_json() + "\n")
        step("exporting ONNX and checking it against PyTorch")
        agree = export_checked(net, lm, out / "model.onnx", split=split, metadata={
            "edgeprune.base": lm.base, "edgeprune.target": target, "edgeprune.plan": plan.note})
        for name, write in (attach or {}).items():
            write(out / name)
            files[Path(name).stem] = final / name
        result = PruneResult(
            model=pruned, plan=plan, files=files, target=target, ratio=ratio, align=plan.align,
            importance=options.importance, groups_total=len(groups), protected=kept_whole(every, plan),
            params_before=params0, params_after=params1, macs_before=macs0, macs_after=macs1,
            onnx_check={k: agree[k] for k in ("max_abs", "mean_abs", "cosine", "top1", "tolerance", "passed")},
            notes=plan.ratio_notes(ratio, groups) if ratio is not None else [],
            latency=plan.latency, data=split.to_dict() if split is not None else None,
        )
        if acc0 is not None:
            n = min(len(split.heldout), ACCURACY_SAMPLES)  # as _accuracy measures
            result.accuracy_before, result.accuracy_after = acc0, _accuracy(split, net, lm)
            what = "top-1" if lm.task == "classify" else "mAP50-95"
            n = min(n, DETECT_ACCURACY_SAMPLES) if lm.task != "classify" else n
            result.accuracy_note = f"{what} on {n} held-out images ({split.heldout.source}), before fine-tuning"
        atomic_write_text(out / "summary.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result


def _accuracy(split, net, lm: LoadedModel) -> float | None:
    """The task's figure on the held-out split (labelled data only: top-1, or a detector's mAP50-95)."""
    if split is None or not split.heldout.labelled:
        return None
    held = split.heldout
    samples = ACCURACY_SAMPLES if lm.task == "classify" else DETECT_ACCURACY_SAMPLES
    if len(held) > samples:  # evenly spread: a split in class order still gives every class
        held = held.subset(np.linspace(0, len(held) - 1, samples).round().astype(int))
    objective = objective_for(lm.derive(net, plan=lm.plan), labelled=True, training=False)
    return round(objective.measure(net, held)[objective.metric], 4)
