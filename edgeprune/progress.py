"""Progress of long work: stages say what they are doing, the CLI shows it.

Stages call :func:`step` with a short phrase ("mobilenetv2: onnx2tf to TFLite
int8"); nothing is shown unless a caller is listening, so the Python API stays
quiet. Long counted work (a latency table: models done / total) uses
:class:`Counter` (or :func:`update`), which rewrites the current line with the
count and an ETA instead of ending a step each time; :func:`note` prints a
line that stays (one per closed-loop round). The CLI wraps a command in :func:`show`, a spinner on the terminal's
stderr with the current step and, as each step ends, a line with its time.
On a non-terminal (CI logs, pipes) it shows only the notes that are warnings
(``warning: ...``), one plain line each, and ``--json`` output on stdout is
never touched.

Example::

    with show():
        step("converting")
        ...
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

# Lazy imports: the imports inside functions below load rich, which importing this module does not;
# they load only when a function that needs them runs.

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: object, *, newlines: bool = False) -> str:
    """``text`` with control characters (terminal escapes, newlines unless ``newlines``) shown as ``\\xNN``.

    Example::

        printable("a\\x1b]0;owned\\x07b")   # 'a\\\\x1b]0;owned\\\\x07b'
    """
    text = str(text)
    out = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                       text)
    return out if newlines else out.replace("\n", "\\n").replace("\t", "\\t")


_listener: Callable[[str, str], None] | None = None
_lock = threading.Lock()


def step(message: str) -> None:
    """Say what the current stage is doing now (a no-op unless shown)."""
    listener = _listener
    if listener is not None:
        listener(message, "step")


def update(message: str) -> None:
    """Rewrite what the current step says (a count, an ETA) without ending it."""
    listener = _listener
    if listener is not None:
        listener(message, "update")


def note(message: str) -> None:
    """A line that stays on the terminal (e.g. one per round); a no-op unless shown."""
    listener = _listener
    if listener is not None:
        listener(message, "note")


class Counter:
    """``what: done/total, ETA``: a step whose count moves.

    Example::

        c = Counter("latency table: models measured", total=120)
        c.advance(40)    # shows "latency table: models measured 40/120, ETA 35 s"
    """

    def __init__(self, what: str, total: int) -> None:
        self.what, self.total, self.t0 = what, max(int(total), 1), time.monotonic()
        step(f"{what} 0/{self.total}")

    def advance(self, done: int) -> None:
        spent = time.monotonic() - self.t0
        eta = spent / done * (self.total - done) if done else 0.0
        left = f", ETA {eta:.0f} s" if 0 < done < self.total else ""
        update(f"{self.what} {done}/{self.total}{left}")


@contextmanager
def show(stream: IO[str] | None = None) -> Iterator[None]:
    """Show :func:`step` messages on ``stream`` (default stderr) while the block runs."""
    global _listener
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        # A log or a pipe: no spinner, but a warning still reaches the reader (one plain line each).
        def warnings_only(message: str, kind: str = "step") -> None:
            if kind == "note" and message.startswith("warning:"):
                with _lock:
                    stream.write(printable(message) + "\n")
                    stream.flush()

        _listener = warnings_only
        try:
            yield
        finally:
            _listener = None
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(file=stream, stderr=True)
    current: list = [None, 0.0]  # message, start time

    def listener(message: str, kind: str = "step") -> None:
        message = escape(printable(message))  # a name from a file or a board: no terminal escapes, no markup
        with _lock:
            now = time.monotonic()
            if kind == "note":
                console.print(message, highlight=False)
                return
            if kind == "update" and current[0] is not None:
                current[0] = message
                status.update(message)
                return
            if current[0] is not None:
                console.print(f"[dim]  done: {current[0]} ({now - current[1]:.1f} s)[/]")
            current[0], current[1] = message, now
            status.update(message)

    with console.status("starting", spinner="dots") as status:
        _listener = listener
        try:
            yield
        except BaseException:
            _listener = None  # the error says what failed: no "done" for that step
            raise
        _listener = None
        if current[0] is not None:
            console.print(f"[dim]  done: {current[0]} ({time.monotonic() - current[1]:.1f} s)[/]")
