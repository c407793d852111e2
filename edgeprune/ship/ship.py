"""Ship one artifact to one board, or to many (bounded, canary first); the board never loses a working model.

The steps, in order, each reported to ``on_step(target, step)``:

1. ``connect``: agent uploaded (when it differs), deploy folder created;
2. ``lock``: the board's deploy lock (:mod:`edgeprune.ship.lock`), a stale one cleared;
3. ``stage``: ``staging/<id>/`` made; leftovers of dead deploys removed;
4. ``upload``: the artifact as ``model.onnx``/``model.tflite`` (temporary name,
   size and sha256 checked, renamed), the check inputs and expected outputs;
5. ``sha256``: the board's copy hashed again on the board;
6. ``verify``: the agent loads it with the board's runtime and runs the
   held-out inputs; the outputs (untrusted) are compared per tensor with the
   host's reference for the same artifact (:mod:`edgeprune.ship.check`);
7. ``manifest``: ``manifest.json`` written into the release;
8. ``switch``: only while this deploy still holds the lock (the agent checks
   its token), ``staging/<id>`` flushed to disk and renamed to ``releases/<id>``,
   then ``current`` swapped to it with rename(2) and ``previous`` to the old one;
9. ``gc``: all but the newest ``keep`` releases removed (never current or previous);
10. ``done``: the lock released.

A failure before ``switch`` (a cut link, a full disk, a kill, a mismatch)
leaves ``current`` as it was and raises one line saying so; staging leftovers
and a dead deploy's lock are cleared by the next deploy. Release ids are
``YYYYMMDD-HHMMSS-<sha256[:8]>`` (UTC of the host). Their order is not the
ids': ``activate`` records each release's sequence number on the board
(``release.seq``), and listing and gc go by it (two ships in one second
would otherwise sort by their hash part).

Example::

    result = ship_artifact(
        "out/model.int8.tflite", target="lab-pi",
        manifest={"source_model_sha256": "...", "precision": "int8", "latency_ms": {"p50": 4.1}},
        verify_inputs=x_heldout,            # what the model takes, e.g. int8 NHWC
    )
    result.release, result.previous, result.check["outputs"][0]["max_abs"]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import __version__
from edgeprune._paths import sha256_file
from edgeprune._threads import DEFAULT_PARALLEL, NotStarted, fan_out
from edgeprune.bench.runner import choose_runtime
from edgeprune.boards.reach import resolve_target
from edgeprune.errors import (
    AgentError,
    EdgePruneError,
    ModelError,
    ShipCheckError,
    ShipError,
    TransportError,
)
from edgeprune.progress import step as progress
from edgeprune.ship.board import Board
from edgeprune.ship.check import (
    compare_outputs,
    decode_board_outputs,
    host_outputs,
    save_outputs,
    tolerance,
)
from edgeprune.ship.lock import STALE_S, BoardLock
from edgeprune.transport import open_transport
from edgeprune.validate import check as check_option

DEFAULT_KEEP = 3
INLINE_MAX_BYTES = 1 << 20
MAX_CHECK_BYTES = 64 * 2**20
MAX_EXPECTED_BYTES = 256 * 2**20
MODEL_FILE = {".onnx": "model.onnx", ".tflite": "model.tflite"}
CHECK_INPUTS, CHECK_OUTPUTS, BOARD_OUTPUTS = "check_inputs.npy", "check_outputs.npz", "board_outputs.npz"
BOARD_FACTS = ("id", "hostname", "machine", "os", "model", "cpu_model", "cores", "python")

StepHook = Callable[[str, str], None]


@dataclass
class ShipResult:
    """What was shipped where, and the on-board check's figures (JSON-serialisable)."""

    target: str
    release: str
    deploy_dir: str
    release_dir: str
    model_path: str  # on the board; the app loads DEPLOY/current/model.* instead
    sha256: str
    size_bytes: int
    previous: str | None
    check: dict[str, Any]
    board: dict[str, Any]
    manifest: dict[str, Any]
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.check.get("statement"):  # a phone without a runner: what it checked, in its own words
            return (f"{self.target}: shipped {self.release} ({self.size_bytes / 2**20:.2f} MiB, sha256 "
                    f"{self.sha256[:12]}), {self.check['statement']}; previous: {self.previous or 'none'}")
        worst = max((o.get("max_abs") or 0.0 for o in self.check.get("outputs", [])), default=0.0)
        return (
            f"{self.target}: shipped {self.release} ({self.size_bytes / 2**20:.2f} MiB, sha256 "
            f"{self.sha256[:12]}), on-board check passed ({self.check.get('samples')} samples, "
            f"max abs error {worst:.3g}); previous: {self.previous or 'none'}"
        )


# Boards reached without the agent, by the reach's ``runner``: each entry has ``ship``, ``releases`` and
# ``rollback``. edgeprune.ship.phone registers the phones' (importing edgeprune.ship imports it).
RUNNER_BACKENDS: dict[str, Any] = {}


def new_release_id(sha256: str, *, now: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + sha256[:8]


def _reach(target, host: str | None):
    if isinstance(target, str):
        return resolve_target(target, host=host)
    return target


def _stepper(name: str, on_step: StepHook | None) -> Callable[[str, str], None]:
    def step(what: str, say: str) -> None:
        progress(f"{name}: {say}")
        if on_step is not None:
            on_step(name, what)

    return step


def _unchanged(name: str, current: str | None) -> str:
    return f"nothing was switched: {name}'s current release is still {current}" if current else (
        f"nothing was switched: {name} has no current release yet"
    )


def verify_on_board(
    board: Board,
    *,
    model: str,
    inputs: str,
    scratch: str,
    reference: list[np.ndarray],
    precision: str,
    runtime: str,
    sha256: str,
    local_tmp: Path,
    timeout_s: float,
    inline_max_bytes: int = INLINE_MAX_BYTES,
) -> dict[str, Any]:
    """Run ``model`` on the board's ``inputs`` via the agent and compare with ``reference``.

    Returns the comparison report (plus ``runtime`` and ``board`` facts); raises
    :class:`ShipCheckError` (without the "nothing was switched" tail) when it fails.
    """
    doc = board.agent(
        "run", model, "--inputs", inputs, "--runtime", runtime,
        "--out", f"{scratch}/{BOARD_OUTPUTS}", "--inline-max-bytes", str(inline_max_bytes),
        timeout=timeout_s,
    )
    where = f"agent on {board.name}"
    loaded = (doc.get("model") or {}).get("sha256") if isinstance(doc.get("model"), dict) else None
    if loaded != sha256:
        raise ShipCheckError(
            f"{board.name}: the board loaded a model with sha256 {str(loaded)[:16]}, not the "
            f"shipped {sha256[:16]}"
        )
    file = None
    if doc.get("outputs_file") is not None:
        cap = 2 * sum(r.nbytes for r in reference) + 2**20
        file = board.t.download(
            BOARD_OUTPUTS, local_tmp / BOARD_OUTPUTS, max_bytes=cap, folder=scratch
        )
    outs, names = decode_board_outputs(doc, reference=reference, where=where, file=file)
    report = compare_outputs(reference, outs, precision=precision)
    for row, n in zip(report["outputs"], names, strict=False):
        row["name"] = n
    rt = doc.get("runtime") if isinstance(doc.get("runtime"), dict) else {}
    report["runtime"] = {"name": str(rt.get("name"))[:40], "version": str(rt.get("version"))[:100]}
    facts = doc.get("board") if isinstance(doc.get("board"), dict) else {}
    report["board"] = {
        k: facts.get(k) for k in BOARD_FACTS if isinstance(facts.get(k), str | int | float | type(None))
    }
    if not report["passed"]:
        raise ShipCheckError(
            f"{board.name}: on-board check failed: the artifact's outputs on the board do not "
            f"match the host's ({report['reason']})"
        )
    return report


def ship_artifact(
    artifact_path: str | os.PathLike[str],
    *,
    target,
    host: str | None = None,
    manifest: dict[str, Any] | None = None,
    verify_inputs: np.ndarray,
    reference_outputs: list[np.ndarray] | None = None,
    precision: str | None = None,
    keep: int = DEFAULT_KEEP,
    lock_wait_s: float = 0.0,
    lock_stale_s: float = STALE_S,
    inline_max_bytes: int = INLINE_MAX_BYTES,
    timeout_s: float = 600.0,
    accept_new_host_key: bool = False,
    on_step: StepHook | None = None,
) -> ShipResult:
    """Ship ``artifact_path`` to ``target`` (a name or a ``Reach``); see the module docstring.

    ``verify_inputs``: held-out inputs as the model takes them (first axis:
    samples). ``reference_outputs``: the host's outputs of the same artifact on
    them; computed here with ONNX Runtime/LiteRT when None. ``precision`` (which
    tolerance): ``precision=``, else the manifest's, else what export stamped
    into the file, else fp32. ``manifest``: what
    the caller knows (source_model_sha256, plan, profile, precision, latency_ms,
    accuracy, forced, ...); ship adds release, time, artifact, check, previous.
    """
    check_option("keep", keep)
    check_option("wait", lock_wait_s, option="lock_wait_s")
    start = time.monotonic()
    reach = _reach(target, host)
    backend = RUNNER_BACKENDS.get(reach.runner)
    if backend is not None:  # a phone without Python: benchmark_model loads and runs it; no outputs come back
        return backend.ship(artifact_path, reach=reach, manifest=manifest, precision=precision, keep=keep,
                             lock_wait_s=lock_wait_s, lock_stale_s=lock_stale_s, timeout_s=timeout_s,
                             accept_new_host_key=accept_new_host_key, on_step=on_step)
    name = reach.name
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise ModelError(f"{artifact}: artifact not found")
    ext = artifact.suffix.lower()
    if ext not in MODEL_FILE:
        raise ShipError(f"{artifact}: ships .onnx or .tflite files, got '{ext or 'no extension'}'")
    if keep < 1:
        raise ShipError(f"keep={keep}: keep at least 1 release")

    runtime = choose_runtime(reach.profile, artifact)
    info = dict(manifest or {})
    precision = precision or info.get("precision") or _stamped_precision(artifact) or "fp32"
    tolerance(precision)
    x = np.asarray(verify_inputs)
    if x.ndim == 0 or len(x) == 0 or x.nbytes > MAX_CHECK_BYTES or x.dtype == object:
        raise ShipError(
            f"verify_inputs: give 1 or more samples (first axis), numeric, at most "
            f"{MAX_CHECK_BYTES // 2**20} MiB; got shape {x.shape}, dtype {x.dtype}"
        )
    ref = (
        host_outputs(artifact, x, runtime=runtime)
        if reference_outputs is None
        else [np.asarray(r) for r in reference_outputs]
    )
    if not ref or any(r.dtype == object for r in ref):
        raise ShipError("reference_outputs: give one numeric array per model output")
    try:
        json.dumps(info, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ShipError(f"manifest: not JSON-serialisable ({exc})") from None
    sha, size = sha256_file(artifact), artifact.stat().st_size
    model_file = MODEL_FILE[ext]
    step = _stepper(name, on_step)

    with tempfile.TemporaryDirectory(prefix="edgeprune-ship-") as tmpd:
        tmp = Path(tmpd)
        np.save(tmp / CHECK_INPUTS, x, allow_pickle=False)
        save_outputs(tmp / CHECK_OUTPUTS, ref)
        with open_transport(reach, accept_new_host_key=accept_new_host_key) as t:
            step("connect", "connecting, agent and deploy folder")
            board = Board(reach, t)
            current = board.prepare().get("current")
            lock = BoardLock(board, what=f"ship {artifact.name}", stale_s=lock_stale_s, wait_s=lock_wait_s)
            step("lock", "taking the deploy lock")
            notes = lock.acquire()
            rid = staged = None
            switched = False
            try:
                step("stage", "staging")
                rid, doc = _stage(board, lock.token, new_release_id(sha))
                staged, current = doc["staging"], doc.get("current")
                step("upload", f"uploading {artifact.name} ({size / 2**20:.1f} MiB)")
                t.upload(artifact, model_file, folder=staged)
                t.upload(tmp / CHECK_INPUTS, CHECK_INPUTS, folder=staged)
                t.upload(tmp / CHECK_OUTPUTS, CHECK_OUTPUTS, folder=staged)
                step("sha256", "checking sha256 on the board")
                got = t.remote_digest(f"{staged}/{model_file}")
                if got != (size, sha):
                    raise ShipError(f"{name}: the board's copy has size/sha256 {got}, sent {size}/{sha[:16]}")
                step("verify", f"running {len(x)} held-out inputs on the board ({runtime})")
                check = verify_on_board(
                    board, model=f"{staged}/{model_file}", inputs=f"{staged}/{CHECK_INPUTS}",
                    scratch=staged, reference=ref, precision=precision, runtime=runtime,
                    sha256=sha, local_tmp=tmp, timeout_s=timeout_s, inline_max_bytes=inline_max_bytes,
                )
                step("manifest", "writing the manifest")
                full = _manifest(info, reach=reach, rid=rid, artifact=artifact, model_file=model_file,
                                 sha=sha, size=size, precision=precision, runtime=runtime,
                                 check=check, previous=current)
                (tmp / "manifest.json").write_text(json.dumps(full, indent=2, allow_nan=False))
                t.upload(tmp / "manifest.json", "manifest.json", folder=staged)
                step("switch", f"switching current to {rid}")
                doc = switch_current(board, lock.token, rid, name=name, current=current)
                switched = True
                previous = doc.get("previous") if isinstance(doc.get("previous"), str) else None
                step("gc", f"keeping the newest {keep} releases")
                removed = _gc(board, lock.token, keep, notes)
            except BaseException as exc:
                if staged and not switched:
                    _quietly(board.release, "discard", "--token", lock.token, "--id", rid)
                if isinstance(exc, EdgePruneError) and not switched and not getattr(exc, "final", False):
                    raise _unchanged_error(exc, name, current) from exc
                raise
            finally:
                lock.release()
            step("done", f"shipped {rid}")
    return ShipResult(
        target=name, release=rid, deploy_dir=board.root, release_dir=board.path("releases", rid),
        model_path=board.path("releases", rid, model_file), sha256=sha, size_bytes=size,
        previous=previous, check=check, board=check.get("board", {}), manifest=full,
        removed=removed, notes=notes, seconds=time.monotonic() - start,
    )


def _stamped_precision(artifact: Path) -> str | None:
    """The precision export stamped into the file (edgeprune.export.artifact), if any."""
    try:
        from edgeprune.export.artifact import read_metadata

        value = read_metadata(artifact).get("precision")
    except Exception:  # noqa: BLE001 - no metadata, or its reader's package is missing
        return None
    return value if isinstance(value, str) else None


def _stage(board: Board, token: str, rid: str) -> tuple[str, dict[str, Any]]:
    """Make ``staging/<id>``; an id taken in the same second gets a suffix."""
    for n in range(1, 50):
        candidate = rid if n == 1 else f"{rid}-{n}"
        try:
            doc = board.release("stage", "--token", token, "--id", candidate)
        except AgentError as exc:
            if getattr(exc, "kind", None) == "bad_release" and "already exists" in str(exc):
                continue
            raise
        if doc.get("staging") != board.path("staging", candidate):
            raise AgentError(f"agent on {board.name}: staged at an unexpected path")
        return candidate, doc
    raise ShipError(f"{board.name}: no free release id for {rid}")


def switch_current(board, token: str, rid: str, *, name: str, current: str | None) -> dict:
    """The atomic switch: ``current`` -> release ``rid`` on ``board`` (an SSH board or a phone's folder, both
    answering ``release activate``); the agent's answer. A link lost here says what the board may now run."""
    try:
        doc = board.release("activate", "--token", token, "--id", rid)
    except TransportError as exc:
        err = ShipError(f"{name}: the link was lost while switching to {rid} ({exc}); current is "
                        f"either {current or 'none'} or {rid}: see `edgeprune releases --target {name}`")
        err.final = True  # says itself what the board runs
        raise err from None
    if doc.get("current") != rid:
        raise AgentError(f"agent on {name}: activate answered current={doc.get('current')!r}")
    return doc


def _gc(board: Board, token: str, keep: int, notes: list[str]) -> list[str]:
    try:
        doc = board.release("gc", "--token", token, "--keep", str(keep))
    except EdgePruneError as exc:  # shipped already: a leftover release is not a failure
        notes.append(f"{board.name}: old releases were not removed ({exc})")
        return []
    removed = doc.get("removed") if isinstance(doc.get("removed"), list) else []
    return [str(r)[:120] for r in removed[:1000]]


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - cleanup after a failure: the next deploy clears leftovers
        pass


def _unchanged_error(exc: EdgePruneError, name: str, current: str | None) -> ShipError:
    """``exc`` as one line ending with what the board still runs (a check failure keeps its class)."""
    cls = ShipCheckError if isinstance(exc, ShipCheckError) else ShipError
    msg = str(exc) if str(exc).startswith(name) else f"{name}: {exc}"
    err = cls(f"{msg}; {_unchanged(name, current)}")
    err.cause = exc
    return err


def _manifest(info: dict[str, Any], *, reach, rid: str, artifact: Path, model_file: str, sha: str,
              size: int, precision: str, runtime: str, check: dict[str, Any],
              previous: str | None) -> dict[str, Any]:
    full = dict(info)
    full.update(
        release=rid,
        target=reach.name,
        profile=info.get("profile", reach.profile.name),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        edgeprune_version=__version__,
        format=artifact.suffix.lower().lstrip("."),
        precision=precision,
        artifact={"file": model_file, "name": artifact.name, "sha256": sha, "size_bytes": size,
                  "format": artifact.suffix.lower().lstrip("."), "precision": precision,
                  "runtime": runtime},
        check={**check, "inputs": CHECK_INPUTS, "expected_outputs": CHECK_OUTPUTS},
        previous=previous,
    )
    return full


def ship_many(
    artifact_path: str | os.PathLike[str],
    *,
    targets: list,
    verify_inputs: np.ndarray,
    reference_outputs: list[np.ndarray] | None = None,
    parallel: int = DEFAULT_PARALLEL,
    canary: int = 0,
    **options: Any,
) -> list[ShipResult | EdgePruneError | NotStarted]:
    """:func:`ship_artifact` to every target, at most ``parallel`` at once; each item is a result or
    that board's error.

    One board's failure never stops the others. ``canary=K``: the first K
    boards are shipped and checked on the board first; if one fails, the
    rest are never touched (each a ``NotStarted``: "not started: canary
    failed"). The host's reference is computed once. Example::

        outcomes = ship_many("m.onnx", targets=["pi-a", "pi-b", "pi-c"], verify_inputs=x, canary=1)
        print("\\n".join(summary_lines(["pi-a", "pi-b", "pi-c"], outcomes)))
    """
    if reference_outputs is None:
        reference_outputs = host_outputs(artifact_path, np.asarray(verify_inputs))

    def one(target) -> ShipResult | EdgePruneError:
        try:
            return ship_artifact(
                artifact_path, target=target, verify_inputs=verify_inputs,
                reference_outputs=reference_outputs, **options,
            )
        except EdgePruneError as exc:
            return exc

    return fan_out(targets, one, parallel=parallel, canary=canary, name="edgeprune-ship")


def summary_lines(targets: list, outcomes: list[ShipResult | EdgePruneError | NotStarted]) -> list[str]:
    """One line per board: what it runs now, why it was not changed, or that it was never started."""
    lines = []
    for target, o in zip(targets, outcomes, strict=True):
        label = target if isinstance(target, str) else target.name
        if isinstance(o, ShipResult):
            lines.append(f"ok      {o.summary()}")
        elif isinstance(o, NotStarted):
            lines.append(f"SKIPPED {label}: {o}")
        else:
            text = str(o)
            lines.append(f"FAILED  {text if text.startswith(label) else f'{label}: {text}'}")
    return lines
