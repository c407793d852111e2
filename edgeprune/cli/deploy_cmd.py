"""``edgeprune deploy``: prune, fine-tune, quantize, export, verify and ship, in one resumable run (edgeprune.deploy)."""

from __future__ import annotations

import os
import shutil
import sys

import click

from edgeprune.boards.reach import expand_targets
from edgeprune.cli._common import (
    Number,
    accept_new_host_key_option,
    budget_options,
    converters_to_log,
    delegate_option,
    emit,
    fleet_options,
    fleet_tally,
    host_option,
    json_option,
    model_options,
    normalize_option,
)
from edgeprune.cli.prune_cmd import _shape

# Lazy imports: the imports inside functions below load numpy, torch, which importing this module does not;
# they load only when a function that needs them runs.


@click.command()
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME",
              help="Board to deploy to (a profile, a targets-file entry or a group); repeat for several boards.")
@fleet_options
@model_options
@click.option("--data", "-d", default=None, metavar="D",
              help="Data for fine-tuning, calibration and the accuracy gate: class folders, .npy/.npz, "
              "pkg.mod:fn, or fashion-mnist / digits. Default: the model's own data set, if it has one here.")
@click.option("--val-data", default=None, metavar="D",
              help="Held-out data for the gate (default: the data set's test split, else a seeded split).")
@click.option("--val-fraction", type=Number("val_fraction"), default=0.1,
              show_default=True, help="Share of --data held out (per class) when there is no --val-data.")
@normalize_option
@budget_options()
@click.option("--ratio", type=Number("ratio"), default=None, metavar="R",
              help="Remove this fraction of every group's channels instead of a latency budget.")
@click.option("--max-accuracy-drop", type=Number("max_accuracy_drop"), default=1.0, show_default=True, metavar="P",
              help="The gate: ship only if the exported file is at most P points of top-1 below the original "
              "on held-out data.")
@click.option("--force", is_flag=True,
              help="Ship even below the gate or over the budget; the release's manifest records it and why.")
@click.option("--input-shape", default=None, callback=_shape, metavar="N,C,H,W",
              help="Input shape (batch 1); default: the model's own.")
@click.option("--importance", type=click.Choice(["l1", "l2", "bn", "taylor"]), default="l1", show_default=True,
              help="Which channels a group keeps (with data, groups are compared by Taylor sensitivity).")
@click.option("--protect", multiple=True, metavar="LAYER", help="A layer name never to prune (repeatable).")
@click.option("--epochs", type=Number("epochs"), default=None, help="Fine-tuning passes (default 3).")
@click.option("--steps", type=Number("steps"), default=None, help="Fine-tuning optimiser steps instead of epochs.")
@click.option("--time-budget", type=Number("time_budget"), default=None, metavar="MIN",
              help="Minutes of fine-tuning instead of epochs.")
@click.option("--nproc-per-node", type=Number("nproc_per_node"), default=None, metavar="N",
              help="Fine-tune in N processes on this machine (torchrun, DistributedDataParallel; the same "
              "effective batch as one process).")
@host_option
@delegate_option
@accept_new_host_key_option
@click.option("--keep", type=Number("keep"), default=3, show_default=True,
              help="Releases kept on the board (the newest; current is never removed).")
@click.option("--no-cache", is_flag=True, help="Measure again instead of reusing cached board measurements.")
@click.option("--fresh", is_flag=True, help="Run every stage again instead of resuming an earlier run in --output.")
@click.option("--output", "-o", default="deploy-out", show_default=True, metavar="DIR",
              help="Folder for the stages (DIR/<stage>/), run.json and the report (DIR/report/).")
@json_option
def deploy(targets, targets_from, parallel, canary, model, weights, trust_factory, task, data, val_data, val_fraction, normalize, latency_budget,
           speedup, fmt, precision, io_precision, max_rounds, tolerance, min_keep, threads, ratio,
           max_accuracy_drop, force, input_shape, importance, protect, epochs, steps, time_budget, nproc_per_node, host,
           delegate, accept_new_host_key, keep, no_cache, fresh, output, as_json) -> None:
    """Prune, fine-tune, quantize, export, verify and ship a model to a board, in one go.

    \b
    Stages (each writes DIR/<stage>/; run.json records them):
      1 measure        the unpruned model, exported for the board, measured there
      2 prune          latency-aware: plan, prune, export, measure on the board, correct
      3 finetune       distillation from the original (when there is data)
      4 export         the profile's format and precision, every step checked
      5 verify         the accuracy gate on held-out data (--max-accuracy-drop)
      6 measure-final  the artifact to ship, measured on the board
      7 ship           upload, sha256, run held-out inputs on the board, atomic switch
      8 report         DIR/report/: deploy.json, report.html, report.md

    Run the same command again to resume after an interruption: completed stages are
    reused (and said so), no completed board measurement is repeated. Below the
    gate nothing is shipped (exit 2); a budget not met stops before shipping
    (exit 4); --force ships anyway and records why. With several -t, boards
    deploy into DIR/<target>/, --parallel at a time; one failing does not stop the others;
    --canary K deploys the first K first and starts no other board if one of them fails.

    \b
    Examples:
      edgeprune deploy -t local -m usernet:build --weights w.pt --data images/ --normalize unit --speedup 1.3
      edgeprune deploy -t local -m digits-cnn --speedup 1.5 -o out/
      edgeprune deploy -t jetson-nano -m my.pkg:build --weights w.pt --data images/ --latency-budget 8
      edgeprune deploy -t pi-a -t pi-b -t pi-c -m mobilenetv2-fmnist --speedup 2
    """
    from edgeprune.deploy import deploy_model

    targets = expand_targets(targets, targets_from=targets_from)

    options = dict(
        data=data, val_data=val_data, val_fraction=val_fraction, normalize=normalize,
        latency_budget=latency_budget, speedup=speedup, ratio=ratio, max_accuracy_drop=max_accuracy_drop,
        force=force, fmt=fmt, precision=precision, io_precision=io_precision, weights=weights,
        trust_factory=trust_factory, task=task, input_shape=input_shape, importance=importance, protect=tuple(protect),
        epochs=epochs, steps=steps, time_budget=time_budget, max_rounds=max_rounds, tolerance=tolerance,
        min_keep=min_keep, threads=threads, host=host, delegate=delegate, accept_new_host_key=accept_new_host_key, keep=keep,
        use_cache=not no_cache, fresh=fresh, nproc_per_node=nproc_per_node,
    )

    command = ["edgeprune", *sys.argv[1:]]
    # What TensorFlow, onnx2tf and NNCF print goes to a log (DIR/deploy.log once the run ends);
    # progress goes to the real stderr, kept open before that redirection.
    log = None
    try:
        with converters_to_log("deploy") as log:
            result = deploy_model(model, target=list(targets) if len(targets) > 1 else targets[0],
                                  output=output, command=command, parallel=parallel, canary=canary, **options)
    finally:
        if log is not None and os.path.isdir(output):
            shutil.move(log, os.path.join(output, "deploy.log"))
        elif log is not None:
            os.unlink(log)
    if len(targets) == 1:
        emit(result, as_json=as_json, human=_human_one)
        return
    emit(result, as_json=as_json, human=_human_many, ok=result["ok"])
    if not result["ok"]:
        raise click.exceptions.Exit(1)


def _human_one(rep: dict) -> None:
    from edgeprune.deploy.report import headline

    click.echo(headline(rep))
    reused = rep["run"]["reused"]
    if reused:
        click.echo(f"reused from an earlier run: {', '.join(reused)}")
    click.echo(f"board measurements this run: {rep['run']['board_measurements']}; "
               f"{rep['run']['seconds']:.0f} s")
    click.echo(f"report: {rep['files']['html']} (and deploy.json, report.md beside it; "
               f"converter output: {rep['output']}/deploy.log)")


def _human_many(summary: dict) -> None:
    for o in summary["targets"]:
        if o["ok"]:
            rep = o["report"]
            lat = rep.get("latency") or {}
            click.echo(f"ok      {o['target']}: shipped {o['shipped']} "
                       f"({lat.get('final_ms') or 0:.4g} ms on the board; {(rep.get('gate') or {}).get('reason')})")
        elif o.get("state") == "not started":
            click.echo(f"SKIPPED {o['target']}: {o['error']['message']}")
        else:
            click.echo(f"FAILED  {o['target']}: {o['error']['message']}")
    states = [o.get("state") for o in summary["targets"]]
    click.echo(fleet_tally(len(states), states.count("failed"), states.count("not started"), summary["parallel"]))
    click.echo(f"reports: {summary['output']}/<target>/report/report.html; summary: {summary['output']}/deploy.json")
