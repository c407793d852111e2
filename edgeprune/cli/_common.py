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
