"""Options and output helpers shared by the subcommands (cheap to import).

``--json`` mode (:func:`json_mode`, entered once by :func:`edgeprune.cli.main`):
while a command runs, file descriptor 1 and ``sys.stdout`` point at stderr,
so whatever TensorFlow, onnx2tf, NNCF, torch or the user's own factory print
never lands on stdout; :func:`emit` and :func:`emit_error` write the one JSON
document to the real stdout.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

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


_json_out: IO[str] | None = None  # the real stdout while json_mode() is on


@contextlib.contextmanager
def json_mode(on: bool) -> Iterator[None]:
    """Route fd 1 and ``sys.stdout`` to stderr while the block runs; JSON goes to the real stdout.

    Example::

        with json_mode(True):
            print("chatter")                 # lands on stderr
            emit({"a": 1}, as_json=True, human=print)   # {"ok": true, "a": 1} on stdout
    """
    global _json_out
    if not on:
        yield
        return
    sys.stdout.flush()
    real = sys.stdout
    try:
        real_fd = real.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): not fd 1
        real_fd = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no fd 1 at all
        saved = None
    if real_fd == 1 and saved is not None:
        out: IO[str] = os.fdopen(os.dup(saved), "w", encoding="utf-8")
    else:
        out = real
    _json_out, sys.stdout = out, sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        out.flush()
        sys.stdout, _json_out = real, None
        if out is not real:
            out.close()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _write_json(doc: Any) -> None:
    out = _json_out or sys.stdout
    out.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    out.flush()


def emit(result: Any, *, as_json: bool, human: Callable[[Any], None], ok: bool = True) -> None:
    """Print ``result`` as JSON (machines, with ``"ok"``) or through ``human`` (people).

    ``ok=False``: a result that is partly a failure (one of several boards), printed whole.
    """
    if as_json:
        _write_json({"ok": ok, **result} if isinstance(result, dict) else result)
    else:
        human(result)


def emit_error(kind: str, message: str, *, details: dict[str, Any] | None = None,
               result: dict[str, Any] | None = None) -> None:
    """The ``--json`` document of a failure: ``{"ok": false, "error": {...}, **result}``."""
    _write_json({"ok": False, "error": {"kind": kind, "message": message, **(details or {})}, **(result or {})})


def console():
    """A rich console on stdout (imported lazily: rich costs ~50 ms)."""
    from rich.console import Console

    return Console()
