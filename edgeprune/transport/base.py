"""The transport interface: run a command on a board, put a file there, safely.

Every transport works inside one per-board working folder (``workdir``) and
offers the same four things:

- ``run(argv, timeout=)``: run ``argv`` in the workdir; the output is capped
  (:data:`MAX_OUTPUT`) and read against a deadline; on timeout or overflow the
  process is stopped on the board, not just abandoned.
- ``upload(local, name)``: put a file at ``workdir/name`` atomically: skipped
  when the board's copy has the same sha256, otherwise written to a temporary
  name, checked by size and sha256, then renamed over the old copy. A failed
  upload leaves the previous file as it was.
- ``download(name, local, max_bytes=)``: fetch ``workdir/name`` (a board's
  output: untrusted) into ``local``; refused before any transfer when the
  board's file is over ``max_bytes``, checked by size and sha256, written
  locally under a temporary name and renamed.
- ``ensure_workdir()`` (creates it, returns its absolute path) and ``close()``.

``upload``, ``download`` and ``path`` take ``folder=``, an absolute folder on
the board other than the workdir (the deploy folder, see edgeprune.ship).

Subclasses supply the primitives (``_exec``, ``_put``, ``_get``, ``_rename``,
``_discard``); the upload and download protocols themselves live here, once.

Each class also owns what is specific to its way of reaching a board, at
class level, so that :func:`edgeprune.boards.reach.resolve_target` finds it through
the ``TRANSPORTS`` registry instead of branching on names: the default
working folder (:attr:`Transport.default_workdir`), what ``--host`` means
(:meth:`Transport.apply_host`: an SSH address, an adb serial), where else the
address comes from (:meth:`Transport.complete`: ``~/.ssh/config`` for SSH),
and how the address is written (:meth:`Transport.address`).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_file, sha256_file
from edgeprune.errors import ProfileError, TransportError

MAX_OUTPUT = 16 * 1024 * 1024
CONNECT_TIMEOUT_S = 10.0  # reaching a board: TCP connect and, over SSH, the server's banner
# Prints its PID (the process group the board's sshd gave it), enters the
# workdir, then becomes the command: killing that PID/group stops the command.
WRAPPER = 'echo "$$"; cd -- "$1" || exit 125; shift; exec "$@"'


@dataclass
class RunResult:
    rc: int | None
    stdout: bytes
    stderr: bytes
    overflow: bool = False  # stdout or stderr passed the cap: the process was stopped
    seconds: float = 0.0


def check_name(name: str) -> str:
    """A file name inside the workdir: any characters but '/' and NUL, not '.' or '..'."""
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise TransportError(f"remote file name {name!r} is not a plain file name")
    return name


# Keys of a targets-file entry that fill a Reach attribute the same way for every transport.
ENTRY_KEYS = (
    ("hostname", "host"),
    ("user", "user"),
    ("port", "port"),
    ("key_filename", "key"),
    ("workdir", "workdir"),
    ("python", "python"),
    ("known_hosts", "known_hosts"),
)


class Transport(ABC):
    """One connection to one board. Use as a context manager."""

    kind = ""
    default_workdir: str | None = None  # the board's working folder when no one names another
    default_deploy_dir: str | None = None  # where edgeprune.ship keeps releases (separate from the workdir)

    # -- where the board is (class level: used before any connection) --------------
    @classmethod
    def locate(cls, reach, *, host: str | None, entry: dict[str, Any], source: str, tfile: Path) -> None:
        """Fill ``reach`` (via ``reach.put``: first value wins): ``--host``, the targets
        entry, this transport's own sources, then the profile's and the default workdir."""
        if host:
            cls.apply_host(reach, host)
        for attr, key in ENTRY_KEYS:
            reach.put(attr, entry.get(key), source)
        cls.complete(reach, tfile=tfile)
        reach.put("workdir", reach.profile.data["reach"].get("workdir"), f"profile {reach.profile.name}")
        reach.put("workdir", cls.default_workdir, "default")

    @classmethod
    def runner(cls, reach) -> str:
        """What runs models on boards reached this way: edgeprune's Python ``agent`` (see Reach.runner)."""
        return "agent"

    @classmethod
    def apply_host(cls, reach, host: str) -> None:
        """What ``--host`` says (default: the board's address as given)."""
        reach.put("hostname", host.strip(), "--host")

    @classmethod
    def complete(cls, reach, *, tfile: Path) -> None:
        """Fill what is still unset from this transport's own sources; refuse when no address is known."""
        if reach.hostname is None:
            raise cls.no_host_error(reach.name, tfile)

    @classmethod
    def no_host_error(cls, name: str, tfile: Path) -> ProfileError:
        return ProfileError(
            f"target '{name}' is reached with {cls.kind} but no address is given; give one with "
            f'--host, or host = "..." in [{name}] of {tfile}'
        )

    @classmethod
    def address(cls, reach) -> str:
        """How the board's address is written in messages (``user@host:port``)."""
        host = f"[{reach.hostname}]" if reach.hostname and ":" in reach.hostname else reach.hostname
        return f"{reach.user}@{host}:{reach.port}"

    def __init__(
        self, reach, *, accept_new_host_key: bool = False, connect_timeout: float | None = None
    ) -> None:
        self.reach = reach
        self.accept_new_host_key = accept_new_host_key
        self.connect_timeout = float(connect_timeout or CONNECT_TIMEOUT_S)
        self.workdir: str | None = None  # absolute, after ensure_workdir()

    # -- what subclasses provide ---------------------------------------------
    @property
    @abstractmethod
    def identity(self) -> str:
        """A stable string naming this board's address (used in cache keys)."""

    @property
    def default_python(self) -> str:
        return "python3"

    @property
    def host_key(self) -> str | None:
        """The board's host key (type and fingerprint) once connected, where the transport has one."""
        return None

    def connect(self) -> None:  # noqa: B027 - optional hook: local needs no connection
        """Open the connection (no-op where there is none)."""

    @abstractmethod
    def run(self, argv: list[str], *, timeout: float, max_output: int = MAX_OUTPUT) -> RunResult:
        """Run ``argv`` in the workdir (or the home folder before ``ensure_workdir``)."""

    @abstractmethod
    def ensure_workdir(self) -> str:
        """Create the workdir if needed; return its absolute path."""

    @abstractmethod
    def _put(self, local: Path, remote_tmp: str, size: int) -> None:
        """Copy ``local`` to the absolute path ``remote_tmp``."""

    def _get(self, remote: str, local_tmp: Path, max_bytes: int) -> None:
        """Copy the board's ``remote`` to ``local_tmp``, stopping past ``max_bytes``."""
        raise TransportError(f"{self.reach.name}: the {self.kind} transport cannot download files")

    @abstractmethod
    def _rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` over ``dst`` (absolute paths on the board)."""

    @abstractmethod
    def _discard(self, path: str) -> None:
        """Remove ``path`` if it exists; best effort, never raises."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close the connection (no-op where there is none)."""

    # -- shared logic -------------------------------------------------------
    def path(self, name: str, *, folder: str | None = None) -> str:
        """The board's absolute path of ``name`` in the workdir (or in ``folder``)."""
        if folder is not None:
            if not folder.startswith("/"):
                raise TransportError(f"remote folder {folder!r} is not an absolute path")
            return f"{folder.rstrip('/') or ''}/{check_name(name)}"
        if self.workdir is None:
            self.ensure_workdir()
        return f"{self.workdir}/{check_name(name)}"

    def remote_digest(self, path: str) -> tuple[int, str] | None:
        """(size, sha256) of a file on the board, or None when it does not exist."""
        script = (
            'test -f "$1" || exit 3; wc -c < "$1"; '
            'sha256sum -- "$1" 2>/dev/null || "$2" -c '
            '"import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],\'rb\').read()).hexdigest())" "$1"'
        )
        python = self.reach.python or self.default_python
        res = self.run(["sh", "-c", script, "edgeprune-sha", path, python], timeout=120)
        if res.rc == 3:
            return None
        lines = res.stdout.decode("utf-8", "replace").split()
        if res.rc != 0 or len(lines) < 2 or not lines[0].isdigit() or len(lines[1]) != 64:
            raise TransportError(
                f"{self.reach.address}: cannot checksum {path} on the board "
                f"(rc {res.rc}: {res.stderr.decode('utf-8', 'replace').strip()[:200]})"
            )
        return int(lines[0]), lines[1]

    def upload(self, local: str | os.PathLike[str], name: str, *, folder: str | None = None) -> bool:
        """Put ``local`` at ``workdir/name`` (or ``folder/name``); False when the board already had it.

        Example::

            with open_transport(reach) as t:
                t.upload("model.onnx", "3f2a...onnx")
        """
        local = Path(local)
        size = local.stat().st_size
        digest = sha256_file(local)
        final = self.path(name, folder=folder)
        if self.remote_digest(final) == (size, digest):
            return False
        tmp = self.path(f".{name[:80]}.part-{secrets.token_hex(4)}", folder=folder)
        try:
            self._put(local, tmp, size)
            got = self.remote_digest(tmp)
            if got != (size, digest):
                raise TransportError(
                    f"{self.reach.address}: {local.name} arrived damaged (board has size/sha256 {got}, "
                    f"sent {size}/{digest[:16]}); the previous copy was kept"
                )
            self._rename(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return True

    def download(
        self,
        name: str,
        local: str | os.PathLike[str],
        *,
        max_bytes: int,
        folder: str | None = None,
    ) -> Path:
        """Fetch ``workdir/name`` (or ``folder/name``) into ``local``; refused over ``max_bytes``.

        What a board sends back is untrusted: its size is checked before the
        transfer and again while reading, and the copy must match the board's
        sha256. ``local`` appears complete or not at all.

        Example::

            t.download("outputs.npz", "out/outputs.npz", max_bytes=64 * 2**20, folder=deploy)
        """
        remote = self.path(name, folder=folder)
        local = Path(local)
        found = self.remote_digest(remote)
        if found is None:
            raise TransportError(f"{self.reach.name}: {remote} not found on the board")
        size, digest = found
        if size > max_bytes:
            raise TransportError(
                f"{self.reach.name}: {remote} is {size} bytes, more than the {max_bytes} "
                "allowed; refused"
            )

        with atomic_file(local) as tmp:
            self._get(remote, tmp, max_bytes)
            got = (tmp.stat().st_size, sha256_file(tmp))
            if got != (size, digest):
                raise TransportError(
                    f"{self.reach.name}: {remote} arrived damaged or changed during the transfer "
                    f"(got {got[0]} bytes, sha256 {got[1][:16]}; the board had {size}, {digest[:16]})"
                )
        return local

    def remove(self, name: str) -> None:
        """Remove ``workdir/name`` from the board if it is there (best effort, never raises)."""
        self._discard(self.path(name))

    def __enter__(self) -> Transport:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Watchdog:
    """Calls ``on_stall`` when ``poke()`` was not called for ``stall_s`` seconds.

    Used around transfers: a dead link can make a blocking write hang for
    minutes; closing the connection from here makes it fail at once.
    """

    def __init__(self, stall_s: float, on_stall: Callable[[], None]) -> None:
        self.stall_s = stall_s
        self.on_stall = on_stall
        self.last = time.monotonic()
        self.fired = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="edgeprune-watchdog")

    def poke(self, *_: Any) -> None:
        self.last = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            if time.monotonic() - self.last > self.stall_s:
                self.fired = True
                self.on_stall()
                return

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
