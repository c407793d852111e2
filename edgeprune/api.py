"""The Python API: one function per CLI command, same names for the same options.

=================================  ====================================================
CLI                                Python
=================================  ====================================================
``edgeprune targets list``         ``edgeprune.list_profiles()``
``edgeprune targets show NAME``    ``edgeprune.load_profile(NAME).resolved()``
``edgeprune models``               ``edgeprune.list_models()``
``edgeprune bench -t T MODEL``     ``edgeprune.bench_model(MODEL, target=T)``
``edgeprune prune ...``            ``edgeprune.prune_model(M, target=T, ratio=R, output=DIR)``
``prune --latency-budget MS``      ``edgeprune.prune_model(M, target=T, latency_budget=MS, output=DIR)``
``prune --speedup S``              ``edgeprune.prune_model(M, target=T, speedup=S, output=DIR)``
``edgeprune finetune ...``         ``edgeprune.finetune_model(EPT, data=D, output=DIR)``
``edgeprune export ...``           ``edgeprune.export_model(M, target=T, output=DIR)``
``edgeprune quantize ...``         ``edgeprune.quantize_model(M, target=T, output=DIR)``
(``deploy``'s ship stage)          ``edgeprune.ship_model(ARTIFACT, target=T, verify_inputs=X)``
``edgeprune deploy -t T ...``      ``edgeprune.deploy_model(M, target=T, speedup=S, output=DIR)``
``deploy -t T1 -t T2 ...``         ``edgeprune.deploy_model(M, target=[T1, T2], ..., output=DIR)``
``edgeprune releases -t T``        ``edgeprune.list_releases(T)``
``edgeprune rollback -t T``        ``edgeprune.rollback(T, to=ID)``
=================================  ====================================================

Each returns plain values (a dict, a ``BenchResult``, an ``ExportReport``) and
raises an :class:`~edgeprune.errors.EdgePruneError` subclass where the CLI
would print ``error: ...``. Example::

    import edgeprune

    summary = edgeprune.prune_model("mobilenetv2", target="raspberry-pi-5", ratio=0.3, output="out/")
    report = edgeprune.export_model(summary["model"], target="raspberry-pi-5", output="out/")
    result = edgeprune.bench_model(report.final.path, target="local")
    print(result.latency_ms["p50"])
"""

from __future__ import annotations

import os
from typing import Any


def bench_model(
    model: str | os.PathLike[str],
    *,
    target: str | list[str],
    host: str | None = None,
    runs: int = 100,
    warmup: int = 10,
    threads: int = 0,
    profile_ops: bool = False,
    timeout: float = 600.0,
    use_cache: bool = True,
    accept_new_host_key: bool = False,
):
    """Measure ``model`` (.onnx/.tflite) on one board (a ``BenchResult``) or several (a list).

    With several targets, boards are measured concurrently and each item of
    the list is a ``BenchResult`` or the ``EdgePruneError`` that board gave.
    """
    from edgeprune.bench.runner import BenchSettings, bench_many, bench_target
    from edgeprune.reach import resolve_target

    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads, profile_ops=profile_ops, timeout_s=timeout)
    names = [target] if isinstance(target, str) else list(target)
    reaches = [resolve_target(n, host=host) for n in names]
    if isinstance(target, str):
        return bench_target(reaches[0], model, settings=settings, use_cache=use_cache,
                            accept_new_host_key=accept_new_host_key)
    return bench_many(reaches, model, settings=settings, use_cache=use_cache,
                      accept_new_host_key=accept_new_host_key)


def prune_model(model: str, *, target: str, output: str | os.PathLike[str], **options: Any) -> dict:
    """``edgeprune prune``: see :func:`edgeprune.prune.pipeline.prune_model` for the options.

    Latency budgets: ``latency_budget=`` (ms) or ``speedup=``, with ``fmt=``,
    ``precision=``, ``max_rounds=``, ``min_keep=``, ``threads=``, ``estimate=``
    and ``data=`` (an iterable of ``(x, y)`` or ``x`` batches for Taylor
    importance); raises :class:`~edgeprune.errors.BudgetError` when the board
    measured the budget as not met (the summary is written first).
    """
    from edgeprune.prune.pipeline import prune_model as _prune

    return _prune(model, target=target, output=output, **options)


def finetune_model(model: Any, *, data: Any, output: str | os.PathLike[str], **options: Any) -> dict:
    """``edgeprune finetune``: see :func:`edgeprune.finetune.finetune_model` for the options."""
    from edgeprune.finetune import finetune_model as _finetune

    return _finetune(model, data=data, output=output, **options)


def export_model(model: Any, *, target: str, output: str | os.PathLike[str], **options: Any):
    """``edgeprune export``: see :func:`edgeprune.export.pipeline.export` for the options."""
    from edgeprune.export.pipeline import export

    return export(model, target=target, output_dir=output, **options)


def quantize_model(model: Any, *, target: str, output: str | os.PathLike[str], **options: Any):
    """``edgeprune quantize``: :func:`export_model` with ``precision="int8"``."""
    return export_model(model, target=target, output=output, precision="int8", **options)


def ship_model(artifact: str | os.PathLike[str], *, target: str | list[str], **options: Any):
    """Ship an artifact to one board (a ``ShipResult``) or several at once (a list).

    With several targets, each item is a ``ShipResult`` or that board's
    ``EdgePruneError``; one board's failure never stops the others. Options:
    see :func:`edgeprune.ship.ship_artifact` (``verify_inputs`` is required).
    """
    from edgeprune.ship import ship_artifact, ship_many

    if isinstance(target, str):
        return ship_artifact(artifact, target=target, **options)
    return ship_many(artifact, targets=list(target), **options)


def list_releases(target: str, **options: Any):
    """``edgeprune releases``: a ``ReleaseList`` (see :func:`edgeprune.ship.list_releases`)."""
    from edgeprune.ship import list_releases as _list

    return _list(target, **options)


def rollback(target: str, *, to: str | None = None, **options: Any):
    """``edgeprune rollback``: a ``RollbackResult`` (see :func:`edgeprune.ship.rollback`)."""
    from edgeprune.ship import rollback as _rollback

    return _rollback(target, to=to, **options)


def deploy_model(model: str, *, target: str | list[str], output: str | os.PathLike[str], **options: Any) -> dict:
    """``edgeprune deploy``: the eight stages to one board or several (see :mod:`edgeprune.deploy`).

    Options have the CLI's names: ``data``, ``val_data``, ``latency_budget``,
    ``speedup``, ``ratio``, ``max_accuracy_drop`` (default 1.0), ``force``,
    ``fmt``, ``precision``, ``weights``, ``trust_factory``, ``input_shape``,
    ``importance``, ``protect``, ``epochs``, ``steps``, ``time_budget``,
    ``max_rounds``, ``min_keep``, ``threads``, ``host``, ``accept_new_host_key``,
    ``keep``, ``use_cache``, ``fresh``. One target returns its report dict and
    raises the failing stage's error (``GateError`` below the gate); several
    return ``{"ok": ..., "targets": [...]}``, one board's failure never
    stopping the others.
    """
    from edgeprune.deploy import deploy_model as _deploy

    return _deploy(model, target=target, output=output, **options)
