"""Ship to a phone without Python, list its releases, roll back: the same steps, no runner on the phone.

NOT YET RUN AGAINST A REAL PHONE (a FAKE adb, FAKE run-as and FAKE benchmark_model in tests/).

:func:`edgeprune.ship.ship_artifact`, :func:`~edgeprune.ship.list_releases` and
:func:`~edgeprune.ship.rollback` hand an adb target without ``python =``
(``Reach.runner == "benchmark_model"``) to these functions. The steps are the
ship's (:mod:`edgeprune.ship.ship`), on :class:`~edgeprune.ship.phone_folder.PhoneFolder`:

connect (benchmark_model pushed if it changed, deploy folder made), lock,
stage, upload (``staging/ID/model.tflite``: temporary name, size and sha256
checked, renamed), sha256 (hashed again on the phone with toybox
``sha256sum``), **verify**, manifest, switch (``current`` renamed over
atomically, ``previous`` kept), gc, unlock.

**verify** is what a phone can check: ``benchmark_model`` loads the shipped
file and runs it with the profile's delegate (proof that the phone's runtime
takes it, and whether the delegate took all of it). It cannot compare the
outputs with the host's: there is no runner on the phone that returns them.
The manifest and the result say so, never "passed"::

    on-device check: loaded and ran with GPU delegate (31 of 31 nodes); outputs not compared: no runner on the phone

A rollback does the same checks before switching back (the release's sha256
against its manifest, then loaded and run).

Example::

    result = ship_to_phone("model.tflite", reach=resolve_target("my-pixel"), manifest={...})
    result.check["statement"], result.previous
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from edgeprune._paths import sha256_file
from edgeprune.bench.delegates import describe_delegate, judge_delegate
from edgeprune.bench.phone import Phone
from edgeprune.errors import EdgePruneError, ModelError, ShipError, TransportError
from edgeprune.ship.board import check_release_id
from edgeprune.ship.check import tolerance
from edgeprune.ship.lock import STALE_S, BoardLock
from edgeprune.ship.phone_folder import PhoneFolder
from edgeprune.ship.releases import ReleaseList, RollbackResult, _info, _stored_check
from edgeprune.ship.ship import (
    DEFAULT_KEEP,
    RUNNER_BACKENDS,
    ShipResult,
    StepHook,
    _gc,
    _manifest,
    _quietly,
    _stage,
    _stamped_precision,
    _stepper,
    _unchanged_error,
    new_release_id,
    switch_current,
)
from edgeprune.transport import open_transport

NOT_COMPARED = "outputs not compared: no runner on the phone"
CHECK_RUNS = 3


def load_and_run(phone: Phone, path: str, *, name: str, timeout_s: float) -> dict[str, Any]:
    """The on-device check a phone can do: benchmark_model loads ``path`` and runs it with the delegate."""
    out = phone.run(path, runs=CHECK_RUNS, warmup=1, timeout=timeout_s, what=name)
    d = judge_delegate(out, phone.delegate)
    s = out.inference
    return {
        "kind": "benchmark_model", "loaded": True, "ran": True, "outputs_compared": False,
        "statement": f"on-device check: loaded and ran with {describe_delegate(d)}; {NOT_COMPARED}",
        "delegate": d["name"], "delegate_ran": d["ran"], "fell_back": d["fell_back"],
        "nodes_delegated": d["nodes_delegated"], "nodes_total": d["nodes_total"],
        "runs": s.count, "p50_ms": None if s.center_us is None else round(s.center_us / 1000.0, 5),
        "runtime": {"name": "litert", "version": phone.runtime_version},
        "board": {k: phone.facts.get(k) for k in ("id", "model", "os", "cpu_model", "machine")},
        "samples": 0, "outputs": [],
    }


def ship_to_phone(artifact_path, *, reach, manifest: dict[str, Any] | None = None, precision: str | None = None,
                  keep: int = DEFAULT_KEEP, lock_wait_s: float = 0.0, lock_stale_s: float = STALE_S,
                  timeout_s: float = 600.0, accept_new_host_key: bool = False,
                  on_step: StepHook | None = None, **_ignored: Any) -> ShipResult:
    """Ship ``artifact_path`` (.tflite) to the phone ``reach``; see the module docstring.

    Takes :func:`~edgeprune.ship.ship_artifact`'s options; ``verify_inputs``
    and ``reference_outputs`` are accepted and unused (no runner on the phone).
    """
    start = time.monotonic()
    name = reach.name
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ModelError(f"{artifact}: artifact not found")
    if artifact.suffix.lower() != ".tflite":
        raise ShipError(f"{artifact}: {name} runs .tflite files with LiteRT; export one with: edgeprune export "
                        f"--target {reach.profile.name}")
    if keep < 1:
        raise ShipError(f"keep={keep}: keep at least 1 release")
    info = dict(manifest or {})
    precision = precision or info.get("precision") or _stamped_precision(artifact) or "fp32"
    tolerance(precision)
    try:
        json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ShipError(f"manifest: not JSON-serialisable ({exc})") from None
    sha, size = sha256_file(artifact), artifact.stat().st_size
    model_file = "model.tflite"
    step = _stepper(name, on_step)
    with tempfile.TemporaryDirectory(prefix="edgeprune-ship-") as tmpd, open_transport(
            reach, accept_new_host_key=accept_new_host_key) as t:
        tmp = Path(tmpd)
        step("connect", "connecting, benchmark_model and deploy folder")
        phone = Phone(reach, t)
        phone.prepare()
        folder = PhoneFolder(reach, t)
        current = folder.prepare().get("current")
        lock = BoardLock(folder, what=f"ship {artifact.name}", stale_s=lock_stale_s, wait_s=lock_wait_s)
        step("lock", "taking the deploy lock")
        notes = lock.acquire()
        rid = staged = None
        switched = False
        try:
            step("stage", "staging")
            rid, doc = _stage(folder, lock.token, new_release_id(sha))
            staged, current = doc["staging"], doc.get("current")
            step("upload", f"uploading {artifact.name} ({size / 2**20:.1f} MiB)")
            copy = folder.put(artifact, model_file, folder=staged, keep_copy=True)
            step("sha256", "checking sha256 on the phone")
            got = folder.digest(f"{staged}/{model_file}")
            if got != (size, sha):
                raise ShipError(f"{name}: the phone's copy has size/sha256 {got}, sent {size}/{sha[:16]}")
            step("verify", f"loading and running it with benchmark_model ({phone.delegate.label})")
            # an app's folder is not readable by the shell user: run the workdir copy, the same sha256
            readable = t.path(copy) if copy else f"{staged}/{model_file}"
            try:
                check = load_and_run(phone, readable, name=artifact.name, timeout_s=min(timeout_s, 300.0))
            finally:
                if copy:
                    t.remove(copy)
            step("manifest", "writing the manifest")
            full = _manifest(info, reach=reach, rid=rid, artifact=artifact, model_file=model_file, sha=sha,
                             size=size, precision=precision, runtime="litert", check=check, previous=current)
            full["check"] = check  # no check inputs or expected outputs in a phone's release
            full["on_device_check"] = check["statement"]
            (tmp / "manifest.json").write_text(json.dumps(full, allow_nan=False))  # one line: the lister reads lines
            folder.put(tmp / "manifest.json", "manifest.json", folder=staged)
            step("switch", f"switching current to {rid}")
            doc = switch_current(folder, lock.token, rid, name=name, current=current)
            switched = True
            notes += doc.get("notes") or []
            previous = doc.get("previous")
            step("gc", f"keeping the newest {keep} releases")
            removed = _gc(folder, lock.token, keep, notes)
        except BaseException as exc:
            if staged and not switched:
                _quietly(folder.release, "discard", "--token", lock.token, "--id", rid)
            if isinstance(exc, EdgePruneError) and not switched and not getattr(exc, "final", False):
                raise _unchanged_error(exc, name, current) from exc
            raise
        finally:
            lock.release()
        step("done", f"shipped {rid}")
    return ShipResult(
        target=name, release=rid, deploy_dir=folder.root, release_dir=folder.path("releases", rid),
        model_path=folder.path("releases", rid, model_file), sha256=sha, size_bytes=size, previous=previous,
        check=check, board=dict(phone.facts), manifest=full, removed=removed, notes=notes,
        seconds=time.monotonic() - start)


def list_phone_releases(reach, *, accept_new_host_key: bool = False) -> ReleaseList:
    """The releases in the phone's deploy folder, oldest first, with which is current."""
    with open_transport(reach, accept_new_host_key=accept_new_host_key) as t:
        t.ensure_workdir()
        listing = PhoneFolder(reach, t).listing()
    cur, prev = listing["current"], listing["previous"]
    return ReleaseList(target=reach.name, deploy_dir=listing["deploy_dir"], current=cur, previous=prev,
                       releases=[_info(r, cur, prev) for r in listing["releases"]], lock=listing["lock"])


def rollback_phone(reach, *, to: str | None = None, lock_wait_s: float = 0.0, lock_stale_s: float = STALE_S,
                   timeout_s: float = 600.0, accept_new_host_key: bool = False,
                   on_step: StepHook | None = None) -> RollbackResult:
    """Switch the phone back to ``to`` (default: the previous release) after its sha256 matches its
    manifest and benchmark_model loads and runs it (outputs not compared)."""
    start = time.monotonic()
    name = reach.name
    if to is not None:
        check_release_id(to, target=name)
    step = _stepper(name, on_step)
    with open_transport(reach, accept_new_host_key=accept_new_host_key) as t:
        step("connect", "connecting")
        phone = Phone(reach, t)
        phone.prepare()
        folder = PhoneFolder(reach, t)
        folder.prepare()
        lock = BoardLock(folder, what=f"rollback to {to or 'previous'}", stale_s=lock_stale_s, wait_s=lock_wait_s)
        step("lock", "taking the deploy lock")
        notes = lock.acquire()
        cur = None
        try:
            listing = folder.listing()
            cur = listing["current"]
            ids = [r["id"] for r in listing["releases"]]
            rid = to or listing["previous"]
            if rid is None:
                raise ShipError(f"{name}: no previous release to roll back to (current: {cur or 'none'}; "
                                f"releases: {', '.join(ids) or 'none'}); name one with --to ID")
            if rid not in ids:
                raise ShipError(f"{name}: no release {rid} on the phone (releases: {', '.join(ids) or 'none'})")
            if rid == cur:
                return RollbackResult(name, rid, cur, False, None, [*notes, f"{name}: {rid} is already current"],
                                      time.monotonic() - start)
            entry = next(r for r in listing["releases"] if r["id"] == rid)
            file, sha, _precision = _stored_check(name, rid, entry["manifest"])
            model = folder.path("releases", rid, file)
            step("sha256", f"checking {rid}'s sha256 on the phone")
            got = folder.digest(model)
            if got is None or got[1] != sha:
                raise ShipError(f"{name}: release {rid} is damaged: its model's sha256 on the phone "
                                f"({got[1][:16] if got else 'missing'}) differs from its manifest's ({sha[:16]})")
            step("verify", f"loading and running {rid} with benchmark_model ({phone.delegate.label})")
            readable, copy = folder.readable_copy(model, sha)
            try:
                check = load_and_run(phone, readable, name=f"release {rid}", timeout_s=min(timeout_s, 300.0))
            finally:
                if copy:
                    t.remove(copy)
            step("switch", f"switching current to {rid}")
            try:
                doc = folder.release("switch", "--token", lock.token, "--id", rid)
            except TransportError as exc:
                err = ShipError(f"{name}: the link was lost while switching to {rid} ({exc}); current is either "
                                f"{cur} or {rid}: see `edgeprune releases --target {name}`")
                err.final = True
                raise err from None
            if doc.get("current") != rid:
                raise ShipError(f"{name}: the phone answered current={str(doc.get('current'))[:100]!r}")
            notes += doc.get("notes") or []
        except EdgePruneError as exc:
            if getattr(exc, "final", False):
                raise
            raise _unchanged_error(exc, name, cur) from exc
        finally:
            lock.release()
        step("done", f"rolled back to {rid}")
    return RollbackResult(name, rid, cur, True, check, notes, time.monotonic() - start)


class _PhoneBackend:
    """The phone's entry in :data:`edgeprune.ship.ship.RUNNER_BACKENDS`."""

    ship = staticmethod(lambda artifact, **kw: ship_to_phone(artifact, **kw))
    releases = staticmethod(lambda reach, **kw: list_phone_releases(reach, **kw))
    rollback = staticmethod(lambda reach, **kw: rollback_phone(reach, **kw))


RUNNER_BACKENDS["benchmark_model"] = _PhoneBackend
