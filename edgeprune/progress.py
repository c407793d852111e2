"""Progress of long work: stages say what they are doing, the CLI shows it.

Stages call :func:`step` with a short phrase ("mobilenetv2: onnx2tf to TFLite
int8"); nothing is shown unless a caller is listening, so the Python API stays
quiet. The CLI wraps a command in :func:`show`, a spinner on the terminal's
stderr with the current step and, as each step ends, a line with its time.
On a non-terminal (CI logs, pipes) it shows nothing, and ``--json`` output on
stdout is never touched.

Example::

    with show():
        step("converting")
        ...
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

_listener: Callable[[str], None] | None = None
_lock = threading.Lock()


def step(message: str) -> None:
    """Say what the current stage is doing now (a no-op unless shown)."""
    listener = _listener
    if listener is not None:
        listener(message)


@contextmanager
def show(stream: IO[str] | None = None) -> Iterator[None]:
    """Show :func:`step` messages on ``stream`` (default stderr) while the block runs."""
    global _listener
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        yield
        return
    from rich.console import Console

    console = Console(file=stream, stderr=True)
    current: list = [None, 0.0]  # message, start time

    def listener(message: str) -> None:
        with _lock:
            now = time.monotonic()
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
