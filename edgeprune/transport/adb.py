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

Phones have no system Python: the agent needs an interpreter on the phone
(e.g. Termux's, with ai-edge-litert), named with ``python =`` in the targets file.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from edgeprune.errors import TransportError
from edgeprune.transport._proc import run_process
from edgeprune.transport.base import MAX_OUTPUT, WRAPPER, RunResult, Transport


class AdbTransport(Transport):
    kind = "adb"
    default_workdir = "/data/local/tmp/edgeprune"  # the folder the shell user may write and run in
    default_deploy_dir = "/data/local/tmp/edgeprune-deploy"

    @classmethod
    def no_host_error(cls, name, tfile):
        from edgeprune.errors import ProfileError

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

    def _rename(self, src: str, dst: str) -> None:
        res = self._shell(shlex.join(["mv", "-f", src, dst]), timeout=30)
        if res.rc != 0:
            raise TransportError(f"{self.reach.name}: cannot rename {src} on the phone")

    def _discard(self, path: str) -> None:
        try:
            self._shell(shlex.join(["rm", "-f", path]), timeout=15)
        except TransportError:
            pass
