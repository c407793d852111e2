"""List a board's releases, and roll back to one after the same on-board checks as a ship.

A rollback takes the deploy lock, checks the chosen release's model against
the sha256 in its manifest (hashed on the board), loads it with the board's
runtime and runs the check inputs stored in the release at ship time, compares
the outputs with the expected outputs stored beside them (tolerance of the
release's precision), and only then swaps ``current`` with rename(2). The
release it left becomes ``previous``, so a second rollback goes back again.

Example::

    listing = list_releases("lab-pi")
    [(r.id, r.current) for r in listing.releases]
    rollback("lab-pi")                        # to the previous release
    rollback("lab-pi", to="20261128-101502-3f2a9c1d")
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.bench.runner import AGENT_NAME, agent_path, choose_runtime
from edgeprune.errors import EdgePruneError, ShipError, TransportError
from edgeprune.ship.board import Board, check_release_id
from edgeprune.ship.check import TOLERANCES, load_outputs
from edgeprune.ship.lock import STALE_S, BoardLock
from edgeprune.ship.ship import (
    CHECK_INPUTS,
    CHECK_OUTPUTS,
    MAX_EXPECTED_BYTES,
    MODEL_FILE,
    RUNNER_BACKENDS,
    StepHook,
    _quietly,
    _reach,
    _stepper,
    _unchanged_error,
    verify_on_board,
)
from edgeprune.transport import open_transport
from edgeprune.validate import check as check_option

_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class ReleaseInfo:
    """One release as ``edgeprune releases`` shows it (figures from its manifest)."""

    id: str
    time: str | None
    sha256: str | None
    format: str | None
    precision: str | None
    latency_ms: float | None  # p50 when the manifest has a latency dict
    accuracy: Any
    current: bool
    previous: bool
    bytes: int | None
    manifest: dict[str, Any] | None = field(default=None, repr=False)


@dataclass
class ReleaseList:
    target: str
    deploy_dir: str
    current: str | None
    previous: str | None
    releases: list[ReleaseInfo]
    lock: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RollbackResult:
    target: str
    release: str  # current now
    rolled_back_from: str | None
    changed: bool
    check: dict[str, Any] | None
    notes: list[str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: Any, n: int = 100) -> str | None:
    return str(value)[:n] if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _latency(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("p50", value.get("mean"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _info(entry: dict[str, Any], current: str | None, previous: str | None) -> ReleaseInfo:
    m = entry.get("manifest") or {}
    art = m.get("artifact") if isinstance(m.get("artifact"), dict) else {}
    acc = m.get("accuracy")
    return ReleaseInfo(
        id=entry["id"],
        time=_text(m.get("time"), 40),
        sha256=_text(art.get("sha256"), 64),
        format=_text(art.get("format") or m.get("format"), 20),
        precision=_text(art.get("precision") or m.get("precision"), 20),
        latency_ms=_latency(m.get("latency_ms")),
        accuracy=acc if isinstance(acc, dict | int | float) and not isinstance(acc, bool) else None,
        current=entry["id"] == current,
        previous=entry["id"] == previous,
        bytes=entry.get("bytes"),
        manifest=entry.get("manifest"),
    )


def list_releases(target, *, host: str | None = None, accept_new_host_key: bool = False) -> ReleaseList:
    """The releases on ``target``'s deploy folder, oldest first, with which is current."""
    reach = _reach(target, host)
    backend = RUNNER_BACKENDS.get(reach.runner)
    if backend is not None:  # a phone without Python: its deploy folder through shell scripts
        return backend.releases(reach, accept_new_host_key=accept_new_host_key)
    with open_transport(reach, accept_new_host_key=accept_new_host_key) as t:
        t.ensure_workdir()
        t.upload(agent_path(), AGENT_NAME)
        listing = Board(reach, t).listing()
    cur, prev = listing["current"], listing["previous"]
    return ReleaseList(
        target=reach.name,
        deploy_dir=listing["deploy_dir"],
        current=cur,
        previous=prev,
        releases=[_info(r, cur, prev) for r in listing["releases"]],
        lock=listing["lock"],
    )


def why_not_current(target, *, release: str, sha256: str, host: str | None = None,
                    accept_new_host_key: bool = False) -> str | None:
    """Why ``target`` does not run ``release`` as current with a model of this sha256; None when it does.

    What a resumed deploy asks before it reuses its ship stage: the release is
    on the board, ``current`` points at it, and its model hashes (on the board)
    to ``sha256``. A phone without Python is asked for its listing; the sha256
    there is its release's manifest's. Example::

        why_not_current("lab-pi", release="20261128-101502-3f2a9c1d", sha256=sha)
        # 'lab-pi has no current release' or None
    """
    reach = _reach(target, host)
    name = reach.name
    backend = RUNNER_BACKENDS.get(reach.runner)
    if backend is not None:
        listing = backend.releases(reach, accept_new_host_key=accept_new_host_key)
        cur, ids = listing.current, [r.id for r in listing.releases]
        got = next((r.sha256 for r in listing.releases if r.id == release), None)
    else:
        with open_transport(reach, accept_new_host_key=accept_new_host_key) as t:
            t.ensure_workdir()
            t.upload(agent_path(), AGENT_NAME)
            raw = Board(reach, t).listing()
            cur, ids = raw["current"], [r["id"] for r in raw["releases"]]
            entry = next((r for r in raw["releases"] if r["id"] == release), None)
            art = ((entry or {}).get("manifest") or {}).get("artifact")
            file = art.get("file") if isinstance(art, dict) else None
            digest = (t.remote_digest(f"{raw['deploy_dir']}/releases/{release}/{file}")
                      if entry and file in MODEL_FILE.values() else None)
            got = digest[1] if digest else None
    if release not in ids:
        return f"{name} has no release {release} any more (releases: {', '.join(ids[-5:]) or 'none'})"
    if cur != release:
        return f"{name}'s current release is {cur}, not {release}" if cur else f"{name} has no current release"
    if got != sha256:
        return (f"{name}'s release {release} has a model with sha256 {got[:16]}, not {sha256[:16]}" if got
                else f"{name}'s release {release} has no model file")
    return None


def _stored_check(name: str, rid: str, manifest: dict[str, Any] | None) -> tuple[str, str, str]:
    """(model file, sha256, precision) from a release's manifest, validated."""
    art = (manifest or {}).get("artifact")
    art = art if isinstance(art, dict) else {}
    file, sha, precision = art.get("file"), art.get("sha256"), art.get("precision")
    if file not in MODEL_FILE.values() or not isinstance(sha, str) or not _SHA.match(sha):
        raise ShipError(
            f"{name}: release {rid} has no valid manifest.json (model file and sha256); "
            "it cannot be checked, so it is not switched to"
        )
    if precision not in TOLERANCES:
        raise ShipError(f"{name}: release {rid}'s manifest names precision {str(precision)[:20]!r}")
    return file, sha, precision


def rollback(
    target,
    *,
    to: str | None = None,
    host: str | None = None,
    lock_wait_s: float = 0.0,
    lock_stale_s: float = STALE_S,
    timeout_s: float = 600.0,
    accept_new_host_key: bool = False,
    on_step: StepHook | None = None,
) -> RollbackResult:
    """Switch ``target`` back to ``to`` (default: the previous release), after the checks above."""
    check_option("wait", lock_wait_s, option="--wait")
    start = time.monotonic()
    reach = _reach(target, host)
    backend = RUNNER_BACKENDS.get(reach.runner)
    if backend is not None:  # a phone without Python: checked with benchmark_model
        return backend.rollback(reach, to=to, lock_wait_s=lock_wait_s, lock_stale_s=lock_stale_s,
                              timeout_s=timeout_s, accept_new_host_key=accept_new_host_key, on_step=on_step)
    name = reach.name
    if to is not None:
        check_release_id(to, target=name)
    step = _stepper(name, on_step)
    with tempfile.TemporaryDirectory(prefix="edgeprune-rollback-") as tmpd, open_transport(
        reach, accept_new_host_key=accept_new_host_key
    ) as t:
        tmp = Path(tmpd)
        step("connect", "connecting")
        board = Board(reach, t)
        board.prepare()
        lock = BoardLock(board, what=f"rollback to {to or 'previous'}", stale_s=lock_stale_s, wait_s=lock_wait_s)
        step("lock", "taking the deploy lock")
        notes = lock.acquire()
        scratch = cur = None
        try:
            listing = board.listing()
            cur = listing["current"]
            ids = [r["id"] for r in listing["releases"]]
            rid = to or listing["previous"]
            if rid is None:
                raise ShipError(
                    f"{name}: no previous release to roll back to (current: {cur or 'none'}; "
                    f"releases: {', '.join(ids) or 'none'}); name one with --to ID"
                )
            if rid not in ids:
                raise ShipError(
                    f"{name}: no release {rid} on the board (releases: {', '.join(ids) or 'none'})"
                )
            if rid == cur:
                return RollbackResult(name, rid, cur, False, None,
                                      [*notes, f"{name}: {rid} is already current"], time.monotonic() - start)
            entry = next(r for r in listing["releases"] if r["id"] == rid)
            file, sha, precision = _stored_check(name, rid, entry["manifest"])
            model = board.path("releases", rid, file)
            step("sha256", f"checking {rid}'s sha256 on the board")
            got = t.remote_digest(model)
            if got is None or got[1] != sha:
                raise ShipError(
                    f"{name}: release {rid} is damaged: its model's sha256 on the board "
                    f"({got[1][:16] if got else 'missing'}) differs from its manifest's ({sha[:16]})"
                )
            step("verify", f"running {rid}'s stored check inputs on the board")
            expected = load_outputs(
                t.download(CHECK_OUTPUTS, tmp / CHECK_OUTPUTS, max_bytes=MAX_EXPECTED_BYTES,
                           folder=board.path("releases", rid)),
                max_bytes=MAX_EXPECTED_BYTES,
            )
            scratch_id = f"rollback-{lock.token[:8]}"
            scratch = board.release("stage", "--token", lock.token, "--id", scratch_id)["staging"]
            if scratch != board.path("staging", scratch_id):
                raise ShipError(f"{name}: the agent staged at an unexpected path")
            runtime = choose_runtime(reach.profile, Path(file))
            check = verify_on_board(
                board, model=model, inputs=board.path("releases", rid, CHECK_INPUTS),
                scratch=scratch, reference=[np.asarray(e) for e in expected], precision=precision,
                runtime=runtime, sha256=sha, local_tmp=tmp, timeout_s=timeout_s,
            )
            step("switch", f"switching current to {rid}")
            try:
                doc = board.release("switch", "--token", lock.token, "--id", rid)
            except TransportError as exc:
                err = ShipError(
                    f"{name}: the link was lost while switching to {rid} ({exc}); current is either "
                    f"{cur} or {rid}: see `edgeprune releases --target {name}`"
                )
                err.final = True
                raise err from None
            if doc.get("current") != rid:
                raise ShipError(f"{name}: the board answered current={str(doc.get('current'))[:100]!r}")
        except EdgePruneError as exc:
            if getattr(exc, "final", False):
                raise
            raise _unchanged_error(exc, name, cur) from exc
        finally:
            if scratch:
                _quietly(board.release, "discard", "--token", lock.token, "--id", scratch.rsplit("/", 1)[1])
            lock.release()
        step("done", f"rolled back to {rid}")
    return RollbackResult(name, rid, cur, True, check, notes, time.monotonic() - start)
