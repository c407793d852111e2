"""The adb transport's logic against a FAKE adb (tests/fake_adb.py: no phone or adbd can exist here)."""

from __future__ import annotations

import time

import pytest

from edgeprune._paths import sha256_file
from edgeprune.boards.reach import resolve_target
from edgeprune.errors import TransportError
from edgeprune.transport import open_transport
from tests.fake_adb import install_fake_phone


@pytest.fixture
def phone(tmp_path, monkeypatch):
    return install_fake_phone(tmp_path, monkeypatch, workdir=tmp_path / "data-local-tmp")


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
