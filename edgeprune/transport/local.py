"""The local transport: the agent runs as a subprocess of this machine's Python.

The "board" is this computer; its workdir defaults to ``<cache>/local-board``.
Files are copied there with the same atomic, checked protocol as on a real
board, so ``--target local`` exercises the same path as SSH.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from edgeprune._paths import cache_dir, sha256_file
from edgeprune.errors import ProfileError, TransportError
from edgeprune.transport._proc import run_process
from edgeprune.transport.base import MAX_OUTPUT, RunResult, Transport


class LocalTransport(Transport):
    kind = "local"
    default_workdir = None  # <cache>/local-board, found when first used
    default_deploy_dir = None  # <cache>/local-deploy: this machine's "board" lives in the cache

    @classmethod
    def locate(cls, reach, *, host, entry, source, tfile) -> None:
        if host:
            raise ProfileError(
                f"target '{reach.name}' is this machine (transport local); --host is not used with it"
            )
        reach.put("python", entry.get("python"), source)

    @classmethod
    def address(cls, reach) -> str:
        return "local"

    @property
    def identity(self) -> str:
        return f"local:{socket.gethostname()}"

    @property
    def default_python(self) -> str:
        return sys.executable

    def ensure_workdir(self) -> str:
        if self.workdir is None:
            if self.reach.workdir:
                path = Path(self.reach.workdir).expanduser()
            else:
                path = cache_dir() / "local-board"
            path.mkdir(parents=True, exist_ok=True)
            self.workdir = str(path.resolve())
        return self.workdir

    def run(self, argv: list[str], *, timeout: float, max_output: int = MAX_OUTPUT) -> RunResult:
        return run_process(
            list(argv),
            cwd=self.workdir,
            timeout=timeout,
            max_output=max_output,
            what=f"{self.reach.name} (local)",
        )

    def remote_digest(self, path: str) -> tuple[int, str] | None:
        p = Path(path)
        return (p.stat().st_size, sha256_file(p)) if p.is_file() else None

    def _put(self, local: Path, remote_tmp: str, size: int) -> None:
        shutil.copyfile(local, remote_tmp)

    def _get(self, remote: str, local_tmp: Path, max_bytes: int) -> None:
        with open(remote, "rb") as src, open(local_tmp, "wb") as dst:
            copied = 0
            for chunk in iter(lambda: src.read(1 << 20), b""):
                copied += len(chunk)
                if copied > max_bytes:
                    raise TransportError(f"{remote} grew past {max_bytes} bytes while copied; refused")
                dst.write(chunk)

    def _rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def _discard(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
