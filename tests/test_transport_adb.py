"""The adb transport's logic against a FAKE adb (no phone or adbd can exist here).

The fake is a shell script named ``adb``: ``shell`` runs its arguments joined
by spaces with ``sh -c`` (what adbd does with them), ``push`` copies. It checks
our quoting, upload protocol and timeout handling, not adb itself.
"""

from __future__ import annotations

import sys
import time

import pytest

from edgeprune._paths import sha256_file
from edgeprune.errors import TransportError
from edgeprune.reach import resolve_target
from edgeprune.transport import open_transport

FAKE_ADB = """#!/bin/sh
# FAKE adb for edgeprune's tests.
[ "$1" = "-s" ] && shift 2
case "$1" in
  get-state) echo device ;;
  shell) shift; exec sh -c "$*" ;;
  push) cp "$2" "$3" ;;
  *) echo "fake adb: unsupported $1" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def phone(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "adb").write_text(FAKE_ADB)
    (bindir / "adb").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    targets = tmp_path / "targets.toml"
    targets.write_text(
        f'[phone]\nprofile = "pixel-8"\nhost = "FAKE123"\nworkdir = "{tmp_path / "data-local-tmp"}"\n'
        f'python = "{sys.executable}"\n'
    )
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    return tmp_path


def test_upload_and_run_with_quoting(phone):
    name = "a b;touch pwned.tflite"
    src = phone / "m.bin"
    src.write_bytes(b"x" * 5000)
    with open_transport(resolve_target("phone")) as t:
        assert t.ensure_workdir() == str(phone / "data-local-tmp")
        assert t.upload(src, name) is True and t.upload(src, name) is False
        assert t.remote_digest(t.path(name)) == (5000, sha256_file(src))
        res = t.run(["ls", "-A"], timeout=10)
        assert res.rc == 0 and res.stdout.decode().split("\n")[0] == name
    assert not list(phone.rglob("pwned.tflite"))


def test_timeout_stops_the_phone_side_process(phone):
    with open_transport(resolve_target("phone")) as t:
        t.ensure_workdir()
        start = time.monotonic()
        with pytest.raises(TransportError, match="timed out"):
            t.run(["sleep", "30"], timeout=1)
        assert time.monotonic() - start < 6


def test_missing_adb_names_the_package(phone, monkeypatch):
    monkeypatch.setenv("PATH", str(phone / "empty"))
    with pytest.raises(TransportError, match="apt install adb"):
        open_transport(resolve_target("phone")).connect()
