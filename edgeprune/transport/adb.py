"""The adb transport, for Android phones: ``adb push``, ``adb shell``, ``/data/local/tmp``.

NOT YET RUN AGAINST A REAL PHONE: no Android device or adbd can be emulated
where edgeprune is developed. It is written to adb's documented behaviour:

- ``adb -s SERIAL shell CMD`` joins its arguments with spaces and hands them to
  the phone's ``/system/bin/sh -c``, so the command is ONE string built with
  ``shlex.join`` (every argument quoted); since Android 7 (shell protocol v2)
  the exit code of the command comes back as adb's own exit code.
- ``/data/local/tmp`` is the folder the ``shell`` user may write and execute
  in; the workdir defaults to ``/data/local/tmp/edgeprune``.
- ``adb push`` is followed by a ``toybox`` ``sha256sum`` and ``wc -c`` check
  and an ``mv -f`` rename, as on SSH boards.
- On timeout the phone-side process group is killed by the PID the wrapper
  printed (killing the local ``adb`` client does not stop it).

Phones have no system Python. Two ways to measure and ship (``Reach.runner``):

- without ``python =`` in the targets entry (the default): LiteRT's own
  ``benchmark_model`` binary, given by the user and pushed once
  (:mod:`edgeprune.bench.phone`, :mod:`edgeprune.ship.phone`);
- with ``python =`` (e.g. Termux's interpreter, with ai-edge-litert): the
  Python agent, exactly as on an SSH board.

Keys of a targets entry only phones read: ``benchmark_model`` (a path on
this computer), ``delegate`` (``cpu``, ``gpu``, ``nnapi``, ``external`` or a
delegate ``.so`` on the phone) and ``run_as`` (ship into a debuggable app's
own files).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from edgeprune.errors import ProfileError, TransportError
from edgeprune.transport._proc import run_process
from edgeprune.transport.base import MAX_OUTPUT, WRAPPER, RunResult, Transport, check_name

PACKAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$")  # an Android package name


class AdbTransport(Transport):
    kind = "adb"
    default_workdir = "/data/local/tmp/edgeprune"  # the folder the shell user may write and run in
    default_deploy_dir = "/data/local/tmp/edgeprune-deploy"

    @classmethod
    def runner(cls, reach) -> str:
        # A phone has no Python unless the user named one (Termux): then the agent runs there as anywhere.
        return "agent" if reach.python else "benchmark_model"

    @classmethod
    def locate(cls, reach, *, host, entry, source, tfile) -> None:
        super().locate(reach, host=host, entry=entry, source=source, tfile=tfile)
        for key in ("benchmark_model", "delegate", "run_as"):
            reach.put(key, entry.get(key), source)
        if reach.benchmark_model:
            reach.benchmark_model = str(Path(reach.benchmark_model).expanduser())
        if reach.run_as and not PACKAGE.match(reach.run_as):
            raise ProfileError(f"{tfile}: [{reach.name}] key 'run_as': expected an Android package name "
                               f"such as com.example.app, got {reach.run_as!r}")

    @classmethod
    def no_host_error(cls, name, tfile):
        return ProfileError(
            f"target '{name}' is reached with adb but no device is given; give one with "
            f'--host SERIAL (see `adb devices`), or host = "SERIAL" in [{name}] of {tfile}'
        )

    @classmethod
    def address(cls, reach) -> str:
        return f"adb:{reach.hostname}"  # --host is the device serial, e.g. 1A2B3C or 192.168.1.20:5555

    @property
    def identity(self) -> str:
        return f"adb:{self.reach.hostname}"

    def _adb(self) -> list[str]:
        adb = shutil.which("adb")
        if adb is None:
            raise TransportError(
                f"{self.reach.name}: the `adb` program is not installed on this computer "
                "(Debian/Ubuntu: apt install adb; else Android platform-tools)"
            )
        return [adb, "-s", self.reach.hostname]

    def connect(self) -> None:
        res = run_process(
            [*self._adb(), "get-state"],
            cwd=None,
            timeout=15,
            max_output=4096,
            what=f"{self.reach.name}: adb get-state",
        )
        if res.rc != 0 or b"device" not in res.stdout:
            msg = (res.stderr or res.stdout).decode("utf-8", "replace").strip()[:300]
            raise TransportError(
                f"{self.reach.name}: adb device {self.reach.hostname} is not ready: {msg} "
                "(see `adb devices`; authorize this computer on the phone)"
            )

    def run(self, argv: list[str], *, timeout: float, max_output: int = MAX_OUTPUT) -> RunResult:
        remote = shlex.join(["sh", "-c", WRAPPER, "edgeprune", self.workdir or ".", *argv])
        pid: list[int] = []

        def kill_remote() -> None:
            # The wrapper's first stdout line is its PID; we only know it if it came back.
            if pid:
                self._shell(f"kill -s KILL -- -{pid[0]} {pid[0]} 2>/dev/null; true", timeout=10)

        res = run_process(
            [*self._adb(), "shell", remote],
            cwd=None,
            timeout=timeout,
            max_output=max_output,
            what=f"{self.reach.name} (adb)",
            on_timeout=kill_remote,
        )
        line, _, rest = res.stdout.partition(b"\n")
        if line.strip().isdigit():
            pid.append(int(line))
            res.stdout = rest
        if res.overflow:
            kill_remote()
        return res

    def _shell(self, script: str, *, timeout: float) -> RunResult:
        return run_process(
            [*self._adb(), "shell", script],
            cwd=None,
            timeout=timeout,
            max_output=1 << 20,
            what=f"{self.reach.name} (adb)",
        )

    def ensure_workdir(self) -> str:
        if self.workdir is None:
            wd = self.reach.workdir or self.default_workdir
            res = self._shell(shlex.join(["mkdir", "-p", wd]), timeout=30)
            if res.rc not in (0, None):
                raise TransportError(
                    f"{self.reach.name}: cannot create {wd} on the phone: "
                    f"{res.stderr.decode('utf-8', 'replace').strip()[:300]}"
                )
            self.workdir = wd
        return self.workdir

    def _put(self, local: Path, remote_tmp: str, size: int) -> None:
        res = run_process(
            [*self._adb(), "push", str(local), remote_tmp],
            cwd=None,
            timeout=max(60.0, size / 1e6),
            max_output=1 << 20,
            what=f"{self.reach.name}: adb push {local.name}",
        )
        if res.rc != 0:
            raise TransportError(
                f"{self.reach.name}: adb push of {local.name} failed: "
                f"{(res.stderr or res.stdout).decode('utf-8', 'replace').strip()[:300]}"
            )

    def _get(self, remote: str, local_tmp: Path, max_bytes: int) -> None:
        # adb pull has no size cap: the caller checked the size first, and checks the copy after.
        res = run_process(
            [*self._adb(), "pull", remote, str(local_tmp)],
            cwd=None,
            timeout=max(60.0, max_bytes / 1e6),
            max_output=1 << 20,
            what=f"{self.reach.name}: adb pull",
        )
        if res.rc != 0:
            raise TransportError(
                f"{self.reach.name}: adb pull of {remote} failed: "
                f"{(res.stderr or res.stdout).decode('utf-8', 'replace').strip()[:300]}"
            )
        if local_tmp.is_file() and local_tmp.stat().st_size > max_bytes:
            raise TransportError(f"{self.reach.name}: {remote} grew past {max_bytes} bytes; refused")

    def push_folder(self, local: Path, name: str, *, timeout: float = 600.0) -> str:
        """Put the folder ``local`` at ``workdir/name`` with one ``adb push``; returns its path.

        A folder already there under that name is removed first (adb would merge into it). The copy
        is not checked here: the caller hashes its files on the phone (one ``sha256sum`` for all).
        """
        final = self.path(check_name(name))
        self.remove_folder(final)
        size = sum(p.stat().st_size for p in Path(local).rglob("*") if p.is_file())
        res = run_process(
            [*self._adb(), "push", str(local), final],
            cwd=None,
            timeout=max(timeout, size / 1e6),
            max_output=1 << 20,
            what=f"{self.reach.name}: adb push {Path(local).name}/",
        )
        if res.rc != 0:
            self.remove_folder(final)
            raise TransportError(
                f"{self.reach.name}: adb push of the folder {Path(local).name} failed: "
                f"{(res.stderr or res.stdout).decode('utf-8', 'replace').strip()[:300]}"
            )
        return final

    def remove_folder(self, path: str) -> None:
        """Remove the folder ``path`` (absolute, inside the workdir) and what it holds; best effort."""
        if self.workdir and path.startswith(self.workdir.rstrip("/") + "/") and "/../" not in path + "/":
            self._discard(path, tree=True)

    def _rename(self, src: str, dst: str) -> None:
        res = self._shell(shlex.join(["mv", "-f", src, dst]), timeout=30)
        if res.rc != 0:
            raise TransportError(f"{self.reach.name}: cannot rename {src} on the phone")

    def _discard(self, path: str, *, tree: bool = False) -> None:
        try:
            self._shell(shlex.join(["rm", "-rf" if tree else "-f", path]), timeout=30)
        except TransportError:
            pass
