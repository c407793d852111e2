"""The ``edgeprune`` command line: one subcommand per stage.

Subcommands live in their own modules and are imported only when invoked, so
``edgeprune --help`` loads nothing but click. Command modules import torch,
onnx and the rest inside their functions, never at module level.

Errors: an :class:`~edgeprune.errors.EdgePruneError` or a usage mistake
prints one line ``error: ...`` on stderr and exits non-zero. Anything else is
a bug: one line naming the exception and asking to re-run with ``--debug``
and report it. ``edgeprune --debug CMD ...`` or ``EDGEPRUNE_DEBUG=1`` prints
the traceback (of every error) before the line.

``--json``: the command's result is one JSON document on stdout with
``"ok": true``; a failure is ``{"ok": false, "error": {"kind", "message",
...}}`` on stdout (and the line on stderr) with the non-zero exit. While the
command runs, everything other libraries print goes to stderr
(:func:`edgeprune.cli._common.json_mode`).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import traceback

import click

from edgeprune import __version__
from edgeprune.cli._common import emit_error, json_mode
from edgeprune.errors import EdgePruneError
from edgeprune.progress import printable
from edgeprune.safeload import quiet_libraries

# name -> (module, attribute, one-line help shown by `edgeprune --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "targets": ("edgeprune.cli.targets_cmd", "targets", "List and show the boards edgeprune knows."),
    "models": ("edgeprune.cli.models_cmd", "models", "List the built-in reference models."),
    "bench": ("edgeprune.cli.bench_cmd", "bench", "Measure a model's latency on one or more boards."),
    "prune": ("edgeprune.cli.prune_cmd", "prune", "Remove whole channels from a model, aligned to the board."),
    "finetune": ("edgeprune.cli.finetune_cmd", "finetune", "Recover a pruned model's accuracy: distil from the original."),
    "quantize": ("edgeprune.cli.export_cmd", "quantize", "Quantize a model to INT8 for a board, with checks."),
    "export": ("edgeprune.cli.export_cmd", "export", "Export a model to ONNX or TFLite for a board, with checks."),
    "deploy": ("edgeprune.cli.deploy_cmd", "deploy", "Prune, fine-tune, quantize, export and ship to a board."),
    "ship": ("edgeprune.cli.ship_cmd", "ship", "Ship an exported model to boards, checked on each board first."),
    "releases": ("edgeprune.cli.releases_cmd", "releases", "List the releases shipped to a board."),
    "rollback": ("edgeprune.cli.releases_cmd", "rollback", "Switch a board back to an earlier release, after checks."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the registry's one-liners: listing commands must not import them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, helptext) for name, (_, _, helptext) in COMMANDS.items()])


_debug = False


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    global _debug
    _debug = _debug or value
    return value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeprune")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set_debug,
              help="Show the traceback of any error (also EDGEPRUNE_DEBUG=1).")
def cli() -> None:
    """Make a trained PyTorch vision model smaller and faster on your board.

    \b
    Typical flow:
      edgeprune targets list                          # the boards it knows
      edgeprune bench --target local model.onnx       # measure on a board
      edgeprune prune --target raspberry-pi-5 --model mobilenetv2 --ratio 0.3 --output out/
      edgeprune export --target raspberry-pi-5 --model out/model.ept --output out/
      edgeprune deploy --target jetson-nano --model my.pkg:build --data images/

    A board is named with --target (a profile); where it is comes from --host,
    your targets file, or the `Host NAME` entry of ~/.ssh/config. Run
    `edgeprune COMMAND --help` for each stage.
    """


def _wants_json(args: list[str]) -> bool:
    """``--json`` among the options (before a ``--`` that ends them)."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the CLI and turns every failure into one line (and JSON)."""
    global _debug
    args = list(sys.argv[1:] if argv is None else argv)
    _debug = os.environ.get("EDGEPRUNE_DEBUG", "") not in ("", "0")
    as_json = _wants_json(args)
    if not _debug and "--debug" not in args:
        quiet_libraries()  # torch's, Pillow's, numpy's warnings and log records: not on a one-line error
    handler = signal.getsignal(signal.SIGINT)
    try:
        with json_mode(as_json):
            code = _run(args, as_json)
    except KeyboardInterrupt as exc:  # between the command and its report: still one line, exit 130
        code = _fail(exc, "interrupted", "interrupted", 130, as_json)
    finally:
        if argv is not None:  # called from Python: its Ctrl-C back as it was
            signal.signal(signal.SIGINT, handler)
    if argv is None:  # the process ends now: a late Ctrl-C must not kill it after its last line
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


def _run(args: list[str], as_json: bool) -> int:
    """Run the CLI; the exit code, every failure reported by :func:`_fail`."""
    try:
        # Without standalone mode click returns (not raises) the code of ctx.exit() / Exit(n).
        code = cli.main(args=args, prog_name="edgeprune", standalone_mode=False)
    except EdgePruneError as exc:
        return _fail(exc, exc.kind, str(exc), exc.exit_code, as_json,
                     details=exc.details, result=exc.json_result())
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt) as exc:
        return _fail(exc, "interrupted", "interrupted", 130, as_json)
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        return _fail(exc, "usage", f"{exc.format_message()}{hint}", exc.exit_code, as_json)
    except Exception as exc:  # a bug: one line unless --debug asks for the traceback
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        what = " ".join(what.split())
        what = what if len(what) <= 300 else what[:297] + "..."
        return _fail(exc, "internal", f"internal error ({what}); this is a bug in edgeprune: re-run with "
                     "--debug (edgeprune --debug ...) or EDGEPRUNE_DEBUG=1 for the traceback, and report it",
                     1, as_json)
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _fail(exc: BaseException, kind: str, message: str, code: int, as_json: bool, *,
          details: dict | None = None, result: dict | None = None) -> int:
    """Report a failure: the traceback with --debug, the one line on stderr, the JSON on stdout.

    The last thing the command says: a Ctrl-C from here on is ignored (as after ``emit``).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _debug and not isinstance(exc, (click.exceptions.Exit, click.Abort)):
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"error: {printable(message)}", err=True)  # names from files and boards: no terminal escapes
    if as_json:
        emit_error(kind, message, details=details, result=result)
    return code
