"""Run a local subprocess with a deadline and an output cap (used by local and adb)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from edgeprune.errors import TransportError
from edgeprune.transport.base import RunResult


def _reader(stream, buf: bytearray, cap: int, over: threading.Event) -> None:
    while True:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            return
        if len(buf) + len(chunk) > cap:
            buf.extend(chunk[: cap - len(buf)])
            over.set()
            return
        buf.extend(chunk)


def _killpg(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=2)
            return
        except subprocess.TimeoutExpired:
            continue


def run_process(
    argv: list[str],
    *,
    cwd: str | None,
    timeout: float,
    max_output: int,
    what: str,
    on_timeout: Callable[[], None] | None = None,
) -> RunResult:
    """Run ``argv`` in its own process group; stop the group on timeout or overflow."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise TransportError(f"{what}: cannot start {argv[0]}: {exc.strerror or exc}") from None
    out, err = bytearray(), bytearray()
    over = threading.Event()
    threads = [
        threading.Thread(target=_reader, args=(s, b, max_output, over), daemon=True)
        for s, b in ((proc.stdout, out), (proc.stderr, err))
    ]
    for t in threads:
        t.start()
    deadline = start + timeout
    try:
        while proc.poll() is None:
            if over.is_set():
                _killpg(proc)
                break
            if time.monotonic() > deadline:
                if on_timeout:
                    on_timeout()
                _killpg(proc)
                for t in threads:
                    t.join(timeout=2)
                raise TransportError(
                    f"{what}: timed out after {timeout:.0f} s; the process was stopped"
                )
            time.sleep(0.005)
    except KeyboardInterrupt:
        # Its own session never sees the terminal's Ctrl-C: stopped here, so that nothing it was
        # doing (taking a lock, writing a file) completes behind the caller's back.
        _killpg(proc)
        raise
    for t in threads:
        t.join(timeout=5)
    # A leftover child holding the pipes must not outlive us either.
    if over.is_set():
        _killpg(proc)
    return RunResult(
        rc=proc.returncode,
        stdout=bytes(out),
        stderr=bytes(err),
        overflow=over.is_set(),
        seconds=time.monotonic() - start,
    )
