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

from edgeprune.bench.runner import BenchSettings, bench_many, bench_target
from edgeprune.boards.reach import resolve_target
from edgeprune.errors import PruneError
from edgeprune.models import _REGISTRY, LoadedModel
from edgeprune.validate import check_all

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.


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
    parallel: int = 4,
    canary: int = 0,
):
    """Measure ``model`` (.onnx/.tflite) on one board (a ``BenchResult``) or several (a list).

    With several targets, ``parallel`` boards are measured at a time (``canary``: the first K first,
    the rest only if they all succeed) and each item of the list is a ``BenchResult``, the
    ``EdgePruneError`` that board gave, or a ``NotStarted``.
    """
    settings = BenchSettings(runs=runs, warmup=warmup, threads=threads, profile_ops=profile_ops, timeout_s=timeout)
    names = [target] if isinstance(target, str) else list(target)
    reaches = [resolve_target(n, host=host) for n in names]
    if isinstance(target, str):
        return bench_target(reaches[0], model, settings=settings, use_cache=use_cache,
                            accept_new_host_key=accept_new_host_key)
    return bench_many(reaches, model, settings=settings, use_cache=use_cache,
                      accept_new_host_key=accept_new_host_key, parallel=parallel, canary=canary)


def _model(model: Any, *, weights=None, input_shape=None, trust_factory=None, normalize=None, data=None,
           teacher=None, task=None):
    """``model`` as a LoadedModel: loaded here from a ``--model`` spec (said on the terminal), or as given."""
    from edgeprune.load import load_model, say_loaded

    if isinstance(model, LoadedModel):
        return model
    spec_data = data if isinstance(data, (str, os.PathLike)) else None
    lm = load_model(model, weights=weights, input_shape=input_shape, trust_factory=trust_factory,
                    normalize=normalize, data=spec_data, task=task)
    if teacher is not None:
        lm.original = teacher
    say_loaded(lm)
    return lm


def _teacher(teacher: Any, lm, trust_factory=None):
    """``--teacher``: the unpruned original with its weights, loaded at the pruned model's input size."""
    if teacher is None:
        return None
    from edgeprune.load import load_model

    if isinstance(teacher, LoadedModel):
        return teacher
    from edgeprune.finetune.run import check_teacher

    spec = str(teacher)
    loaded = load_model(spec, input_shape=None if spec in _REGISTRY else tuple(lm.input_shape),
                        trust_factory=trust_factory, normalize=lm.normalize)
    check_teacher(loaded, lm, name=spec)
    return loaded


def _split(lm, data: Any, *, val_data=None, val_fraction: float = 0.1, limit=None, seed: int = 0):
    """The data for ``lm``: ``data`` (any ``--data`` spec, or a DataSplit), else the model's own built-in set."""
    from edgeprune.data import DataOptions
    from edgeprune.load import split_for_model

    return split_for_model(lm, DataOptions(data=data, val_data=val_data, val_fraction=val_fraction, limit=limit,
                                           seed=seed))


def prune_model(
    model: Any,
    *,
    target: str,
    output: str | os.PathLike[str],
    ratio: float | None = None,
    plan_file: str | os.PathLike[str] | None = None,
    latency_budget: float | None = None,
    speedup: float | None = None,
    weights: str | None = None,
    trust_factory: str | None = None,
    task: str | None = None,
    input_shape: Any = None,
    normalize: Any = None,
    data: Any = None,
    val_data: Any = None,
    val_fraction: float = 0.1,
    importance: str = "l1",
    protect: tuple[str, ...] = (),
    align: bool = True,
    protect_stem: bool | None = None,
    verify: bool = True,
    fmt: str | None = None,
    precision: str | None = None,
    io_precision: str | None = None,
    max_rounds: int = 5,
    tolerance: float = 0.10,
    min_keep: float | None = None,
    threads: int = 0,
    estimate: bool = False,
    host: str | None = None,
    delegate: str | None = None,
    use_cache: bool = True,
    accept_new_host_key: bool = False,
) -> dict:
    """``edgeprune prune``: exactly one of ``ratio``, ``plan_file``, ``latency_budget`` (ms) or ``speedup``.

    ``model``: a ``--model`` spec (loaded here with ``weights``,
    ``input_shape``, ``trust_factory``, ``normalize``) or a LoadedModel.
    ``data``: any ``--data`` spec (its train split for Taylor importance, its
    held-out split for the ONNX check and the accuracy before and after), or
    an iterable of ``(x, y)`` / ``x`` batches (importance only). With a budget
    (the board measures it; ``estimate=True`` plans from the profile alone)
    raises :class:`~edgeprune.errors.BudgetError` when the board measured it
    as not met, after writing everything. Returns ``summary.json``'s dict.
    """
    from edgeprune.data import Dataset, DataSplit
    from edgeprune.prune.pipeline import PruneOptions, prune_to_plan, read_plan, uniform_plan

    if sum(v is not None for v in (ratio, plan_file, latency_budget, speedup)) != 1:
        raise PruneError("give exactly one of --ratio R, --plan FILE, --latency-budget MS or --speedup S")
    check_all(ratio=ratio, val_fraction=val_fraction)  # before anything is loaded
    options = PruneOptions(importance=importance, protect=tuple(protect), align=align, protect_stem=protect_stem,
                           verify=verify)
    budgeted = latency_budget is not None or speedup is not None
    if budgeted:
        from edgeprune.latency.job import BudgetOptions

        budget = BudgetOptions(latency_budget=latency_budget, speedup=speedup, fmt=fmt, precision=precision,
                               io_precision=io_precision, max_rounds=max_rounds, tolerance=tolerance,
                               min_keep=min_keep, threads=threads, estimate=estimate, use_cache=use_cache)
    # an unknown board is refused before anything is loaded; a board's address is needed only for a budget
    reach = resolve_target(target, host=host, board=budgeted and not estimate, delegate=delegate)
    batches = None
    if data is not None and not isinstance(data, (str, os.PathLike, Dataset, DataSplit)):
        batches, data = list(data), None  # an iterable of batches: importance only
    lm = _model(model, weights=weights, input_shape=input_shape, trust_factory=trust_factory,
                normalize=normalize, data=data, task=task)
    split = _split(lm, data, val_data=val_data, val_fraction=val_fraction)
    if budgeted:
        from edgeprune.latency.job import prune_for_budget

        return prune_for_budget(lm, reach=None if estimate else reach, profile=reach.profile, budget=budget,
                                options=options, output=output, split=split, batches=batches,
                                accept_new_host_key=accept_new_host_key).to_dict()
    if ratio is not None:
        plan, kind = uniform_plan(lm, ratio, profile=reach.profile, options=options), "ratio"
    else:
        plan, kind = read_plan(plan_file, lm), "plan"
    from edgeprune.prune.pipeline import importance_batches

    batches = importance_batches(split, importance=importance, budget=False, given=batches, name=lm.name,
                                 task=lm.task, module=lm.module)
    return prune_to_plan(lm, plan, profile=reach.profile, target=target, output=output, options=options,
                         kind=kind, split=split, batches=batches, ratio=ratio).to_dict()


def finetune_model(
    model: Any,
    *,
    data: Any,
    output: str | os.PathLike[str],
    teacher: Any = None,
    trust_factory: str | None = None,
    val_data: Any = None,
    val_fraction: float = 0.1,
    normalize: Any = None,
    limit: int | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    time_budget: float | None = None,
    device: str = "cpu",
    lr: float | None = None,
    optimizer: str = "sgd",
    batch_size: int = 64,
    temperature: float = 4.0,
    alpha: float = 0.9,
    patience: int = 3,
    augment: str | None = None,
    seed: int = 0,
    max_accuracy_drop: float | None = None,
    threads: int | None = None,
    amp: str | None = None,
    sync_bn: bool = False,
    on_event=None,
) -> dict:
    """``edgeprune finetune``: distil the pruned ``model`` (an ``.ept`` or a LoadedModel) on ``data``.

    The teacher is ``teacher`` (the unpruned model with its weights: a spec or
    a LoadedModel), else the ``.ept``'s own original (a built-in base's
    trained weights, or the weights file the ``.ept`` records for a factory
    you trust). Returns ``finetune.json``'s dict; see
    :mod:`edgeprune.finetune` for the recipe. A script that calls it under
    torchrun trains in DistributedDataParallel (:mod:`edgeprune.finetune.distributed`):
    rank 0 gets the dict, the other ranks ``{"rank": r, "world_size": n}``.
    ``amp``: ``"bf16"`` or ``"fp16"`` (GPUs) mixed precision.
    """
    from edgeprune.finetune.run import FinetuneOptions
    from edgeprune.finetune.run import finetune_model as _finetune

    check_all(val_fraction=val_fraction, limit=limit)  # before anything is loaded
    options = FinetuneOptions(epochs=epochs, steps=steps, time_budget=time_budget, device=device, lr=lr,
                              optimizer=optimizer, batch_size=batch_size, temperature=temperature, alpha=alpha,
                              patience=patience, augment=augment, seed=seed, max_accuracy_drop=max_accuracy_drop,
                              threads=threads, amp=amp, sync_bn=sync_bn)
    lm = _model(model, trust_factory=trust_factory, normalize=normalize)
    teach = _teacher(teacher, lm, trust_factory)
    split = _split(lm, data, val_data=val_data, val_fraction=val_fraction, limit=limit, seed=seed)
    return _finetune(lm, split=split, output=output, options=options, teacher=teach, on_event=on_event).to_dict()


def export_model(
    model: Any,
    *,
    target: str,
    output: str | os.PathLike[str],
    fmt: str | None = None,
    precision: str | None = None,
    io_precision: str | None = None,
    weights: str | None = None,
    trust_factory: str | None = None,
    task: str | None = None,
    input_shape: Any = None,
    normalize: Any = None,
    data: Any = None,
    val_data: Any = None,
    calib: Any = None,
    calib_count: int = 128,
    verify_count: int | None = None,
    accuracy_count: int | None = None,
    min_agreement: Any = None,
    quantizer: str | None = None,
    name: str | None = None,
    detector_outputs: str = "split",
    max_accuracy_drop: float | None = None,
    log_file: str | os.PathLike[str] | None = None,
):
    """``edgeprune export``: an ``ExportReport`` (every artifact, its checks and accuracy; see
    :func:`edgeprune.export.pipeline.export`)."""
    from edgeprune.export.calib import ACCURACY_COUNT, VERIFY_COUNT
    from edgeprune.export.pipeline import ExportOptions, export

    options = ExportOptions(fmt=fmt, precision=precision, io_precision=io_precision, calib=calib,
                            calib_count=calib_count, verify_count=verify_count or VERIFY_COUNT,
                            accuracy_count=accuracy_count or ACCURACY_COUNT, min_agreement=min_agreement,
                            quantizer=quantizer, name=name, detector_outputs=detector_outputs,
                            max_accuracy_drop=max_accuracy_drop)
    reach = resolve_target(target, board=False)
    lm = _model(model, weights=weights, input_shape=input_shape, trust_factory=trust_factory,
                normalize=normalize, data=data, task=task)
    split = _split(lm, data, val_data=val_data)  # --data, else the model's own data set when it is here
    return export(lm, profile=reach.profile, output_dir=output, options=options, split=split, log_file=log_file)


def quantize_model(model: Any, *, target: str, output: str | os.PathLike[str], **options: Any):
    """``edgeprune quantize``: :func:`export_model` with ``precision="int8"``."""
    return export_model(model, target=target, output=output, precision="int8", **options)


def ship_model(artifact: str | os.PathLike[str], *, target: str | list[str], **options: Any):
    """Ship an artifact to one board (a ``ShipResult``) or several at once (a list).

    With several targets, each item is a ``ShipResult``, that board's
    ``EdgePruneError`` or a ``NotStarted`` (``parallel=``, ``canary=``: see
    :func:`edgeprune.ship.ship_many`); one board's failure never stops the others. Options:
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
    ``keep``, ``use_cache``, ``fresh``, ``delegate``, ``nproc_per_node`` (the fine-tune stage in N
    processes under torchrun), ``parallel`` and ``canary`` (several targets). One target returns its report dict and
    raises the failing stage's error (``GateError`` below the gate); several
    return ``{"ok": ..., "targets": [...]}``, one board's failure never
    stopping the others.
    """
    from edgeprune.deploy import deploy_model as _deploy

    return _deploy(model, target=target, output=output, **options)
