"""``edgeprune ship``: an exported artifact to one board or a fleet, checked on each board (edgeprune.ship)."""

from __future__ import annotations

from pathlib import Path

import click

from edgeprune.boards.reach import expand_targets, resolve_target
from edgeprune.cli._common import (
    Number,
    accept_new_host_key_option,
    emit,
    fleet_options,
    fleet_tally,
    host_option,
    json_option,
)
from edgeprune.errors import EdgePruneError, ExportError, ProfileError, ShipError
from edgeprune.progress import show

# Lazy imports: the imports inside functions below load numpy, which importing this module does not;
# they load only when a function that needs them runs.

DEFAULT_SAMPLES = 8


@click.command()
@click.option("--target", "-t", "targets", multiple=True, metavar="NAME",
              help="Board to ship to (a targets-file entry, a group, or a profile); repeat for several.")
@fleet_options
@host_option
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--inputs", default=None, metavar="FILE.npy", type=click.Path(exists=True, dir_okay=False),
              help="Held-out inputs for the on-board check, as the model takes them (first axis: samples). "
              f"Default: {DEFAULT_SAMPLES} seeded random inputs of the artifact's input shape and dtype.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Which tolerance the check uses (default: what export stamped into the file, else fp32).")
@click.option("--keep", type=Number("keep"), default=3, show_default=True,
              help="Releases kept on each board (the newest; current is never removed).")
@accept_new_host_key_option
@json_option
def ship(targets, targets_from, parallel, canary, host, artifact, inputs, precision, keep, accept_new_host_key,
         as_json) -> None:
    """Ship ARTIFACT (.onnx or .tflite) to boards: upload, sha256, run inputs on the board, switch.

    Each board's `current` is switched only after the board's runtime gave the
    host's outputs for the same inputs; a failure leaves it as it was. With
    several boards, --parallel of them at a time; one failing stops no other.
    --canary K ships to the first K first and switches nothing on the others
    when one of them fails (they are listed as not started).

    \b
    Examples:
      edgeprune ship -t lab-pi out/model.onnx --inputs heldout.npy
      edgeprune ship -t lab --parallel 8 --canary 2 out/model.tflite      # a group of the targets file
      edgeprune ship --targets-from boards.txt --parallel 4 --canary 5 m.onnx --json
    """
    import numpy as np

    from edgeprune.ship import ShipResult, ship_many, summary_lines

    names = expand_targets(targets, targets_from=targets_from)
    if host and len(names) > 1:
        raise ProfileError("--host names one board; with several --target, put each in your targets file")
    reaches = [resolve_target(t, host=host) for t in names]  # an unknown board is refused before any ship
    x = np.load(inputs, allow_pickle=False) if inputs else _seeded_inputs(Path(artifact))
    with show():
        outcomes = ship_many(artifact, targets=reaches, verify_inputs=x, precision=precision, keep=keep,
                             accept_new_host_key=accept_new_host_key, parallel=parallel, canary=canary)
    if len(reaches) == 1 and isinstance(outcomes[0], EdgePruneError):
        raise outcomes[0]
    docs = []
    for r, o in zip(reaches, outcomes, strict=True):
        if isinstance(o, ShipResult):
            docs.append({"state": "shipped", **o.to_dict()})
        else:
            docs.append({"target": r.name, "state": "failed" if isinstance(o, EdgePruneError) else "not started",
                         "error": str(o)})
    states = [d["state"] for d in docs]
    ok = all(s == "shipped" for s in states)
    if len(reaches) == 1:
        emit(docs[0], as_json=as_json, human=lambda _: click.echo(summary_lines(reaches, outcomes)[0]))
        return
    tally = fleet_tally(len(docs), states.count("failed"), states.count("not started"), parallel)

    def human(_) -> None:
        click.echo("\n".join(summary_lines(reaches, outcomes)))
        click.echo(tally)

    emit({"parallel": parallel, "canary": canary, "targets": docs}, as_json=as_json, human=human, ok=ok)
    if not ok:
        raise click.exceptions.Exit(1)


def _seeded_inputs(artifact):
    """About 8 seeded random inputs shaped and typed as the artifact's one input (whole batches of its batch)."""
    import numpy as np

    from edgeprune.export.runners import host_runner

    try:
        _, shape, dtype = host_runner(artifact).input_spec()
    except ExportError as exc:
        raise ShipError(f"{exc}; give the check's inputs with --inputs FILE.npy") from None
    if any(d is None for d in shape[1:]):
        raise ShipError(f"{artifact.name}: its input shape {shape} is not fixed; give --inputs FILE.npy")
    batch = shape[0] or 1
    n = batch * max(1, DEFAULT_SAMPLES // batch)
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=(n, *shape[1:])).astype(dtype)
    return rng.standard_normal((n, *shape[1:])).astype(dtype)
