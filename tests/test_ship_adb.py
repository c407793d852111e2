"""Shipping to a phone through adb, against a FAKE adb (tests/fake_adb.py: no phone or adbd can exist
here; the "phone" is this machine with this Python as its interpreter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_adb import install_fake_phone


@pytest.fixture
def fake_phone(tmp_path, monkeypatch):
    """A targets file with ``phone`` (pixel-8 profile, FAKE adb) and its folders under tmp_path."""
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    return install_fake_phone(tmp_path, monkeypatch, workdir=tmp_path / "data-local-tmp" / "edgeprune",
                              deploy_dir=tmp_path / "data-local-tmp" / "edgeprune-deploy")


@pytest.fixture(scope="module")
def tflites(tmp_path_factory):
    """Two small TFLite models that differ (phones run LiteRT)."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    d = tmp_path_factory.mktemp("tfl")
    a = tiny_tflite(d / "a.tflite")
    b = d / "b.tflite"
    b.write_bytes(a.read_bytes() + b"")  # same graph: the second must still be a new release
    return a, b


def test_ship_list_rollback_through_adb(fake_phone, tflites):
    import numpy as np

    from edgeprune.ship import list_releases, rollback, ship_artifact

    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    a = ship_artifact(tflites[0], target="phone", verify_inputs=x)
    b = ship_artifact(tflites[1], target="phone", verify_inputs=x,
                      inline_max_bytes=0)  # outputs come back with `adb pull`
    deploy = fake_phone / "data-local-tmp" / "edgeprune-deploy"
    assert b.deploy_dir == str(deploy) and b.previous == a.release and a.release != b.release
    assert b.check["runtime"]["name"] == "litert" and b.model_path.endswith("/model.tflite")
    assert (deploy / "current").resolve() == deploy / "releases" / b.release
    assert list_releases("phone").current == b.release
    assert rollback("phone").release == a.release
    assert (deploy / "current").resolve() == deploy / "releases" / a.release
    assert not list((deploy / "staging").iterdir()) and not (deploy / "lock.json").exists()


def test_phone_default_deploy_folder_is_under_data_local_tmp(fake_phone, monkeypatch):
    from edgeprune.boards.reach import resolve_target
    from edgeprune.ship.board import deploy_dir_for

    (fake_phone / "t2.toml").write_text('[phone2]\nprofile = "pixel-8"\nhost = "FAKE123"\n')
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(fake_phone / "t2.toml"))
    assert deploy_dir_for(resolve_target("phone2")) == "/data/local/tmp/edgeprune-deploy"
    assert deploy_dir_for(resolve_target("phone2")) != resolve_target("phone2").workdir


@pytest.mark.timeout(900)
def test_deploy_to_a_phone_through_adb(fake_phone):
    """The whole deploy to a (FAKE adb) phone: full-INT8 TFLite, gate, release under its deploy folder."""
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("tensorflow")
    from edgeprune._threads import one_thread
    from edgeprune.deploy import deploy_model

    with one_thread():
        rep = deploy_model("digits-cnn", target="phone", ratio=0.3, steps=120, output=fake_phone / "out")
    assert rep["ok"] and rep["gate"]["passed"]
    rel = rep["release"]
    assert (rel["format"], rel["precision"]) == ("tflite", "int8") and rel["verification"]["passed"]
    deploy = fake_phone / "data-local-tmp" / "edgeprune-deploy"
    assert (deploy / "current").resolve() == deploy / "releases" / rel["id"]
    assert (deploy / "current" / "model.tflite").read_bytes() == Path(
        rep["output"], "export", rel["artifact"]).read_bytes()
    assert rep["board"]["runtime"] == "litert"
