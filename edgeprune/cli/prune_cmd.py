"""``edgeprune prune``: remove whole channels, aligned to the board (see edgeprune.prune.pipeline)."""

from __future__ import annotations

import click

from edgeprune.api import prune_model
from edgeprune.cli._common import (
    Number,
    accept_new_host_key_option,
    budget_options,
    delegate_option,
    emit,
    host_option,
    json_option,
    model_options,
    normalize_option,
    target_option,
)
from edgeprune.errors import ModelError
from edgeprune.models.loading import parse_shape
from edgeprune.progress import show


def _shape(ctx, param, value):
    if value is None:
        return None

    try:
        return parse_shape(value)
    except ModelError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1]) from None


@click.command()
@target_option
@model_options
@click.option(
    "--input-shape",
    default=None,
    callback=_shape,
    metavar="N,C,H,W",
    help="Input shape (batch 1); default: the model's own (224 for ImageNet models).",
)
@click.option(
    "--ratio",
    type=Number("ratio"),
    default=None,
    metavar="R",
    help="Fraction of channels removed from every prunable group, e.g. 0.3.",
)
@click.option(
    "--plan",
    "plan_file",
    default=None,
    metavar="FILE",
    help="Apply a channel plan JSON instead of --ratio.",
)
@budget_options(only="With a budget: ")
@click.option(
    "--estimate",
    is_flag=True,
    help="With a budget: plan from the profile's roofline estimate, without a board (not measured).",
)
@host_option
@delegate_option
@accept_new_host_key_option
@click.option(
    "--no-cache",
    is_flag=True,
    help="With a budget: measure the latency table again instead of reusing this board's cached one.",
)
@click.option(
    "--importance",
    type=click.Choice(["l1", "l2", "bn", "taylor"]),
    default="l1",
    show_default=True,
    help="Which channels a group keeps. taylor: the loss change of removing each (a classifier's labels, a "
    "detector's own loss on its labelled boxes; needs labelled --data). With a budget and labelled --data, "
    "groups are compared by Taylor scores in any case.",
)
@click.option(
    "--data",
    default=None,
    metavar="D",
    help="Data for --importance taylor (train split) and accuracy before/after (held-out split): class "
    "folders, a folder of images, .npy/.npz, pkg.mod:fn, fashion-mnist / digits; for a detector a YOLO "
    "folder's data.yaml, COCO JSON, images, or fmnist-det. "
    "Default: the model's own data set, if it has one here.",
)
@click.option("--val-data", default=None, metavar="D", help="Held-out data (default: a seeded split of --data).")
@normalize_option
@click.option(
    "--protect", multiple=True, metavar="LAYER", help="A layer name never to prune (repeatable)."
)
@click.option(
    "--prune-stem/--protect-stem",
    default=None,
    help="Whether the input stem's group (in ResNets the whole first stage) may lose channels. Default: "
    "protected under --ratio; under a budget the allocation weighs it like every group (at small inputs it "
    "is a large share of the latency); under --plan the plan decides.",
)
@click.option(
    "--no-align", is_flag=True, help="Do not round kept channel counts to the board's alignment."
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip the surgery check (pruned == original with removed channels zeroed); for groups "
    "whose channels pass through an op that does not keep 0 at 0, which the check then names.",
)
@click.option(
    "--output",
    "-o",
    required=True,
    metavar="DIR",
    help="Folder for model.ept, plan.json, model.onnx, summary.json.",
)
@json_option
def prune(
    target,
    model,
    weights,
    trust_factory,
    task,
    input_shape,
    ratio,
    plan_file,
    latency_budget,
    speedup,
    fmt,
    precision,
    io_precision,
    max_rounds,
    tolerance,
    min_keep,
    threads,
    estimate,
    host,
    delegate,
    accept_new_host_key,
    no_cache,
    importance,
    data,
    val_data,
    normalize,
    protect,
    prune_stem,
    no_align,
    no_verify,
    output,
    as_json,
) -> None:
    """Remove whole channels from a model, aligned to the board.

    With --latency-budget or --speedup, how many channels each group keeps
    comes from latency measured on the board (a table of its layers' costs,
    then a closed loop: plan, prune, export, measure, correct). It exits 4 if
    the budget is not met on the board, after writing everything.

    \b
    Examples:
      edgeprune prune --target raspberry-pi-5 --model mobilenetv2 --ratio 0.3 --output out/
      edgeprune prune --target local --model mobilenetv2 --speedup 1.5 --output out/
      edgeprune prune --target lab-pi --model resnet18 --latency-budget 40 --output out/
    """
    with show():
        summary = prune_model(
            model,
            target=target,
            output=output,
            ratio=ratio,
            plan_file=plan_file,
            weights=weights,
            input_shape=input_shape,
            importance=importance,
            protect=tuple(protect),
            align=not no_align,
            protect_stem=None if prune_stem is None else not prune_stem,
            latency_budget=latency_budget,
            speedup=speedup,
            fmt=fmt,
            precision=precision,
            io_precision=io_precision,
            max_rounds=max_rounds,
            tolerance=tolerance,
            min_keep=min_keep,
            threads=threads,
            estimate=estimate,
            host=host,
            delegate=delegate,
            accept_new_host_key=accept_new_host_key,
            use_cache=not no_cache,
            trust_factory=trust_factory,
            task=task,
            verify=not no_verify,
            data=data,
            val_data=val_data,
            normalize=normalize,
        )
    emit(summary, as_json=as_json, human=_human)


def _human(s: dict) -> None:
    click.echo(
        f"pruned {s['source']} for {s['target']} (align {s['align']}, {s['importance']}): "
        f"{s['groups_pruned']}/{s['groups_total']} groups, {100 * s['removed_fraction']:.1f} % of channels"
    )
    click.echo(
        f"  params {s['params_before']:,} -> {s['params_after']:,}   "
        f"MACs {s['macs_before']:,} -> {s['macs_after']:,} ({s['mac_reduction']}x fewer)"
    )
    if s.get("protected_note"):
        click.echo(f"  {s['protected_note']}")
    chk = s["onnx_check"]
    click.echo(
        f"  ONNX matches PyTorch: max_abs {chk['max_abs']:.2e} (tolerance {chk['tolerance']:.1e})"
    )
    lat = s.get("latency")
    if lat:
        _human_latency(lat)
    if "accuracy_after" in s:
        click.echo(
            f"  accuracy {s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f} ({s['accuracy_note']})"
        )
    for key in ("model", "plan", "onnx", "summary"):
        click.echo(f"  {key:8s} {s[key]}")
    for note in s.get("notes", []):
        click.echo(f"note: {note}")


def _human_latency(lat: dict) -> None:
    if lat.get("source") == "estimate":
        est = lat.get("estimate", {})
        click.echo(f"  latency ESTIMATE (no board measured): predicted {est.get('predicted_ms')} ms "
                   f"for a budget of {lat['budget_ms']} ms")
        click.echo(f"  {lat['status']}")
        return
    click.echo(f"  latency on the board ({lat.get('format')} {lat.get('precision')}, {lat.get('runtime')} "
               f"{lat.get('runtime_version')}): unpruned {lat['unpruned_ms']} ms, budget {lat['budget_ms']} ms")
    for r in lat["rounds"]:
        click.echo(f"    {r['line']}" if r.get("line") else
                   f"    round {r['round']}: predicted {r['predicted_ms']:.3f} ms, measured "
                   f"{r['measured_ms']:.3f} ms ({r['measured_over_budget']:.2f} x budget)")
    t = lat.get("table", {})
    click.echo(f"  latency table: {t.get('shapes_for_this_model')} shapes, {t.get('reused_from_cache')} reused, "
               f"{t.get('measured_now')} measured now in {t.get('build_s')} s")
    click.echo(f"  {'warning: ' if lat.get('verdict') == 'met_under' else ''}{lat['status']}")
