"""Options and output helpers shared by the subcommands (cheap to import)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout (for machines)."
)

target_option = click.option(
    "--target",
    "-t",
    required=True,
    metavar="NAME",
    help="Board profile name (see `edgeprune targets list`), e.g. jetson-nano, raspberry-pi-5, local.",
)

MODEL_HELP = (
    "A built-in name (see `edgeprune models`), a Python factory pkg.module:function "
    "(with --weights), a pruned model saved by edgeprune (.ept), an ExportedProgram (.pt2) "
    "or a TorchScript file (these two load but cannot be pruned)."
)


def model_options(f: Callable) -> Callable:
    """``--model/-m``, ``--weights`` and ``--trust-factory``: how every command takes a model.

    The command receives ``model``, ``weights`` and ``trust_factory`` and hands
    them to :func:`edgeprune.load.load_model`. A ``.ept`` file whose base is a
    Python factory loads only when the user names that factory (security: a
    file never decides what code runs).

    Example::

        @click.command()
        @model_options
        def finetune(model, weights, trust_factory): ...
    """
    for option in reversed([
        click.option("--model", "-m", required=True, metavar="M", help=MODEL_HELP),
        click.option(
            "--weights", default=None, metavar="FILE",
            help="Weights for a built-in or factory model: a state_dict file, or an .ept pruned "
            "from that model (e.g. --model pkg.mod:fn --weights model.ept).",
        ),
        click.option(
            "--trust-factory", default=None, metavar="PKG.MOD:FN",
            help="Allow a .ept file whose base architecture is this Python factory to import and "
            "call it (a model file alone never runs code).",
        ),
    ]):
        f = option(f)
    return f


host_option = click.option(
    "--host",
    metavar="USER@ADDR[:PORT]",
    default=None,
    help="Where the board is; overrides your targets file and ~/.ssh/config.",
)


def emit(result: Any, *, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``result`` as JSON (machines) or through ``human`` (people)."""
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, sort_keys=False, default=str) + "\n")
    else:
        human(result)


def console():
    """A rich console on stdout (imported lazily: rich costs ~50 ms)."""
    from rich.console import Console

    return Console()
