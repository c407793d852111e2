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
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import click

from edgeprune._paths import cache_dir
from edgeprune._threads import DEFAULT_PARALLEL
from edgeprune.progress import show
from edgeprune.validate import RANGES, show_value

# Lazy imports: the imports inside functions below load rich, which importing this module does not;
# they load only when a function that needs them runs.


class Number(click.ParamType):
    """A numeric option whose range is ``edgeprune.validate.RANGES[key]`` (the API checks the same table).

    NaN, infinities and values out of range are a usage error (exit 2) that names the option and the range.

    Example::

        @click.option("--speedup", type=Number("speedup"), default=None)
    """

    def __init__(self, key: str) -> None:
        self.key = key
        self.range = RANGES[key]
        self.name = "integer" if self.range.integer else "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = value
        else:
            try:
                v = int(str(value).strip(), 10) if self.range.integer else float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not {self.range.describe()}", param, ctx)
        if not self.range.fits(v):
            self.fail(f"{show_value(v)} is not {self.range.describe()}", param, ctx)
        return v


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

delegate_option = click.option(
    "--delegate",
    default=None,
    metavar="NAME",
    help="Phones measured with benchmark_model: cpu, gpu, nnapi, external, or the path of a delegate .so "
    "on the phone (default: the targets file's, else the profile's).",
)


def fleet_options(f: Callable) -> Callable:
    """``--targets-from``, ``--parallel`` and ``--canary``: ``bench``, ``ship`` and ``deploy`` to many boards.

    The command receives ``targets_from``, ``parallel`` and ``canary``; the boards are
    ``edgeprune.boards.reach.expand_targets(targets, targets_from=targets_from)`` and go through
    ``edgeprune._threads.fan_out``.
    """
    for option in reversed([
        click.option("--targets-from", default=None, metavar="FILE", type=click.Path(dir_okay=False),
                     help="Also the boards named in FILE, one a line (# starts a comment); a group of the "
                     "targets file ([lab] targets = [...]) can be given to -t as well."),
        click.option("--parallel", type=Number("parallel"), default=DEFAULT_PARALLEL, show_default=True,
                     metavar="K", help="Boards worked on at once (SSH sessions open at the same time)."),
        click.option("--canary", type=Number("canary"), default=0, show_default=True, metavar="K",
                     help="The first K boards first; only if every one of them succeeds (for ship and deploy: "
                     "checked on the board) are the others started."),
    ]):
        f = option(f)
    return f


def fleet_tally(boards: int, failed: int, not_started: int, parallel: int) -> str:
    """The last line of a many-board run, e.g. ``8 boards (--parallel 3): 6 ok, 1 failed, 1 not started``."""
    text = f"{boards} boards (--parallel {parallel}): {boards - failed - not_started} ok, {failed} failed"
    return text + (f", {not_started} not started (a canary failed)" if not_started else "")


MODEL_HELP = (
    "A built-in name (see `edgeprune models`), a Python factory pkg.module:function "
    "(with --weights), a pruned model saved by edgeprune (.ept), an ExportedProgram (.pt2) "
    "or a TorchScript file (these two load but cannot be pruned)."
)


def model_options(f: Callable) -> Callable:
    """``--model/-m``, ``--weights`` and ``--trust-factory``: how every command takes a model.

    The command receives ``model``, ``weights``, ``trust_factory`` and ``task`` and
    hands them to :func:`edgeprune.load.load_model`. A ``.ept`` file whose base is a
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
        click.option(
            "--task", type=click.Choice(["classify", "detect"]), default=None,
            help="What the model does (its data, metric, loss and gate); default: read from the model "
            "(an Ultralytics model says it; else the structure of its outputs).",
        ),
    ]):
        f = option(f)
    return f


normalize_option = click.option(
    "--normalize", default=None, metavar="N",
    help="How the model's inputs are normalised: imagenet (mean/std), unit ([0, 1] pixels) or MEAN/STD "
    "(e.g. 0.5/0.5). Default: the built-in model's own, else imagenet for 3-channel classifiers, else unit; "
    "with labelled data, a model that scores far below what its data allows is checked against the others.",
)


host_option = click.option(
    "--host",
    metavar="USER@ADDR[:PORT]",
    default=None,
    help="Where the board is; overrides your targets file and ~/.ssh/config.",
)


accept_new_host_key_option = click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Record the board's SSH host key the first time (check the fingerprint shown).",
)


def budget_options(only: str = "") -> Callable[[Callable], Callable]:
    """The closed loop's options, shared by ``prune`` and ``deploy``: ``--latency-budget``, ``--speedup``,
    ``--format``, ``--precision``, ``--max-rounds``, ``--min-keep`` and ``--threads``. ``only`` prefixes
    the help of those that apply only with a budget (``prune`` also takes ``--ratio`` and ``--plan``)."""

    def h(text: str) -> str:
        return only + text if only else text[0].upper() + text[1:]

    options = [
        click.option("--latency-budget", type=Number("latency_budget"), default=None, metavar="MS",
                     help="p50 latency the pruned model must meet on the board, in ms (measured there by the "
                     "agent)."),
        click.option("--speedup", type=Number("speedup"), default=None, metavar="S",
                     help="Budget = the unpruned model's p50 on the board / S (measured in the same run)."),
        click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default=None,
                     help=h("the artifact the board runs (default: the profile's).")),
        click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
                     help=h("the artifact's precision (default: the profile's).")),
        click.option("--io-precision", type=click.Choice(["int8", "uint8", "float32"]), default=None,
                     help=h("a full-INT8 TFLite file's input/output type (default: the profile's; "
                            "--target local --io-precision int8 gives the file a Raspberry Pi runs).")),
        click.option("--max-rounds", type=Number("max_rounds"), default=5, show_default=True,
                     help=h("closed-loop rounds (plan, prune, export, measure on the board).")),
        click.option("--tolerance", type=Number("tolerance"), default=0.10,
                     show_default=True, metavar="T",
                     help=h("the budget is met when the board's figure is within [1 - T, 1] of it.")),
        click.option("--min-keep", type=Number("min_keep"), default=None, metavar="F",
                     help=h("no group keeps less than this fraction of its channels (default 0.25).")),
        click.option("--threads", type=Number("threads"), default=0,
                     help=h("runtime threads on the board (0 = the runtime's default).")),
    ]

    def apply(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


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


def json_stdout() -> IO[str] | None:
    """Where --json documents go while ``json_mode`` holds fd 1 on stderr (a child process that prints one)."""
    return _json_out


def _write_json(doc: Any) -> None:
    out = _json_out or sys.stdout
    out.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    out.flush()


def emit(result: Any, *, as_json: bool, human: Callable[[Any], None], ok: bool = True) -> None:
    """Print ``result`` as JSON (machines, with ``"ok"``) or through ``human`` (people).

    ``ok=False``: a result that is partly a failure (one of several boards), printed whole.
    The command is done once its result is printed: from here on a Ctrl-C is ignored, so the
    result is never followed by a death by SIGINT (``main`` puts the handler back when called
    from Python).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
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


@contextlib.contextmanager
def native_output_to(log_path: str):
    """Send what TensorFlow, onnx2tf and NNCF print on fds 1 and 2 to ``log_path``.

    TensorFlow's C++ logging ignores Python's streams and would interleave
    with --json on stdout; the log stays next to the artifacts for when a
    conversion fails.
    """
    os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def converters_to_log(prefix: str) -> Iterator[str]:
    """Run the body with the converters' output (fds 1 and 2) going to a new log in the cache's
    ``logs/`` folder, and edgeprune's progress to the real stderr (kept open before the redirection).
    Yields the log's path; what becomes of the log afterwards is the caller's choice."""
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fd, log = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log", dir=logs)
    os.close(fd)
    progress = os.fdopen(os.dup(2), "w", buffering=1)
    try:
        with show(progress), native_output_to(log):
            yield log
    finally:
        progress.close()
