"""A FAKE adb for the tests (no phone or adbd can exist here), and a ``phone`` target that uses it.

The fake is a shell script named ``adb``: ``shell`` runs its arguments joined by
spaces with ``sh -c`` (what adbd does with them), ``push``/``pull`` copy files.
The "phone" is this machine with this Python as its interpreter (a real phone
needs one, e.g. Termux's). It checks our quoting, upload protocol, timeouts and
the ship/rollback flow through adb, not adb itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

FAKE_ADB = """#!/bin/sh
# FAKE adb for edgeprune's tests: not a phone.
[ "$1" = "-s" ] && shift 2
case "$1" in
  get-state) echo device ;;
  shell) shift; exec sh -c "$*" ;;
  push) cp "$2" "$3" ;;
  pull) cp "$2" "$3" ;;
  *) echo "fake adb: unsupported $1" >&2; exit 1 ;;
esac
"""


def install_fake_phone(tmp_path: Path, monkeypatch, *, workdir: Path, deploy_dir: Path | None = None) -> Path:
    """Put the fake ``adb`` first on PATH and a targets file with ``phone`` (pixel-8 profile) in
    ``EDGEPRUNE_TARGETS``; returns ``tmp_path``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").write_text(FAKE_ADB)
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    lines = ["[phone]", 'profile = "pixel-8"', 'host = "FAKE123"', f'workdir = "{workdir}"']
    if deploy_dir is not None:
        lines.append(f'deploy_dir = "{deploy_dir}"')
    lines.append(f'python = "{sys.executable}"')
    targets = tmp_path / "targets.toml"
    targets.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    return tmp_path
