"""Measure many models in one visit to a board (agent protocol 2, ``batch``).

A latency table needs dozens to hundreds of small models. One SSH session,
one agent start and one runtime import per model would cost more than the
measurements (about 0.6 s per tiny model on ``--target local``), so:

1. :func:`pack_batch` puts the models and a ``manifest.json`` (plain archive
   names, sha256 of each) into one tar.gz, with an empty *baseline* model in
   the same format: its p50 is the runtime's fixed cost per call, which a
   latency table subtracts from every entry;
2. :class:`BatchSession` keeps one transport session open, uploads the agent
   and the archive with the transport's atomic, checked upload, and runs
   ``agent.py batch`` once per archive (the agent deletes the archive after
   extracting it);
3. :func:`parse_batch_output` reads the reply as untrusted input: size-capped
   JSON, protocol 2, every field typed and ranged, every model named in the
   reply one we sent, none missing, none twice.

Settings: ``rounds`` interleaved rounds (every model once per round, the
order rotating) of ``runs`` timed runs each, after ``warmup`` untimed runs;
no new round starts after ``max_s`` seconds; ``timeout_s`` is the hard limit
(the agent's ``--deadline-s``, and the host's read timeout).

Example::

    with BatchSession(resolve_target("local"), settings=BatchSettings(rounds=5)) as board:
        result = board.measure({"a": Path("a.onnx"), "b": Path("b.onnx")})
    result.timings["a"].p50_ms, result.baseline.p50_ms, result.board["id"]
"""

from __future__ import annotations

import importlib
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_write_bytes, cache_dir, sha256_file
from edgeprune.bench.result import _MAX_MS, _num, _obj, _str, decode_agent_output
from edgeprune.bench.runner import AGENT_NAME, agent_failure, agent_path, choose_runtime
from edgeprune.errors import AgentError, ModelError, require
from edgeprune.progress import step
from edgeprune.transport import open_transport

# Lazy imports: the imports inside functions below load onnx, which importing this module does not;
# they load only when a function that needs them runs.

MANIFEST = "manifest.json"
BATCH_FORMAT = "edgeprune.batch"
MAX_MODELS = 2000  # the agent refuses more than 4096 members; keep well under
_SUFFIXES = (".onnx", ".tflite")


@dataclass(frozen=True)
class BatchSettings:
    rounds: int = 10
    runs: int = 5
    warmup: int = 5
    threads: int = 0  # 0 = the runtime's default
    max_s: float = 120.0
    timeout_s: float = 600.0

    def argv(self, runtime: str) -> list[str]:
        """The agent's ``batch`` options for these settings (after the archive name)."""
        return [
            "--runtime", runtime,
            "--threads", str(self.threads),
            "--rounds", str(self.rounds),
            "--runs", str(self.runs),
            "--warmup", str(self.warmup),
            "--max-s", str(self.max_s),
            "--deadline-s", str(int(self.timeout_s) + 5),
        ]


@dataclass
class BatchTiming:
    """One model's timing in a batch: p50/min/p10/p90 in ms over ``n`` runs, or its ``error``."""

    name: str
    ok: bool
    p50_ms: float = 0.0
    min_ms: float = 0.0
    p10_ms: float = 0.0
    p90_ms: float = 0.0
    spread: float = 0.0  # (p90 - p10) / p50
    n: int = 0
    load_ms: float | None = None
    error: str | None = None
    rounds_ms: list[float] = field(default_factory=list)  # per interleaved round, its median (newer agents)
    rounds_mean_ms: list[float] = field(default_factory=list)  # per round, the mean of its runs (newer agents)


@dataclass
class BatchResult:
    target: str
    runtime: str
    runtime_version: str
    board: dict[str, Any]
    timings: dict[str, BatchTiming]
    baseline: BatchTiming | None
    rounds_done: int
    complete: bool
    throttled: bool | None
    throttle_reasons: list[str]
    other_busy_cores: float | None
    measure_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    host: str | None = None
    host_key: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- packing --------------------------------------------------------------------


def baseline_model(suffix: str, folder: Path) -> Path:
    """An (almost) empty model in the format of ``suffix``: one Relu on one number.

    Its p50 is what the runtime costs per call whatever the model does
    (session/interpreter call, input and output handling).
    """
    if suffix == ".onnx":
        onnx = require("onnx", "onnx", "building the baseline model")
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])],
            "edgeprune_baseline",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = folder / "baseline.onnx"
        onnx.save(model, str(path))
        return path
    if suffix == ".tflite":
        cached = cache_dir() / "latency" / "baseline-v1.tflite"
        if not cached.is_file():
            atomic_write_bytes(cached, _tflite_baseline_bytes())
        return cached
    raise ModelError(f"no baseline model for '{suffix}' files (known: {', '.join(_SUFFIXES)})")


def _tflite_baseline_bytes() -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = require("tensorflow", "tflite", "building the TFLite baseline model")

    @tf.function(input_signature=[tf.TensorSpec([1, 1], tf.float32)])
    def relu(x):
        return tf.nn.relu(x)

    return tf.lite.TFLiteConverter.from_concrete_functions([relu.get_concrete_function()]).convert()


def pack_batch(
    models: Mapping[str, Path], dest: Path, *, baseline: Path | None = None
) -> tuple[Path, dict[str, str]]:
    """Write the archive ``dest`` (tar.gz) for ``models`` ({key: file}); returns it and {archive name: key}.

    Archive names are ``m0000.onnx``, ... whatever the keys and file names
    are, so nothing the user named reaches the board's shell or file system.
    """
    if not models:
        raise ModelError("a batch needs at least one model")
    if len(models) > MAX_MODELS:
        raise ModelError(f"a batch holds at most {MAX_MODELS} models, got {len(models)}: split it")
    suffixes = {Path(p).suffix.lower() for p in models.values()}
    if len(suffixes) != 1 or not suffixes <= set(_SUFFIXES):
        raise ModelError(
            f"a batch takes models of one format (.onnx or .tflite), got {', '.join(sorted(suffixes))}"
        )
    suffix = suffixes.pop()
    dest = Path(dest)
    names: dict[str, str] = {}
    entries = []
    for i, (key, path) in enumerate(models.items()):
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        name = f"m{i:04d}{suffix}"
        names[name] = key
        entries.append((name, path, sha256_file(path)))
    with tempfile.TemporaryDirectory(prefix="edgeprune-batch-") as tmp:
        base = Path(baseline) if baseline is not None else baseline_model(suffix, Path(tmp))
        base_name = f"baseline{suffix}"
        manifest = {
            "format": BATCH_FORMAT,
            "version": 1,
            "models": [{"name": n, "sha256": d} for n, _, d in entries],
            "baseline": base_name,
        }
        man = Path(tmp) / MANIFEST
        man.write_text(json.dumps(manifest))
        part = dest.with_name(f".{dest.name}.part")
        with tarfile.open(part, "w:gz", compresslevel=1) as tar:
            tar.add(man, arcname=MANIFEST, recursive=False)
            tar.add(base, arcname=base_name, recursive=False)
            for name, path, _ in entries:
                tar.add(path, arcname=name, recursive=False)
        part.replace(dest)
    return dest, names


# -- reading the reply ----------------------------------------------------------


def _timing(row: Any, where: str, *, name: str) -> BatchTiming:
    if row.get("ok") is not True:
        return BatchTiming(
            name=name, ok=False, error=_str(row.get("error") or "failed", f"{where}.error", max_len=600)
        )
    n = row.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10**8:
        raise AgentError(f"{where}.n must be a positive integer")
    vals = {k: _num(row.get(k), f"{where}.{k}", hi=_MAX_MS) for k in ("p50_ms", "min_ms", "p10_ms", "p90_ms")}
    if not vals["min_ms"] <= vals["p10_ms"] <= vals["p50_ms"] <= vals["p90_ms"] + 1e-9:
        raise AgentError(f"{where}: min_ms <= p10_ms <= p50_ms <= p90_ms does not hold: {vals}")
    per_round, means = row.get("rounds_ms") or [], row.get("rounds_mean_ms") or []
    for key, got in (("rounds_ms", per_round), ("rounds_mean_ms", means)):
        if not isinstance(got, list) or len(got) > 10**5:
            raise AgentError(f"{where}.{key} must be a list of numbers")
    if means and len(means) != len(per_round):
        raise AgentError(f"{where}: rounds_mean_ms and rounds_ms differ in length")
    return BatchTiming(
        name=name,
        ok=True,
        n=n,
        rounds_ms=[_num(v, f"{where}.rounds_ms[{i}]", hi=_MAX_MS) for i, v in enumerate(per_round)],
        rounds_mean_ms=[_num(v, f"{where}.rounds_mean_ms[{i}]", hi=_MAX_MS) for i, v in enumerate(means)],
        spread=_num(row.get("spread"), f"{where}.spread", hi=1e6),
        load_ms=_num(row.get("load_ms"), f"{where}.load_ms", hi=_MAX_MS, allow_none=True),
        **vals,
    )


def parse_batch_output(
    stdout: bytes, *, target: str, expected: Mapping[str, str], host: str | None = None
) -> BatchResult:
    """A :class:`BatchResult` (timings keyed by the caller's keys) from the agent's ``batch`` reply.

    ``expected`` maps archive names to keys (what :func:`pack_batch` returned).
    """
    doc = decode_agent_output(stdout, target=target, protocols=(2,))
    where = f"agent on {target}"
    if doc.get("command") != "batch":
        raise AgentError(f"{where}: expected the reply to a batch, got {str(doc.get('command'))[:20]!r}")
    rows = doc.get("results")
    if not isinstance(rows, list):
        raise AgentError(f"{where}: 'results' must be a list")
    if len(rows) > len(expected):
        raise AgentError(f"{where}: {len(rows)} results for {len(expected)} models")
    timings: dict[str, BatchTiming] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise AgentError(f"{where}: results[{i}] must be an object")
        name = row.get("name")
        if not isinstance(name, str) or name not in expected:
            raise AgentError(f"{where}: results[{i}] names an unknown model {str(name)[:60]!r}")
        key = expected[name]
        if key in timings:
            raise AgentError(f"{where}: results name {name} twice")
        timings[key] = _timing(row, f"{where}: results[{i}]", name=name)
    missing = [expected[n] for n in expected if expected[n] not in timings]
    if missing:
        raise AgentError(f"{where}: no result for {len(missing)} model(s), e.g. {missing[0]}")
    base = doc.get("baseline")
    baseline = None
    if base is not None:
        if not isinstance(base, dict):
            raise AgentError(f"{where}: 'baseline' must be an object or null")
        baseline = _timing({**base, "ok": True}, f"{where}: baseline", name="baseline")
    b = _obj(doc, "batch", where)
    rounds = b.get("rounds_done")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not 0 <= rounds <= 10**6:
        raise AgentError(f"{where}: batch.rounds_done must be a non-negative integer")
    complete = b.get("complete")
    if not isinstance(complete, bool):
        raise AgentError(f"{where}: batch.complete must be true or false")
    rt = _obj(doc, "runtime", where)
    board = _obj(doc, "board", where)
    _str(board.get("id"), f"{where}: board.id", max_len=64)
    thr = _obj(doc, "throttle", where)
    throttled = thr.get("throttled")
    if throttled not in (True, False, None):
        raise AgentError(f"{where}: throttle.throttled must be true, false or null")
    reasons = thr.get("reasons") or []
    if not isinstance(reasons, list):
        raise AgentError(f"{where}: throttle.reasons must be a list")
    load = doc.get("load") if isinstance(doc.get("load"), dict) else {}
    return BatchResult(
        target=target,
        runtime=_str(rt.get("name"), f"{where}: runtime.name", max_len=40),
        runtime_version=_str(rt.get("version"), f"{where}: runtime.version", max_len=100),
        board=board,
        timings=timings,
        baseline=baseline,
        rounds_done=rounds,
        complete=complete,
        throttled=throttled,
        throttle_reasons=[str(r)[:300] for r in reasons[:20]],
        other_busy_cores=_num(
            load.get("other_busy_cores"), f"{where}: load.other_busy_cores", hi=4096, allow_none=True
        ),
        measure_s=_num(b.get("measure_s", 0.0), f"{where}: batch.measure_s", hi=1e7),
        settings=doc.get("settings") if isinstance(doc.get("settings"), dict) else {},
        host=host,
    )


# -- one transport session, many batches --------------------------------------------


# Reach.runner -> the session class that measures with it, "module:Class" (the agent's is BatchSession itself)
SESSIONS: dict[str, str] = {"benchmark_model": "edgeprune.bench.phone_batch:PhoneBatchSession"}


class BatchSession:
    """One open connection to a board for as many batches as needed. Use as a context manager.

    ``identity`` (after the first :meth:`measure`): the board's own id from the
    agent, the SSH host key where there is one, the runtime and its version:
    what a latency table is keyed by (never the address alone).

    ``BatchSession(reach)`` for a board whose ``reach.runner`` is in
    :data:`SESSIONS` (a phone measured with ``benchmark_model``) gives that
    runner's session, with the same interface.
    """

    def __new__(cls, reach=None, *args: Any, **kwargs: Any) -> BatchSession:
        name = SESSIONS.get(getattr(reach, "runner", "agent")) if cls is BatchSession else None
        if name:
            module, attr = name.split(":")
            cls = getattr(importlib.import_module(module), attr)
        return super().__new__(cls)

    def __init__(
        self,
        reach,
        *,
        settings: BatchSettings = BatchSettings(),  # frozen: safe as a default
        accept_new_host_key: bool = False,
        agent: str | Path | None = None,
    ) -> None:
        self.reach = reach
        self.settings = settings
        self.agent = Path(agent) if agent else agent_path()
        self.transport = open_transport(reach, accept_new_host_key=accept_new_host_key)
        self.python = reach.python or self.transport.default_python
        self.visits = 0
        self.last: BatchResult | None = None
        self._ready = False

    def __enter__(self) -> BatchSession:
        self.transport.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.transport.close()

    @property
    def host_key(self) -> str | None:
        return getattr(self.transport, "host_key", None)

    def measure(
        self,
        models: Mapping[str, Path],
        *,
        settings: BatchSettings | None = None,
        baseline: Path | None = None,
        runtime: str | None = None,
    ) -> BatchResult:
        """Measure ``models`` ({key: file}, one format) in one agent run; timings keyed by ``key``."""
        settings = settings or self.settings
        first = Path(next(iter(models.values())))
        runtime = runtime or choose_runtime(self.reach.profile, first)
        with tempfile.TemporaryDirectory(prefix="edgeprune-batch-") as tmp:
            archive, names = pack_batch(models, Path(tmp) / "batch.tar.gz", baseline=baseline)
            remote = f"batch-{sha256_file(archive)[:24]}.tar.gz"
            if not self._ready:
                step(f"{self.reach.name}: connecting, uploading the agent if it changed")
                self.transport.ensure_workdir()
                self.transport.upload(self.agent, AGENT_NAME)
                self._ready = True
            self.transport.upload(archive, remote)
        argv = [self.python, AGENT_NAME, "batch", remote, "--remove-archive", *settings.argv(runtime)]
        res = self.transport.run(argv, timeout=settings.timeout_s + 30)
        self.visits += 1
        agent_failure(res, self.reach, self.python)
        result = parse_batch_output(res.stdout, target=self.reach.name, expected=names,
                                    host=self.reach.address)
        result.host_key = self.host_key
        self.last = result
        return result

    def identity(self, result: BatchResult | None = None) -> dict[str, Any]:
        """What identifies this board and runtime for a cache: never the address alone."""
        r = result or self.last
        if r is None:
            raise AgentError(f"{self.reach.name}: no batch measured yet: the board's identity is unknown")
        return {
            "board_id": str(r.board.get("id")),
            "host_key": r.host_key,
            "transport": self.transport.kind,
            "runtime": r.runtime,
            "runtime_version": r.runtime_version,
            "threads": self.settings.threads,
            "cpu_quota": r.board.get("cpu_quota"),
        }
