"""Measure a model on boards: upload the agent and the model, run it, parse what comes back.

One board: :func:`bench_target`. Several: :func:`bench_many` (at most
``parallel`` boards at once, :func:`edgeprune._threads.fan_out`; results come
back in the order asked, each a :class:`BenchResult`, the error that board
gave, or ``NotStarted`` after a failed canary).

The agent (``targets/agent.py``) and the model are uploaded only when the
board's copy differs (sha256). The model is stored on the board under a name
made from its hash, so a hostile local file name never reaches a remote shell
or path. Results are cached on this computer, keyed by model sha256, board
address, runtime, settings and agent version; a cached result says so
(``cached=True``) and ``use_cache=False`` (CLI ``--no-cache``) measures again.

Example::

    reach = resolve_target("lab-pi")
    result = bench_target(reach, Path("model.tflite"), settings=BenchSettings(runs=200))
    print(result.latency_ms["p50"], result.throttled)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprune._paths import atomic_write_text, data_dir, sha256_file
from edgeprune._threads import DEFAULT_PARALLEL, NotStarted, fan_out
from edgeprune.bench.phone import bench_phone
from edgeprune.bench.result import BenchResult, cache_file, parse_agent_output
from edgeprune.errors import AgentError, EdgePruneError, ModelError
from edgeprune.progress import step
from edgeprune.transport import CONNECT_TIMEOUT_S, open_transport
from edgeprune.validate import check, check_all

FORMAT_RUNTIMES = {".onnx": ("onnxruntime", "tensorrt"), ".tflite": ("litert", "edgetpu")}
AGENT_NAME = "agent.py"


@dataclass(frozen=True)
class BenchSettings:
    runs: int = 100
    warmup: int = 10
    threads: int = 0
    profile_ops: bool = False
    max_warmup_s: float = 10.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check_all(runs=self.runs, warmup=self.warmup, threads=self.threads, max_warmup_s=self.max_warmup_s)
        check("timeout", self.timeout_s)


def agent_path() -> Path:
    return data_dir("targets") / AGENT_NAME


def choose_runtime(profile, model: Path) -> str:
    """The profile's default runtime when it takes this format, else its first one that does."""
    ext = model.suffix.lower()
    if ext not in FORMAT_RUNTIMES:
        raise ModelError(
            f"{model}: bench takes .onnx or .tflite files, got '{ext or 'no extension'}'"
        )
    fits = FORMAT_RUNTIMES[ext]
    if profile.runtime in fits:
        return profile.runtime
    for rt in profile.runtimes:
        if rt in fits:
            return rt
    want = " or ".join(sorted({e for e, rts in FORMAT_RUNTIMES.items() if profile.runtime in rts}))
    raise ModelError(
        f"{model.name}: {profile.name} runs {', '.join(profile.runtimes)}, which take {want} "
        f"files; export one with: edgeprune export --target {profile.name}"
    )


def bench_target(
    reach,
    model: str | Path,
    *,
    settings: BenchSettings = BenchSettings(),  # frozen: safe as a default
    use_cache: bool = True,
    accept_new_host_key: bool = False,
    agent: str | Path | None = None,
) -> BenchResult:
    """Measure ``model`` on the board ``reach`` describes (see module docstring)."""
    if reach.runner == "benchmark_model":
        # a phone without Python: LiteRT's own binary measures
        return bench_phone(reach, model, settings=settings, use_cache=use_cache)
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"{model}: model file not found")
    runtime = choose_runtime(reach.profile, model)
    agent = Path(agent) if agent else agent_path()
    model_sha = sha256_file(model)
    remote_model = f"model-{model_sha[:24]}{model.suffix.lower()}"
    transport = open_transport(
        reach,
        accept_new_host_key=accept_new_host_key,
        connect_timeout=min(CONNECT_TIMEOUT_S, settings.timeout_s),
    )
    python = reach.python or transport.default_python
    key = {
        "model": model_sha,
        "board": transport.identity,
        "profile": reach.profile.name,
        "runtime": runtime,
        "settings": asdict(settings),
        "agent": sha256_file(agent),
        "python": python,
    }
    cache = cache_file(key)
    if use_cache and cache.is_file():
        try:
            data = json.loads(cache.read_text(encoding="utf-8"))
            result = BenchResult.from_dict(data)
            result.cached, result.target = True, reach.name
            return result
        except (ValueError, TypeError):
            cache.unlink(missing_ok=True)  # a damaged cache entry is measured again
    argv = [
        python,
        AGENT_NAME,
        "bench",
        remote_model,
        "--runtime",
        runtime,
        "--runs",
        str(settings.runs),
        "--warmup",
        str(settings.warmup),
        "--threads",
        str(settings.threads),
        "--max-warmup-s",
        str(settings.max_warmup_s),
        "--deadline-s",
        str(int(settings.timeout_s) + 5),
    ]
    if settings.profile_ops:
        argv.append("--profile-ops")
    with transport:
        step(f"{reach.name}: connecting, uploading what changed")
        transport.ensure_workdir()
        transport.upload(agent, AGENT_NAME)
        transport.upload(model, remote_model)
        step(f"{reach.name}: measuring {model.name} ({settings.runs} runs after warm-up)")
        res = transport.run(argv, timeout=settings.timeout_s)
        try:
            result = _result(res, reach, python, model, remote_model)
        except AgentError as exc:
            if exc.details.get("agent_error") == "bad_model":
                transport.remove(remote_model)  # the board cannot load it: do not leave it there
            raise
    result.model["name"] = model.name

    data = result.to_dict()
    data["cached_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_text(cache, json.dumps(data))
    return result


def _result(res, reach, python: str, model: Path, remote_model: str) -> BenchResult:
    """The agent's answer as a BenchResult, or an AgentError that speaks of the user's file."""
    agent_failure(res, reach, python)
    try:
        return parse_agent_output(res.stdout, target=reach.name, host=reach.address)
    except AgentError as exc:
        # The board knows the model by its hashed name: speak of the user's file instead.
        exc.args = (str(exc).replace(remote_model, f"{model} (uploaded as {remote_model})", 1),)
        raise


def agent_failure(res, reach, python: str) -> None:
    """Raise :class:`AgentError` when the agent's run gave no document to read (else return)."""
    where = f"agent on {reach.name}"
    if res.overflow:
        raise AgentError(
            f"{where}: output passed the {16} MiB limit; refused, and the agent was stopped"
        )
    if not res.stdout.strip() and res.rc not in (0, 2, 3):
        tail = res.stderr.decode("utf-8", "replace").strip()[-300:]
        if res.rc in (126, 127):
            raise AgentError(
                f"{where}: cannot run '{python}' on the board ({tail}); "
                f'set python = "/path/to/python3" in [{reach.name}] of your targets file'
            )
        if res.rc is not None and res.rc < 0:
            raise AgentError(
                f"{where}: was killed by a signal (out of memory? a deadline?) and sent no "
                f"result: {tail or '(no stderr)'}"
            )
        raise AgentError(
            f"{where}: exited with status {res.rc} and no result: {tail or '(no stderr)'}"
        )


def bench_many(
    reaches: list,
    model: str | Path,
    *,
    settings: BenchSettings = BenchSettings(),
    use_cache: bool = True,
    accept_new_host_key: bool = False,
    agent: str | Path | None = None,
    parallel: int = DEFAULT_PARALLEL,
    canary: int = 0,
) -> list[BenchResult | EdgePruneError | NotStarted]:
    """:func:`bench_target` on every board, at most ``parallel`` at once; each item is a result or that
    board's error. ``canary=K``: the first K boards first, the rest only if all K were measured."""

    def one(reach) -> BenchResult | EdgePruneError:
        try:
            return bench_target(
                reach,
                model,
                settings=settings,
                use_cache=use_cache,
                accept_new_host_key=accept_new_host_key,
                agent=agent,
            )
        except EdgePruneError as exc:
            return exc

    return fan_out(reaches, one, parallel=parallel, canary=canary, name="edgeprune-bench")
