"""Saving and loading pruned models without unpickling code: the ``.ept`` file.

An ``.ept`` file is ``torch.save`` of a dict holding only strings and tensors,
so ``torch.load(weights_only=True)`` reads it and no code runs::

    {"format": "edgeprune.pruned-model", "version": 1,
     "meta": "<JSON: base, name, task, input_shape, plans (each with its rewrites)>",
     "state_dict": {...pruned weights...}}

Loading rebuilds the base architecture (a built-in name, or the user's
``pkg.mod:fn`` factory), applies the recorded rewrites and the plan
structurally (importance 'first': only shapes matter; a model pruned twice
has two plans, applied in order), then loads the
state_dict strictly. A different architecture fails with one line.

Example::

    save_pruned(model, plan, "out/model.ept", name="mobilenetv2", task="classify")
    lm = load_pruned("out/model.ept")     # LoadedModel; lm.plan is the ChannelPlan
"""

from __future__ import annotations

import io
import json
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


def read_ept(path: Path, blob: dict | None = None) -> tuple[dict, dict]:
    """``(meta, state_dict)`` of an ``.ept`` file, read with ``weights_only=True``."""
    from edgeprune.models.loading import safe_torch_load

    blob = safe_torch_load(path) if blob is None else blob
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not an edgeprune pruned model (.ept)")
    if blob.get("version") != VERSION:
        raise ModelError(
            f"{path}: .ept version {blob.get('version')!r}; this edgeprune reads {VERSION}"
        )
    try:
        meta = json.loads(blob["meta"])
        state = dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: damaged .ept file ({type(exc).__name__})") from None
    return meta, state


def load_pruned(path: str | os.PathLike[str], *, blob: dict | None = None):
    """Rebuild a pruned model from its ``.ept`` file; returns a LoadedModel."""
    from edgeprune.models import LoadedModel
    from edgeprune.models.loading import build_base
    from edgeprune.prune.apply import prune_

    path = Path(path)
    meta, state = read_ept(path, blob)
    try:
        plans = [ChannelPlan.from_dict(p, where=str(path)) for p in meta["plans"]]
    except (KeyError, TypeError):
        raise ModelError(f"{path}: damaged .ept file (no plans)") from None
    model = build_base(meta["base"], input_shape=tuple(meta["input_shape"])).module
    try:
        for plan in plans:
            prune_(model, plan, importance="first", protect_stem=False, verify=False)
    except EdgePruneError as exc:
        raise ModelError(f"{path}: its plan does not fit {meta['base']}: {exc}") from None
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
