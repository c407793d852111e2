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

from edgeprune._paths import atomic_write_bytes
from edgeprune.errors import EdgePruneError, ModelError
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
) -> Path:
    """Write ``model`` (pruned to ``plan``) as an ``.ept`` file, atomically.

    ``earlier``: plans applied before ``plan`` (pruning an already pruned
    model); loading applies them all, in order.
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
    import torch

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
    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
        what = f"entry {str(bad)[:60]!r} is not a tensor" if bad is not None else "no tensors"
        raise _refuse(path, f"its state_dict {what}")


def read_ept(path: Path, blob: dict | None = None) -> tuple[dict, dict]:
    """``(meta, state_dict)`` of an ``.ept`` file, read with ``weights_only=True`` and type-checked.

    Nothing named in the file is imported or called here.
    """
    from edgeprune.models.loading import safe_torch_load

    blob = safe_torch_load(path) if blob is None else blob
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not an edgeprune pruned model (.ept)")
    if blob.get("version") != VERSION:
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


def check_base(base: str, path: Path, trust_factory: str | None) -> None:
    """Allow a built-in base, or a factory base equal to the one the user trusted; else refuse."""
    from edgeprune.models import _REGISTRY
    from edgeprune.models.loading import is_factory

    if base in _REGISTRY:
        return
    if not is_factory(base):
        raise ModelError(
            f"{path}: unknown base architecture {base[:80]!r} (built-in: {', '.join(_REGISTRY)})"
        )
    if trust_factory != base:
        raise trust_refusal(path, base, trust_factory)


def load_pruned(
    path: str | os.PathLike[str], *, blob: dict | None = None, trust_factory: str | None = None
):
    """Rebuild a pruned model from its ``.ept`` file; returns a LoadedModel.

    A built-in base is looked up in the registry; a factory base
    (``pkg.mod:fn``) is called only when ``trust_factory`` names the same
    factory, else :class:`ModelError` says how to trust it. A plan that does
    not fit, or weights that do not, are one line each.
    """
    from edgeprune.models import LoadedModel
    from edgeprune.models.loading import build_base
    from edgeprune.prune.apply import example_input, prune_

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
    return LoadedModel(
        module=model.eval(),
        input_shape=tuple(meta["input_shape"]),
        name=meta["name"],
        source=str(path),
        task=meta["task"],
        base=meta["base"],
        plan=plans[-1],
        earlier_plans=plans[:-1],
        pretrained=True,
    )
