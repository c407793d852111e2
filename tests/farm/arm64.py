"""An emulated aarch64 board: a Debian bookworm arm64 root filesystem run under qemu-user.

Bookworm's Python 3.11.2 is what Raspberry Pi OS bookworm ships. The root
filesystem gets ``openssh-server`` (its own, aarch64, sshd answers the
host) and the aarch64 ``ai-edge-litert`` wheel with its numpy, in
``/opt/litert`` (a ``.pth`` file puts it on the board Python's path).

Building takes ~5+ minutes and ~400 MB (debootstrap from the Debian mirror
apt uses), so it is done once and reused from ``$EDGEPRUNE_ARM64_ROOTFS``
(default ``/var/tmp/edgeprune-arm64``). Recipe and pitfalls: FACTS.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

DEFAULT_DIR = Path(os.environ.get("EDGEPRUNE_ARM64_ROOTFS", "/var/tmp/edgeprune-arm64"))
MARKER = "edgeprune-arm64-ready"


def _mirror() -> str:
    for src in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = src.read_text()
        except OSError:
            continue
        m = re.search(r"(?:URIs:\s*|deb\s+)(https?://\S+/debian)\b(?!-security)", text)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def missing_tools() -> list[str]:
    need = {"debootstrap": "debootstrap", "qemu-aarch64-static": "qemu-user-static"}
    missing = [pkg for tool, pkg in need.items() if not shutil.which(tool)]
    if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
        missing.append("binfmt-support (and: update-binfmts --enable qemu-aarch64)")
    return missing


def enable_binfmt() -> None:
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], check=False
        )
    if shutil.which("update-binfmts"):
        subprocess.run(
            ["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, check=False
        )


def build_rootfs(dest: Path = DEFAULT_DIR) -> Path:
    """The ready root filesystem at ``dest/rootfs`` (built on first use; ~5+ minutes)."""
    rootfs = dest / "rootfs"
    if (rootfs / MARKER).exists():
        return rootfs
    enable_binfmt()
    dest.mkdir(parents=True, exist_ok=True)
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        subprocess.run(
            [
                "debootstrap",
                "--arch=arm64",
                "--foreign",
                "--variant=minbase",
                "--include=python3,openssh-server",
                "bookworm",
                str(rootfs),
                _mirror(),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"],
            check=True,
            capture_output=True,
        )
    litert = rootfs / "opt" / "litert"
    if not (litert / "ai_edge_litert").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--platform",
                "manylinux_2_27_aarch64",
                "--platform",
                "manylinux2014_aarch64",
                "--platform",
                "manylinux_2_17_aarch64",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--target",
                str(litert),
                "ai-edge-litert",
            ],
            check=True,
            capture_output=True,
        )
    site = rootfs / "usr" / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    (site / "edgeprune-litert.pth").write_text("/opt/litert\n")
    (rootfs / MARKER).write_text("ok\n")
    return rootfs
