"""Parse the agent's JSON (protocol in ``targets/PROTOCOL.md``) as untrusted input.

The board is someone else's computer: its output is capped in size, must be
one JSON object of the protocol version we know, and every field used is
checked for type and range before it becomes a :class:`BenchResult`.

Example::

    result = parse_agent_output(stdout_bytes, target="lab-nano")
    result.latency_ms["p50"], result.runtime, result.throttled
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeprune._paths import cache_dir
from edgeprune.errors import AgentError

PROTOCOL = 2  # what this edgeprune's agent speaks
READS = (1, 2)  # documents it reads: bench/probe are the same in 1 and 2; batch needs 2
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
STAT_KEYS = ("min", "mean", "std", "p50", "p90", "p99")
_MAX_MS = 3.6e6  # an hour per inference is not a measurement


@dataclass
class BenchResult:
    """One measurement of one model on one board (JSON-serialisable with :meth:`to_dict`)."""

    target: str
    runtime: str
    runtime_version: str
    latency_ms: dict[str, float]
    runs: int
    board: dict[str, Any]
    throttled: bool | None
    throttle_reasons: list[str]
    load_ms: float
    first_inference_ms: float
    warmup_runs: int
    warmup_settled: bool
    peak_memory_mb: float | None
    model: dict[str, Any]
    settings: dict[str, Any]
    other_busy_cores: float | None = None  # CPU cores other processes used while timing
    op_profile: dict[str, Any] | None = None
    agent: dict[str, Any] = field(default_factory=dict)
    host: str | None = None
    cached: bool = False
    cached_at: str | None = None
    # phones measured with benchmark_model (edgeprune.bench.phone): which delegate ran and whether it fell
    # back, the memory figures it printed, and the figures it does not give (never filled in)
    delegate: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self, *, raw: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not raw:
            out.pop("raw")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _num(
    value: Any, where: str, *, lo: float = 0.0, hi: float = math.inf, allow_none: bool = False
):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AgentError(f"{where}: expected a number, got {str(value)[:60]!r}")
    if not lo <= value <= hi:
        raise AgentError(f"{where}: {value} is out of range [{lo}, {hi}]")
    return float(value)


def _obj(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise AgentError(f"{where}: '{key}' must be an object")
    return value


def _str(value: Any, where: str, *, max_len: int = 4096, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise AgentError(f"{where}: expected a string, got {type(value).__name__}")
    return value[:max_len]


MAX_NESTING = 32  # the agent's documents nest 4 deep; anything deeper is not from it

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nesting_depth(text: str) -> int:
    """How deep ``text``'s brackets nest, stopping early past MAX_NESTING.

    Checked before ``json.loads``: its C decoder recurses on the C stack, and
    a library that raises the recursion limit (onnx2tf sets it to 2**31 - 1
    on import) turns a bracket bomb into a segfault instead of an error.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub('""', text))
    depth = deepest = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > MAX_NESTING:
                return depth
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_agent_output(
    stdout: bytes, *, target: str, protocols: tuple[int, ...] = READS
) -> dict[str, Any]:
    """The agent's document as a dict, checked for size, JSON and protocol, else AgentError."""
    where = f"agent on {target}"
    if len(stdout) > MAX_OUTPUT_BYTES:
        raise AgentError(
            f"{where}: output is {len(stdout)} bytes, over the {MAX_OUTPUT_BYTES} limit; refused"
        )
    text = stdout.decode("utf-8", "replace").strip()
    if not text:
        raise AgentError(f"{where}: printed nothing on stdout")
    if _nesting_depth(text) > MAX_NESTING:
        raise AgentError(f"{where}: output is not the agent's JSON (nested deeper than {MAX_NESTING}); refused")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise AgentError(
            f"{where}: output is not the agent's JSON (starts {text[:60]!r})"
        ) from None
    if not isinstance(doc, dict):
        raise AgentError(f"{where}: output is JSON but not an object")
    proto = doc.get("protocol")
    if isinstance(proto, bool) or proto not in protocols:
        raise AgentError(
            f"{where}: protocol {str(proto)[:20]}, this edgeprune reads "
            f"{' or '.join(map(str, protocols))} here; "
            "re-upload the agent (it is replaced automatically when it differs)"
        )
    if doc.get("ok") is not True:
        err = doc.get("error") if isinstance(doc.get("error"), dict) else {}
        msg = _str(err.get("message", "failed without a message"), where, max_len=600) or ""
        install = err.get("install")
        hint = f"; install on the board: {str(install)[:300]}" if install else ""
        kind = err.get("kind") if isinstance(err.get("kind"), str) else "unknown"
        raise AgentError(f"{where}: {msg}{hint}", details={"agent_error": kind[:40]})
    return doc


def parse_agent_output(stdout: bytes, *, target: str, host: str | None = None) -> BenchResult:
    """A :class:`BenchResult` from the agent's stdout of a ``bench`` command."""
    doc = decode_agent_output(stdout, target=target)
    where = f"agent on {target}"
    lat = _obj(doc, "latency_ms", where)
    latency = {k: _num(lat.get(k), f"{where}: latency_ms.{k}", hi=_MAX_MS) for k in STAT_KEYS}
    latency["max"] = _num(lat.get("max", latency["p99"]), f"{where}: latency_ms.max", hi=_MAX_MS)
    if (
        not latency["min"]
        <= latency["p50"]
        <= latency["p90"]
        <= latency["p99"]
        <= latency["max"] + 1e-9
    ):
        raise AgentError(f"{where}: latency_ms percentiles are not ordered: {latency}")
    n = lat.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1_000_000:
        raise AgentError(f"{where}: latency_ms.n must be a positive integer")
    rt = _obj(doc, "runtime", where)
    board = _obj(doc, "board", where)
    for key in ("id", "hostname", "machine", "cpu_model"):
        _str(board.get(key), f"{where}: board.{key}", allow_none=key != "id")
    timing = _obj(doc, "timing", where)
    thr = _obj(doc, "throttle", where)
    throttled = thr.get("throttled")
    if throttled not in (True, False, None):
        raise AgentError(f"{where}: throttle.throttled must be true, false or null")
    reasons = thr.get("reasons") or []
    if not isinstance(reasons, list):
        raise AgentError(f"{where}: throttle.reasons must be a list")
    mem = doc.get("memory") if isinstance(doc.get("memory"), dict) else {}
    ops = doc.get("op_profile")
    if ops is not None and not isinstance(ops, dict):
        raise AgentError(f"{where}: op_profile must be an object or null")
    settled = timing.get("warmup_settled")
    if not isinstance(settled, bool):
        raise AgentError(f"{where}: timing.warmup_settled must be true or false")
    model = _obj(doc, "model", where)
    _str(model.get("sha256"), f"{where}: model.sha256", max_len=64)
    return BenchResult(
        target=target,
        runtime=_str(rt.get("name"), f"{where}: runtime.name", max_len=40),
        runtime_version=_str(rt.get("version"), f"{where}: runtime.version", max_len=100),
        latency_ms=latency,
        runs=n,
        board=board,
        throttled=throttled,
        throttle_reasons=[str(r)[:300] for r in reasons[:20]],
        load_ms=_num(timing.get("load_ms"), f"{where}: timing.load_ms", hi=_MAX_MS * 10),
        first_inference_ms=_num(
            timing.get("first_inference_ms"), f"{where}: timing.first_inference_ms", hi=_MAX_MS
        ),
        warmup_runs=int(_num(timing.get("warmup_runs"), f"{where}: timing.warmup_runs", hi=1e7)),
        warmup_settled=settled,
        peak_memory_mb=_num(
            mem.get("peak_rss_mb"), f"{where}: memory.peak_rss_mb", hi=1e7, allow_none=True
        ),
        model=model,
        other_busy_cores=_num(
            (doc.get("load") if isinstance(doc.get("load"), dict) else {}).get("other_busy_cores"),
            f"{where}: load.other_busy_cores",
            hi=4096,
            allow_none=True,
        ),
        settings=doc.get("settings") if isinstance(doc.get("settings"), dict) else {},
        op_profile=ops,
        agent=doc.get("agent") if isinstance(doc.get("agent"), dict) else {},
        host=host,
        raw=doc,
    )


def cache_file(key: dict) -> Path:
    """Where a measurement with this key (model sha256, board identity, settings) is cached."""
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "bench" / f"{name}.json"
