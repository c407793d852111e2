"""The deploy lock on a board: two deploys never interleave; a dead deploy's lock is cleared.

The lock is ``DEPLOY/lock.json``, created by the agent with ``link(2)`` (it
appears whole or not at all, and only once). It records its owner: this
computer's id, the process id and its start time, a random token. While held,
a heartbeat thread refreshes its mtime every :data:`REFRESH_S` seconds.

A lock found held is **stale**, and cleared with a note, when:

- its owner is on this computer and that process is gone (or the pid was
  reused: its start time differs), or it is this very process but no attempt
  of it holds that token any more (an attempt whose unlock could not reach
  the board, e.g. after a cut link);
- or it was not refreshed for ``stale_s`` seconds (default :data:`STALE_S`),
  whoever owns it: its deploy died, or lost the board for that long.

Clearing passes the stale lock's token to the agent, which removes only that
lock (renamed aside first, put back if it turned out to be another).

The same lock guards a folder of this computer (:func:`folder_lock`, e.g. a
deploy's ``--output``): the agent runs as a subprocess on it, so there is one
lock, one owner record and one rule for a dead owner.

An interrupt (Ctrl-C) while the lock is being taken unlocks it again before
it propagates: the agent may have made the lock just before.

Example::

    lock = BoardLock(board, what="ship 20261128-101502-3f2a9c1d")
    notes = lock.acquire()       # ['lab-pi: cleared a stale lock ...'] or []
    try:
        ...
    finally:
        lock.release()
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edgeprune.bench.runner import agent_path
from edgeprune.boards.reach import Reach
from edgeprune.errors import EdgePruneError, ShipError
from edgeprune.ship.board import Board
from edgeprune.transport import transport_class

REFRESH_S = 15.0
STALE_S = 120.0
_HELD: set[str] = set()  # tokens held by live attempts of this process
_HELD_LOCK = threading.Lock()


def host_id() -> str:
    """This computer: host name and a short hash of its machine id (containers share names)."""
    try:
        mid = Path("/etc/machine-id").read_text().strip()
    except OSError:
        mid = ""
    return f"{socket.gethostname()}/{hashlib.sha256(mid.encode()).hexdigest()[:8]}"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    now = _start_time(pid)
    return not (start and now and now != start)


def stale_reason(owner: dict[str, Any], age_s: float | None, *, stale_s: float = STALE_S) -> str | None:
    """Why a held lock is stale, or None while its owner may still be working."""
    pid = owner.get("pid")
    if owner.get("host") == host_id() and isinstance(pid, int) and not isinstance(pid, bool):
        if pid == os.getpid():
            with _HELD_LOCK:
                if owner.get("token") not in _HELD:
                    return "left by an earlier attempt of this process"
        elif not _alive(pid, owner.get("pid_start")):
            return f"its deploy, pid {pid} on this computer, is gone"
    if isinstance(age_s, int | float) and age_s > stale_s:
        return f"not refreshed for {age_s:.0f} s (limit {stale_s:.0f} s)"
    return None


def describe(owner: dict[str, Any] | None) -> str:
    """``ship model.onnx by ci, pid 4242 on host/1a2b3c4d, since 2026-11-28T10:15:02Z``."""
    if not owner:
        return "owner unknown"
    if owner.get("unreadable"):
        return "its owner file is unreadable"
    text = f"{str(owner.get('what') or 'a deploy')[:80]}"
    if owner.get("user"):
        text += f" by {str(owner['user'])[:40]}"
    text += f", pid {str(owner.get('pid'))[:12]} on {str(owner.get('host'))[:80]}"
    if owner.get("started"):
        text += f", since {str(owner['started'])[:40]}"
    return text


class BoardLock:
    """Hold the deploy lock of a :class:`~edgeprune.ship.board.Board` (see module docstring)."""

    def __init__(
        self,
        board,
        *,
        what: str,
        stale_s: float = STALE_S,
        wait_s: float = 0.0,
        refresh_s: float = REFRESH_S,
        holder: str = "the board's deploy lock",
        error: type[EdgePruneError] = ShipError,
    ) -> None:
        self.board = board
        self.holder, self.error = holder, error
        self.token = secrets.token_hex(12)
        self.owner = {
            "host": host_id(),
            "pid": os.getpid(),
            "pid_start": _start_time(os.getpid()),
            "user": getpass.getuser(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "what": what,
        }
        self.stale_s, self.wait_s, self.refresh_s = stale_s, wait_s, refresh_s
        self.held = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> list[str]:
        """Take the lock (clearing a stale one, waiting up to ``wait_s``); notes of what was cleared."""
        try:
            return self._acquire()
        except BaseException:
            if not self.held:  # interrupted or failed while the agent may have just made it: ours to remove
                try:
                    self.board.release("unlock", "--token", self.token, timeout=30)
                except BaseException:  # noqa: BLE001 - best effort: a lock nobody holds goes stale
                    pass
            raise

    def _acquire(self) -> list[str]:
        notes: list[str] = []
        deadline = time.monotonic() + self.wait_s
        name = self.board.name
        for _ in range(1000):
            doc = self.board.release(
                "lock", "--token", self.token, "--owner", json.dumps(self.owner)
            )
            if doc.get("acquired") is True:
                break
            owner = doc.get("owner") if isinstance(doc.get("owner"), dict) else None
            age = doc.get("age_s") if isinstance(doc.get("age_s"), int | float) else None
            if owner is None:
                continue  # released between our two looks: try again
            why = stale_reason(owner, age, stale_s=self.stale_s)
            if why:
                token = str(owner.get("token") or "-")[:100]
                if self.board.release("break", "--token", token).get("broken") is True:
                    notes.append(f"{name}: cleared a stale deploy lock ({describe(owner)}): {why}")
                continue
            if time.monotonic() >= deadline:
                refreshed = f", refreshed {age:.0f} s ago" if age is not None else ""
                raise self.error(
                    f"{name}: another deploy holds {self.holder} ({describe(owner)}"
                    f"{refreshed}); nothing was changed: run again when it is done (the lock of "
                    f"a deploy that died is cleared after {self.stale_s:.0f} s without refresh)"
                )
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        else:
            raise ShipError(f"{name}: could not take the deploy lock (it kept changing hands)")
        with _HELD_LOCK:
            _HELD.add(self.token)
        self.held = True
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="edgeprune-lock")
        self._beat.start()
        return notes

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.board.release("refresh", "--token", self.token, timeout=30)
            except Exception:  # noqa: BLE001 - the main thread sees a dead link itself
                pass

    def release(self) -> None:
        """Stop the heartbeat and unlock; best effort (a dead link leaves a lock that goes stale).

        A second Ctrl-C while unlocking does not stop it: the unlock is tried once more.
        """
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        try:
            for _ in range(2):
                try:
                    if self.held:
                        self.board.release("unlock", "--token", self.token, timeout=30)
                    break
                except KeyboardInterrupt:
                    continue
                except Exception:  # noqa: BLE001 - a dead link, a closed client: the lock goes stale
                    break
        finally:
            self.held = False
            with _HELD_LOCK:
                _HELD.discard(self.token)

    def __enter__(self) -> BoardLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def folder_lock(folder: str | os.PathLike[str], *, what: str, label: str | None = None,
                error: type[EdgePruneError] = ShipError) -> BoardLock:
    """The deploy lock on a folder of this computer (``FOLDER/lock.json``; the folder must exist).

    The agent runs on it as a local subprocess, as on ``--target local``: the
    same link(2) lock, owner record, heartbeat and stale rule as a board's.
    Example::

        with folder_lock("out/", what="deploy digits-cnn to lab-pi", label="--output out/"):
            ...                     # a second deploy into out/ is refused meanwhile
    """
    path = str(Path(folder).expanduser().resolve())
    name = label or path
    reach = Reach(name=name, profile=None, transport="local", workdir=str(agent_path().parent),
                  python=sys.executable, deploy_dir=path)
    t = transport_class("local")(reach)
    t.ensure_workdir()
    return BoardLock(Board(reach, t), what=what, holder="this folder's lock", error=error)
