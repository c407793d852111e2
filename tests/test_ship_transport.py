"""The transport primitives shipping needs: uploads into another folder, capped downloads.

Local and the fake adb here; the SSH transport is exercised by tests/test_ship_farm.py.
"""

from __future__ import annotations

import sys

import pytest

from edgeprune._paths import sha256_file
from edgeprune.boards.reach import resolve_target
from edgeprune.errors import TransportError
from edgeprune.transport import open_transport
from tests.test_ship_adb import fake_phone  # noqa: F401  (fixture)


def _local(tmp_path, monkeypatch):
    targets = tmp_path / "targets.toml"
    targets.write_text(f'[here]\nprofile = "local"\npython = "{sys.executable}"\n')
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return resolve_target("here")


@pytest.fixture(params=["local", "adb"])
def board(request, tmp_path, monkeypatch):
    if request.param == "local":
        reach = _local(tmp_path, monkeypatch)
    else:
        request.getfixturevalue("fake_phone")
        reach = resolve_target("phone")
    with open_transport(reach) as t:
        t.ensure_workdir()
        yield t


def test_upload_into_another_folder_and_download_back(board, tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    src = tmp_path / "m.bin"
    src.write_bytes(b"abc" * 1000)
    assert board.upload(src, "m.bin", folder=str(folder)) is True
    assert board.upload(src, "m.bin", folder=str(folder)) is False
    assert sha256_file(folder / "m.bin") == sha256_file(src)
    assert not (tmp_path / "cache" / "local-board" / "m.bin").exists()
    got = board.download("m.bin", tmp_path / "back" / "m.bin", max_bytes=10_000, folder=str(folder))
    assert got.read_bytes() == src.read_bytes()


def test_download_refuses_a_file_over_the_cap(board, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "big").write_bytes(b"x" * 5000)
    dest = tmp_path / "dl" / "big"
    with pytest.raises(TransportError, match="5000 bytes, more than the 4096") as exc:
        board.download("big", dest, max_bytes=4096, folder=str(folder))
    assert "\n" not in str(exc.value) and not dest.exists()
    with pytest.raises(TransportError, match="not found on the board"):
        board.download("absent", dest, max_bytes=4096, folder=str(folder))
    assert not dest.parent.exists() or not list(dest.parent.iterdir())


def test_download_names_must_be_plain(board, tmp_path):
    with pytest.raises(TransportError, match="not a plain file name"):
        board.download("../x", tmp_path / "x", max_bytes=10)
