import click

from edgeprune.cli._common import host_option, json_option, target_option


@click.command()
@target_option
@host_option
@click.option("--model", "-m", required=True, help="Model to deploy (see `edgeprune prune --help`).")
@click.option("--data", default=None, help="Data for fine-tuning, calibration and accuracy checks.")
@click.option("--latency-budget", type=float, default=None, metavar="MS", help="Latency budget on the board, in ms.")
@click.option("--speedup", type=float, default=None, metavar="S", help="Wanted speedup on the board, e.g. 1.5.")
@json_option
def deploy(**_: object) -> None:
    """Prune, fine-tune, quantize, export and ship a model to a board, in one go.

    Not built yet: run the stages one by one (prune, export, bench).
    """
    from edgeprune.errors import NotBuiltError

    raise NotBuiltError(
        "'edgeprune deploy' is not built yet in this version; run the stages one by one: "
        "edgeprune prune, edgeprune export, edgeprune bench"
    )
