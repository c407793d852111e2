"""Shipping to a phone without Python, listing and rolling back, against a FAKE adb, FAKE run-as and a
FAKE benchmark_model (tests/fake_adb.py): staging, sha256 on the phone, loaded and run with the delegate,
``current`` renamed over atomically; outputs never compared, and never called "passed"."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeprune.cli import main
from edgeprune.errors import ShipError
from edgeprune.ship import list_releases, rollback, ship_artifact
from edgeprune.ship.phone import NOT_COMPARED
from tests.fake_adb import install_fake_bm_phone

X = np.zeros((2, 32, 32, 3), np.float32)  # taken like the agent path's, unused: no runner on the phone


@pytest.fixture(scope="module")
def tflites(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from tests.farm.models import tiny_tflite

    d = tmp_path_factory.mktemp("tfl")
    a = tiny_tflite(d / "a.tflite")
    b = d / "b.tflite"
    b.write_bytes(a.read_bytes() + b"\0" * 64)  # another file: another release
    return a, b


@pytest.fixture
def phone(tmp_path, monkeypatch):
    return install_fake_bm_phone(tmp_path, monkeypatch)


def deploy_dir(phone):
    return phone / "data-local-tmp" / "edgeprune-deploy"


def test_ship_list_rollback_on_a_phone_without_python(phone, tflites):
    a = ship_artifact(tflites[0], target="phone", verify_inputs=X, manifest={"precision": "int8"})
    b = ship_artifact(tflites[1], target="phone", verify_inputs=X, manifest={"precision": "int8"})
    d = deploy_dir(phone)
    assert b.previous == a.release and (d / "current").resolve() == d / "releases" / b.release
    assert (d / "current" / "model.tflite").read_bytes() == tflites[1].read_bytes()
    assert os.readlink(d / "current") == f"releases/{b.release}"  # relative: the folder can move
    st = b.check["statement"]
    assert st == f"on-device check: loaded and ran with GPU delegate (3 of 3 nodes); {NOT_COMPARED}"
    assert b.check["outputs_compared"] is False and "passed" not in b.check and "passed" not in b.summary()
    manifest = json.loads((d / "releases" / b.release / "manifest.json").read_text())
    assert manifest["on_device_check"] == st and manifest["artifact"]["sha256"] == b.sha256
    assert manifest["check"]["delegate"] == "gpu" and "passed" not in json.dumps(manifest)
    listing = list_releases("phone")
    assert [r.id for r in listing.releases] == [a.release, b.release] and listing.current == b.release
    assert listing.releases[1].sha256 == b.sha256 and listing.releases[1].precision == "int8"
    back = rollback("phone")
    assert back.release == a.release and back.changed and back.check["statement"].endswith(NOT_COMPARED)
    assert (d / "current").resolve() == d / "releases" / a.release
    assert (d / "previous").resolve() == d / "releases" / b.release
    assert not list((d / "staging").iterdir()) and not (d / "lock.json").exists()
    graphs = (phone / "bm.log").read_text()
    assert f"--graph={d}/staging/{b.release}/model.tflite" in graphs  # the staged file itself was loaded
    assert f"--graph={d}/releases/{a.release}/model.tflite" in graphs  # and the release rolled back to


def test_ship_into_a_debuggable_apps_own_files_with_run_as(tmp_path, monkeypatch, tflites):
    phone = install_fake_bm_phone(tmp_path, monkeypatch, run_as="com.example.clinic")
    a = ship_artifact(tflites[0], target="phone", verify_inputs=X)
    b = ship_artifact(tflites[1], target="phone", verify_inputs=X)
    app = phone / "apps" / "com.example.clinic" / "files" / "edgeprune-deploy"
    assert b.deploy_dir == str(app) and (app / "current").resolve() == app / "releases" / b.release
    assert (app / "current" / "model.tflite").read_bytes() == tflites[1].read_bytes()
    assert not (phone / "data-local-tmp" / "edgeprune-deploy").exists()
    assert rollback("phone").release == a.release
    workdir = sorted(p.name for p in (phone / "data-local-tmp" / "edgeprune").iterdir())
    assert len(workdir) == 1 and workdir[0].startswith("benchmark_model-")  # the copies were removed


def test_run_as_an_app_that_is_not_debuggable_is_one_line(tmp_path, monkeypatch, tflites):
    install_fake_bm_phone(tmp_path, monkeypatch, run_as="com.example.clinic")
    (tmp_path / "apps" / "com.example.clinic" / "files").rmdir()
    (tmp_path / "apps" / "com.example.clinic").rmdir()
    with pytest.raises(Exception, match="run-as: package not debuggable: com.example.clinic") as exc:
        ship_artifact(tflites[0], target="phone", verify_inputs=X)
    assert "must be an installed debuggable app, or remove run_as" in str(exc.value) and "\n" not in str(exc.value)


def test_a_model_the_phone_cannot_run_is_not_switched_to(phone, tflites, monkeypatch):
    a = ship_artifact(tflites[0], target="phone", verify_inputs=X)
    monkeypatch.setenv("FAKE_BM_CRASH_ON", "staging")
    with pytest.raises(ShipError) as exc:
        ship_artifact(tflites[1], target="phone", verify_inputs=X)
    msg = str(exc.value)
    assert "crashed on b.tflite (signal 11)" in msg and msg.endswith(
        f"nothing was switched: phone's current release is still {a.release}")
    d = deploy_dir(phone)
    assert (d / "current").resolve() == d / "releases" / a.release and not list((d / "staging").iterdir())
    assert not (d / "lock.json").exists()


def test_a_damaged_upload_is_not_switched_to(phone, tflites, monkeypatch):
    ship_artifact(tflites[0], target="phone", verify_inputs=X)
    monkeypatch.setenv("FAKE_ADB_PUSH", "corrupt")
    with pytest.raises(ShipError, match="arrived damaged.*nothing was switched"):
        ship_artifact(tflites[1], target="phone", verify_inputs=X)


def test_another_deploys_lock_is_respected_and_a_dead_ones_cleared(phone, tflites):
    d = deploy_dir(phone)
    a = ship_artifact(tflites[0], target="phone", verify_inputs=X)
    owner = {"host": "other-computer/1234abcd", "pid": 4242, "user": "ci", "what": "ship x.tflite",
             "token": "a1b2c3"}
    (d / "lock.json").write_text(json.dumps(owner))
    with pytest.raises(ShipError, match=r"another deploy holds the board's deploy lock \(ship x.tflite by ci"):
        ship_artifact(tflites[1], target="phone", verify_inputs=X)
    os.utime(d / "lock.json", (1, 1))  # not refreshed for decades: its deploy died
    b = ship_artifact(tflites[1], target="phone", verify_inputs=X)
    assert any("cleared a stale deploy lock" in n for n in b.notes) and b.previous == a.release


def test_a_toybox_without_mv_T_is_switched_in_two_steps_and_says_so(phone, tflites):
    mv = phone / "bin" / "mv"
    mv.write_text('#!/bin/sh\n# FAKE old toybox mv: no -T\nfor a; do [ "$a" = -fT ] && { echo "mv: Unknown option '
                  "'T'\" >&2; exit 1; }; done\nexec /bin/mv \"$@\"\n")
    mv.chmod(0o755)
    ship_artifact(tflites[0], target="phone", verify_inputs=X)
    b = ship_artifact(tflites[1], target="phone", verify_inputs=X)
    assert any("not atomic" in n for n in b.notes)
    d = deploy_dir(phone)
    assert (d / "current").resolve() == d / "releases" / b.release


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_releases_and_rollback_commands(capsys, phone, tflites):
    a = ship_artifact(tflites[0], target="phone", verify_inputs=X)
    code, out, err = run(capsys, "rollback", "-t", "phone")
    assert code == 1 and err.strip().startswith("error: phone: no previous release to roll back to")
    b = ship_artifact(tflites[1], target="phone", verify_inputs=X)
    code, out, _ = run(capsys, "releases", "-t", "phone", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["current"] == b.release and len(doc["releases"]) == 2
    code, out, _ = run(capsys, "rollback", "-t", "phone", "--to", a.release, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["release"] == a.release and doc["check"]["outputs_compared"] is False


def test_release_order_on_a_phone_is_when_each_was_made(phone, tflites, monkeypatch):
    """Issue 23: the phone's deploy script orders releases by their recorded sequence number, not by id."""
    same_second = ["20260101-000000-ffffffff", "20260101-000000-cccccccc", "20260101-000000-aaaaaaaa"]
    ids = iter(same_second)
    monkeypatch.setattr("edgeprune.ship.phone.new_release_id", lambda sha, now=None: next(ids))
    made = [ship_artifact(tflites[i % 2], target="phone", verify_inputs=X, keep=2,
                          manifest={"precision": "int8"}).release for i in range(3)]
    assert made == same_second
    d = deploy_dir(phone)
    assert sorted(p.name for p in (d / "releases").iterdir()) == sorted(made[-2:])
    assert [r.id for r in list_releases("phone").releases] == made[-2:]
