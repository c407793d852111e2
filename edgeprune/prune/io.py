"""Saving and loading pruned models without unpickling code: the ``.ept`` file.

An ``.ept`` file is ``torch.save`` of a dict holding only strings and tensors,
so ``torch.load(weights_only=True)`` reads it and no code runs::

    {"format": "edgeprune.pruned-model", "version": 1,
     "meta": "<JSON: base, name, task, input_shape, plans (each with its rewrites)>",
     "state_dict": {...pruned weights...}}

Loading rebuilds the base architecture, applies the recorded rewrites and
the plan structurally (importance 'first': only shapes matter; a model pruned
twice has two plans, applied in order), then loads the state_dict strictly.
A different architecture fails with one line.

Reading a file never imports or calls anything named inside it: a built-in
base is looked up in the registry; a factory base (``pkg.mod:fn``) is built
only when the caller names the same factory (``trust_factory=``; CLI
``--trust-factory pkg.mod:fn`` or ``--model pkg.mod:fn --weights model.ept``).
Everything read is type-checked first (strings, a bounded input shape,
tensors only in the state_dict).

Example::

    save_pruned(model, plan, "out/model.ept", name="mobilenetv2", task="classify")
    lm = load_pruned("out/model.ept")     # LoadedModel; lm.plan is the ChannelPlan
    lm = load_pruned("mine.ept", trust_factory="myzoo:tiny")   # a factory base, trusted
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from edgeprune._paths import atomic_write_bytes, sha256_file
from edgeprune.errors import EdgePruneError, ModelError
from edgeprune.models import _REGISTRY, LoadedModel, pretrained_available
from edgeprune.models.loading import build_base, is_factory, load_weights, safe_torch_load
from edgeprune.progress import printable
from edgeprune.prune.apply import example_input, prune_
from edgeprune.prune.plan import ChannelPlan
from edgeprune.prune.rewrite import rewritten_blocks

FORMAT = "edgeprune.pruned-model"
VERSION = 1
SUFFIX = ".ept"
# Bounds on the input shape a file may ask for: tracing allocates it.
MAX_SIDE = 8192
MAX_INPUT_ELEMENTS = 1 << 26


def save_pruned(
    model: nn.Module,
    plan: ChannelPlan,
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    task: str = "classify",
    earlier: tuple[ChannelPlan, ...] | list[ChannelPlan] = (),
    original=None,
    normalize=None,
) -> Path:
    """Write ``model`` (pruned to ``plan``) as an ``.ept`` file, atomically.

    ``earlier``: plans applied before ``plan`` (pruning an already pruned
    model); loading applies them all, in order. ``original``: the unpruned
    LoadedModel it was pruned from; when its weights came from a file, that
    file's path and sha256 are recorded, so that loading the ``.ept`` (with
    its factory trusted) finds the original to compare with and distil
    from. ``normalize``: the preprocessing the model's inputs get.
    """
    if not plan.base:
        raise ModelError(
            "cannot save a pruned model whose plan has no base architecture "
            "(a built-in name or pkg.mod:fn); set plan.base"
        )
    if not plan.input_shape:
        raise ModelError("cannot save a pruned model whose plan has no input_shape; prune it first")
    plan.rewrites = rewritten_blocks(model)
    meta = {
        "base": plan.base,
        "name": name or plan.base,
        "task": task,
        "input_shape": list(plan.input_shape),
        "plans": [p.to_dict() for p in (*earlier, plan)],
    }
    weights_file = getattr(original, "weights_sha256", None) and getattr(original, "weights", None)
    if weights_file:
        meta["original_weights"] = {"file": str(weights_file), "sha256": original.weights_sha256}
    if normalize is not None:
        meta["normalize"] = normalize if isinstance(normalize, str) else [list(normalize[0]), list(normalize[1])]
    buf = io.BytesIO()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(
        {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta), "state_dict": state}, buf
    )
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _refuse(path: Path, why: str) -> ModelError:
    return ModelError(f"{path}: damaged or hostile .ept file ({why}); nothing in it was run")


def _check_meta(meta, state, path: Path) -> None:
    """Types and sizes of everything read from the file, before any of it is used."""
    if not isinstance(meta, dict):
        raise _refuse(path, "its meta is not an object")
    for key in ("base", "name", "task"):
        if not isinstance(meta.get(key), str) or not meta[key] or len(meta[key]) > 300:
            raise _refuse(path, f"meta '{key}' is not a short string")
    if meta["task"] not in ("classify", "detect"):
        raise _refuse(path, f"task {meta['task'][:40]!r}")
    shape = meta.get("input_shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[0] != 1
        or min(shape) < 1
        or max(shape) > MAX_SIDE
        or math.prod(shape) > MAX_INPUT_ELEMENTS
    ):
        raise _refuse(path, f"input_shape {str(shape)[:60]} is not 4 sizes, batch 1, within {MAX_SIDE}")
    if not isinstance(meta.get("plans"), list) or not meta["plans"]:
        raise _refuse(path, "no plans")
    for i, p in enumerate(meta["plans"]):
        try:
            ChannelPlan.from_dict(p, where=f"plans[{i}]")
        except EdgePruneError as exc:
            raise _refuse(path, str(exc)) from None
    ow = meta.get("original_weights")
    if ow is not None and not (isinstance(ow, dict) and isinstance(ow.get("file"), str) and len(ow["file"]) < 4096
                               and isinstance(ow.get("sha256"), str) and len(ow["sha256"]) == 64):
        raise _refuse(path, "its original_weights is not a file name and a sha256")
    norm = meta.get("normalize")
    if norm is not None and not (norm in ("imagenet", "unit") or (
            isinstance(norm, list) and len(norm) == 2 and all(
                isinstance(v, list) and 0 < len(v) <= 4 and all(
                    isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) for f in v)
                for v in norm) and min(norm[1]) > 0)):
        raise _refuse(path, f"normalize {str(norm)[:40]!r}")
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
        what = f"entry {str(bad)[:60]!r} is not a tensor" if bad is not None else "no tensors"
        raise _refuse(path, f"its state_dict {what}")


def read_ept(path: Path, blob: dict | None = None) -> tuple[dict, dict]:
    """``(meta, state_dict)`` of an ``.ept`` file, read with ``weights_only=True`` and type-checked.

    Nothing named in the file is imported or called here.
    """
    blob = safe_torch_load(path) if blob is None else blob
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not an edgeprune pruned model (.ept)")
    if isinstance(blob.get("version"), bool) or blob.get("version") != VERSION:
        raise ModelError(
            f"{path}: .ept version {str(blob.get('version'))[:20]!r}; this edgeprune reads {VERSION}"
        )
    try:
        meta = json.loads(blob["meta"])
        state = dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: damaged .ept file ({type(exc).__name__})") from None
    _check_meta(meta, state, path)
    return meta, state


def trust_refusal(path: Path, base: str, trusted: str | None = None) -> ModelError:
    """The one-line refusal for an .ept whose base is a factory the user did not name."""
    other = f" (you trusted '{trusted}', a different factory)" if trusted else ""
    return ModelError(
        f"{path}: its base architecture is the Python factory '{base}'{other}, and edgeprune "
        "never imports code named inside a model file; if you trust that code, run again with "
        f"--trust-factory {base} (or --model {base} --weights {path}; in Python: "
        f"load_model(..., trust_factory='{base}'))"
    )


def _trusted(trust_factory) -> tuple[str, ...]:
    if trust_factory is None:
        return ()
    return (trust_factory,) if isinstance(trust_factory, str) else tuple(trust_factory)


def check_base(base: str, path: Path, trust_factory) -> None:
    """Allow a built-in base, or a factory base among the ones the user trusted; else refuse."""
    if base in _REGISTRY:
        return
    if not is_factory(base):
        raise ModelError(
            f"{path}: unknown base architecture {base[:80]!r} (built-in: {', '.join(_REGISTRY)})"
        )
    trusted = _trusted(trust_factory)
    if base not in trusted:
        raise trust_refusal(path, base, trusted[0] if trusted else None)


def _original(meta: dict, path: Path):
    """The unpruned original of an ``.ept``, with its trained weights, when they can be found; else None.

    A built-in base: its built-in trained weights. A factory base (already
    trusted by the caller): the weights file recorded in the ``.ept``, when it
    is still there with the same sha256.
    """
    base, shape = meta["base"], tuple(meta["input_shape"])
    if base in _REGISTRY:
        if not pretrained_available(base):
            return None
        lm = build_base(base, pretrained=True, input_shape=shape)
        lm.weights, lm.pretrained = "built-in trained", True
        return lm
    ow = meta.get("original_weights")
    if not ow:
        return None
    wpath = Path(ow["file"])
    try:
        if not wpath.is_file() or sha256_file(wpath) != ow["sha256"]:
            return None
    except OSError:
        return None
    lm = build_base(base, pretrained=False, input_shape=shape)
    load_weights(lm.module, wpath)
    lm.module.eval()
    lm.weights, lm.weights_sha256, lm.pretrained = str(wpath), ow["sha256"], True
    return lm


def load_pruned(
    path: str | os.PathLike[str], *, blob: dict | None = None, trust_factory=None, original=None,
):
    """Rebuild a pruned model from its ``.ept`` file; returns a LoadedModel.

    A built-in base is looked up in the registry; a factory base
    (``pkg.mod:fn``) is called only when ``trust_factory`` (one factory or
    several) names the same factory, else :class:`ModelError` says how to
    trust it. A plan that does not fit, or weights that do not, are one line
    each. ``original``: the unpruned original the caller already holds;
    else it is rebuilt where it can be (:func:`_original`).
    """

    path = Path(path)
    meta, state = read_ept(path, blob)
    check_base(meta["base"], path, trust_factory)
    try:
        plans = [ChannelPlan.from_dict(p, where=str(path)) for p in meta["plans"]]
    except (KeyError, TypeError, AttributeError):
        raise ModelError(f"{path}: damaged .ept file (its plans)") from None
    except EdgePruneError as exc:
        raise ModelError(str(exc)) from None
    model = build_base(meta["base"], input_shape=tuple(meta["input_shape"])).module
    x = example_input(tuple(meta["input_shape"]))
    try:
        for plan in plans:
            prune_(model, plan, importance="first", protect_stem=False, verify=False, x=x)
    except EdgePruneError as exc:
        raise ModelError(f"{path}: its plan does not fit {meta['base']}: {exc}") from None
    except Exception as exc:  # a hostile plan can make the tracer or slicer fail in many ways
        raise ModelError(
            f"{path}: its plan does not fit {meta['base']} ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise ModelError(
            f"{path}: its weights do not fit {meta['base']} pruned to its plan ({detail})"
        ) from None
    if original is None:
        original = _original(meta, path)
    norm = meta.get("normalize")
    lm = LoadedModel(
        module=model.eval(),
        input_shape=tuple(meta["input_shape"]),
        name=printable(meta["name"]),  # printed and used in file names: no terminal escapes from a file
        source=str(path),
        task=meta["task"],
        base=meta["base"],
        plan=plans[-1],
        earlier_plans=plans[:-1],
        pretrained=True,
        weights=str(path),
        trusted=_trusted(trust_factory),
        input_shape_source="recorded in the pruned model",
        original=original,
        normalize=norm if isinstance(norm, str) or norm is None else (tuple(norm[0]), tuple(norm[1])),
        normalize_source="recorded in the pruned model" if norm is not None else "",
    )
    if original is None:
        lm.notes.append(f"{path}: its unpruned original with trained weights is not known here "
                        + ("(the built-in base has no trained weights here)" if meta["base"] in _REGISTRY
                           else "(the weights file it was pruned from is not recorded or has changed)")
                        + "; give --teacher to compare with it")
    return lm

