"""Shipping to a phone through adb, against a FAKE adb (no phone or adbd can exist here).

The fake is a shell script named ``adb``: ``shell`` runs its arguments joined by
spaces with ``sh -c`` (what adbd does), ``push``/``pull`` copy files. The "phone"
is this machine with this Python as its interpreter (a real phone needs one, e.g.
Termux's). It checks our quoting and the ship/rollback flow through adb, not adb.
"""

from __future__ import annotations

import sys

import pytest

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


@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    """A targets file with ``phone`` (pixel-8 profile, FAKE adb) and its folders under tmp_path."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").write_text(FAKE_ADB)
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    targets = tmp_path / "targets.toml"
    targets.write_text(
        f'[phone]\nprofile = "pixel-8"\nhost = "FAKE123"\n'
        f'workdir = "{tmp_path / "data-local-tmp" / "edgeprune"}"\n'
        f'deploy_dir = "{tmp_path / "data-local-tmp" / "edgeprune-deploy"}"\n'
        f'python = "{sys.executable}"\n'
    )
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path
