"""The shape of a task entry: :class:`Task` and the lazy function references it holds (:class:`Ref`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class Ref:
    """``"package.module:function"``, imported when first called (keeps ``import edgeprune`` fast)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._fn: Callable | None = None

    def resolve(self) -> Callable:
        if self._fn is None:
            mod, _, attr = self.target.partition(":")
            self._fn = getattr(importlib.import_module(mod), attr)
        return self._fn

    def __call__(self, *args, **kwargs):
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Ref({self.target!r})"


@dataclass(frozen=True)
class Task:
    """One task: what ``--data`` may be, how inputs are prepared, how a model is scored and trained.

    ``metric``: the figure ``--max-accuracy-drop`` compares, in points,
    against the original (``metric_name`` says it in words);
    ``agreement_name``: the figure used without labels. ``open_data``,
    ``evaluate``, ``agreement``, ``distill_loss``, ``supervised_loss``,
    ``train_step`` are callables (see each module); None where the task has
    none yet.
    """

    name: str
    data_formats: tuple[str, ...]
    preprocessing: str
    metric: str
    metric_name: str
    agreement_name: str
    open_data: Ref
    evaluate: Ref
    agreement: Ref
    distill_loss: Ref
    supervised_loss: Ref | None = None
    train_step: Ref | None = None
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "data": list(self.data_formats), "preprocessing": self.preprocessing,
                "metric": self.metric, "metric_name": self.metric_name, "agreement": self.agreement_name}


__all__ = ["Ref", "Task"]
