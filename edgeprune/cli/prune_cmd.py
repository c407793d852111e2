"""``edgeprune prune``: remove whole channels, aligned to the board (see edgeprune.prune.pipeline)."""

from __future__ import annotations

import click

from edgeprune.cli._common import emit, json_option, target_option

MODEL_HELP = (
    "A built-in name (see `edgeprune models`), a Python factory pkg.module:function "
    "(with --weights), a pruned model saved by edgeprune (.ept), an ExportedProgram (.pt2) "
    "or a TorchScript file (these two load but cannot be pruned)."
)


def _shape(ctx, param, value):
    if value is None:
        return None
    try:
        shape = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}': expected e.g. 1,3,224,224") from None
    if len(shape) != 4 or shape[0] != 1 or min(shape) < 1:
        raise click.BadParameter(
            f"'{value}': expected 4 positive numbers, batch 1, e.g. 1,3,224,224"
        )
    return shape


@click.command()
@target_option
@click.option("--model", "-m", required=True, metavar="M", help=MODEL_HELP)
@click.option(
    "--weights", default=None, metavar="FILE", help="A state_dict for a built-in or factory model."
)
@click.option(
    "--input-shape",
    default=None,
    callback=_shape,
    metavar="N,C,H,W",
    help="Input shape (batch 1); default: the model's own (224 for ImageNet models).",
)
@click.option(
    "--ratio",
    type=click.FloatRange(0.0, 1.0, max_open=True),
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
@click.option(
    "--latency-budget",
    type=float,
    default=None,
    metavar="MS",
    help="(not built yet) latency budget on the board.",
)
@click.option(
    "--speedup",
    type=float,
    default=None,
    metavar="S",
    help="(not built yet) wanted speedup on the board.",
)
@click.option(
    "--importance",
    type=click.Choice(["l1", "l2", "bn", "taylor"]),
    default="l1",
    show_default=True,
    help="Which channels a group keeps.",
)
@click.option(
    "--data",
    default=None,
    metavar="D",
    help="Data for --importance taylor (train split) and accuracy before/after (held-out split): class "
    "folders, a folder of images, .npy/.npz, pkg.mod:fn, or fashion-mnist / digits. "
    "Default: the model's own data set, if it has one here.",
)
@click.option("--val-data", default=None, metavar="D", help="Held-out data (default: a seeded split of --data).")
@click.option(
    "--protect", multiple=True, metavar="LAYER", help="A layer name never to prune (repeatable)."
)
@click.option(
    "--prune-stem",
    is_flag=True,
    help="Also prune the input stem's group (protected by default; in ResNets it spans the first stage).",
)
@click.option(
    "--no-align", is_flag=True, help="Do not round kept channel counts to the board's alignment."
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
    input_shape,
    ratio,
    plan_file,
    latency_budget,
    speedup,
    importance,
    data,
    val_data,
    protect,
    prune_stem,
    no_align,
    output,
    as_json,
) -> None:
    """Remove whole channels from a model, aligned to the board.

    \b
    Example:
      edgeprune prune --target raspberry-pi-5 --model mobilenetv2 --ratio 0.3 --output out/
    """
    from edgeprune.progress import show
    from edgeprune.prune.pipeline import prune_model

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
            protect_stem=not prune_stem,
            latency_budget=latency_budget,
            speedup=speedup,
            data=data,
            val_data=val_data,
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
    chk = s["onnx_check"]
    click.echo(
        f"  ONNX matches PyTorch: max_abs {chk['max_abs']:.2e} (tolerance {chk['tolerance']:.1e})"
    )
    if "accuracy_after" in s:
        click.echo(
            f"  accuracy {s['accuracy_before']:.4f} -> {s['accuracy_after']:.4f} ({s['accuracy_note']})"
        )
    for key in ("model", "plan", "onnx", "summary"):
        click.echo(f"  {key:8s} {s[key]}")
