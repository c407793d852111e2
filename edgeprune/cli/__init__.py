"""The ``edgeprune`` command line: one subcommand per stage.

Subcommands live in their own modules and are imported only when invoked, so
``edgeprune --help`` loads nothing but click. Command modules import torch,
onnx and the rest inside their functions, never at module level.

Errors: an :class:`~edgeprune.errors.EdgePruneError` or a usage mistake
prints one line ``error: ...`` on stderr and exits non-zero; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from edgeprune import __version__

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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeprune")
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the CLI and turns user errors into one line."""
    from edgeprune.errors import EdgePruneError

    try:
        cli.main(args=argv, prog_name="edgeprune", standalone_mode=False)
    except EdgePruneError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        hint = ""
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            hint = f" (see '{ctx.command_path} --help')"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(0)
