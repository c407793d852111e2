"""Many models in one visit to a phone without Python: one folder pushed, one ``adb shell`` script.

The same interface as :class:`edgeprune.bench.batch.BatchSession` (which
hands phones measured with ``benchmark_model`` to :class:`PhoneBatchSession`),
so the latency table and the closed loop run on a phone as over SSH:

1. the models (``m0000.tflite``, ... whatever they were called) and the empty
   baseline model go into one folder, pushed with ONE ``adb push``, then
   hashed on the phone with one ``sha256sum`` (each file against ours);
2. ONE ``adb shell`` script (:data:`BATCH_SCRIPT`) runs ``benchmark_model``
   once per model per round, ``rounds`` interleaved rounds (every model and
   the baseline once per round, each round starting one model later: A B C,
   B C A, ...), ``runs`` timed runs after ``warmup`` runs each; no new round
   after ``max_s`` seconds; then it removes the folder. Everything it prints
   goes through ONE ``sed`` for the whole batch, which keeps the script's
   own markers (``@@TAG begin/end/done``, TAG a random hex string made for
   this batch, which the binary does not know) and, marked ``|``, the lines
   the parser reads; nothing the binary prints can pass for a marker, and a
   run costs no process beyond the binary itself. (No ``.{0,400}`` in that
   sed: GNU sed takes seconds per line on bounded repeats. A binary printing
   more than the reply's cap stops the batch, refused in one line);
3. the reply is read as untrusted input (:func:`parse_phone_batch`): every
   round of every model we sent and no other, each run's output through
   :func:`edgeprune.bench.bm_output.parse_benchmark_output`.

A model's figures (``BatchTiming``): each round is a separate run of the
binary, which prints the median of its ``runs`` timed runs (the mean where it
prints no percentiles); ``p50_ms`` is the median of those round medians,
``p10_ms``/``p90_ms`` their 10th/90th percentiles, ``min_ms`` the fastest
single run, ``n`` all timed runs. A model the binary cannot run (a crash, an
error, no timings) gets ``ok=False`` and its error; the batch goes on. The
baseline failing fails the batch: then nothing on the phone can be timed.

Example::

    with BatchSession(resolve_target("my-pixel"), settings=BatchSettings(rounds=5)) as board:
        result = board.measure({"a": Path("a.tflite"), "b": Path("b.tflite")})
    result.timings["a"].p50_ms, result.baseline.p50_ms, result.settings["delegate"]["fell_back"]
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeprune._paths import sha256_file
from edgeprune.bench.batch import (
    MAX_MODELS,
    BatchResult,
    BatchSession,
    BatchSettings,
    BatchTiming,
    baseline_model,
)
from edgeprune.bench.bm_output import BenchmarkOutput, parse_benchmark_output
from edgeprune.bench.delegates import judge_delegate
from edgeprune.bench.phone import Phone, judge_thermal, run_failure
from edgeprune.errors import BenchmarkModelError, EdgePruneError, ModelError, TransportError
from edgeprune.progress import step
from edgeprune.transport import open_transport

BASELINE = "baseline.tflite"
KEEP_LINES = 60  # of one run, read by the host (the rest of a run's kept lines is dropped)
MAX_REPLY = 16 * 2**20
# What the parser reads of one run (see bm_output): everything else stays on the phone.
KEEP = (r"count=|[Ii]nference timings|Initialized session|delegate|node\(s\)|operations will run|"
        r"GPU acceleration|ERROR|FATAL|Running benchmark")
BATCH_SCRIPT = r"""
bm=$1 dir=$2 rounds=$3 runs=$4 warm=$5 maxs=$6 flags=$7 tag=$8
shift 8
set -f
cd "$dir" || { echo "@@$tag nodir"; exit 125; }
start=$(date +%s)
r=0
{
  while [ "$r" -lt "$rounds" ]; do
    if [ "$r" -gt 0 ] && [ $(( $(date +%s) - start )) -ge "$maxs" ]; then break; fi
    for m in "$@"; do
      echo "@@$tag begin $r $m"
      "$bm" --graph="$dir/$m" --num_runs="$runs" --warmup_runs="$warm" --min_secs=0 --warmup_min_secs=0 \
        --max_secs="$maxs" $flags 2>&1
      rc=$?
      echo
      echo "@@$tag end $r $m $rc"
    done
    set -- "$@" "$1"
    shift
    r=$((r + 1))
  done
  echo "@@$tag done $r"
} | sed -n -E "/^@@$tag /{p;d;}; /""" + KEEP + r"""/{s/^/|/;p;}"
cd / && rm -rf "$dir"
"""


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def aggregate(name: str, outputs: list[BenchmarkOutput]) -> BatchTiming:
    """One model's rounds (each a checked run of the binary) as a :class:`BatchTiming` (see module docstring)."""
    centers = sorted(o.inference.center_us / 1000.0 for o in outputs)
    p50 = _percentile(centers, 50)
    p10, p90 = _percentile(centers, 10), _percentile(centers, 90)
    fastest = min((o.inference.min_us if o.inference.min_us is not None else o.inference.center_us) / 1000.0
                  for o in outputs)
    init = [o.init_us / 1000.0 for o in outputs if o.init_us is not None]
    return BatchTiming(name=name, ok=True, p50_ms=p50, min_ms=min(fastest, p10), p10_ms=p10, p90_ms=p90,
                       spread=(p90 - p10) / p50 if p50 > 0 else 0.0, n=sum(o.inference.count for o in outputs),
                       load_ms=sorted(init)[len(init) // 2] if init else None)


def parse_phone_batch(stdout: bytes, *, target: str, expected: Mapping[str, str], rounds: int, tag: str):
    """``{archive name: [(round, rc, text), ...]}`` and the rounds done, from the batch script's reply.

    ``expected`` maps the folder's model names to the caller's keys (the
    baseline is :data:`BASELINE`); ``tag`` is the batch's marker. Refused: a marker naming a model we did not
    send, a round out of range, an end without its begin, a reply over
    :data:`MAX_REPLY`.
    """
    where = f"benchmark_model batch on {target}"
    if len(stdout) > MAX_REPLY:
        raise BenchmarkModelError(f"{where}: the reply is over {MAX_REPLY // 2**20} MiB; refused")
    known = set(expected) | {BASELINE}
    runs: dict[str, list[tuple[int, int, str]]] = {n: [] for n in known}
    current: tuple[int, str] | None = None
    buf: list[str] = []
    done = None
    mark = f"@@{tag} "
    for line in stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("|"):
            if current is not None and len(buf) < KEEP_LINES:
                buf.append(line)
            continue
        parts = line.split()
        if not line.startswith(mark) or len(parts) < 2:
            continue
        if parts[1] == "begin" and len(parts) == 4:
            r, name = _round(parts[2], rounds, where), parts[3]
            if name not in known:
                raise BenchmarkModelError(f"{where}: the reply names a model we did not send ({name[:60]!r})")
            current, buf = (r, name), []
        elif parts[1] == "end" and len(parts) == 5:
            if current != (_round(parts[2], rounds, where), parts[3]):
                raise BenchmarkModelError(f"{where}: the reply's markers do not pair up; refused")
            if not parts[4].isdigit() or int(parts[4]) > 255:
                raise BenchmarkModelError(f"{where}: exit status {parts[4][:10]!r} is not a number; refused")
            runs[current[1]].append((current[0], int(parts[4]), "\n".join(buf)))
            current = None
        elif parts[1] == "done" and len(parts) == 3:
            done = _round(parts[2], rounds + 1, where)
        elif parts[1] == "nodir":
            raise BenchmarkModelError(f"{where}: the pushed folder was not there when the script ran")
    if done is None:
        raise BenchmarkModelError(f"{where}: the script did not finish (no done marker); its reply was cut")
    return runs, done


def _round(text: str, rounds: int, where: str) -> int:
    if not text.isdigit() or int(text) >= max(rounds, 1):
        raise BenchmarkModelError(f"{where}: round {text[:10]!r} is not one the script ran; refused")
    return int(text)


def _timing(name: str, rows: list[tuple[int, int, str]], *, target: str) -> tuple[BatchTiming, BenchmarkOutput | None]:
    """A model's BatchTiming from its rounds (``ok=False`` with the first failure), and its first output."""
    where = f"benchmark_model on {target}"
    outs = []
    for r, rc, text in sorted(rows):
        try:
            out = parse_benchmark_output(text, where=where)
        except BenchmarkModelError as exc:
            return BatchTiming(name=name, ok=False, error=f"round {r + 1}: {exc}"), None
        failure = run_failure(rc, out, what="it")
        if failure:
            return BatchTiming(name=name, ok=False, error=f"round {r + 1}: benchmark_model {failure}"), None
        outs.append(out)
    if not outs:
        return BatchTiming(name=name, ok=False, error="no result: the batch stopped before its first round"), None
    return aggregate(name, outs), outs[0]


class PhoneBatchSession(BatchSession):
    """:class:`BatchSession` for a phone without Python (see the module docstring). Use as a context manager."""

    def __init__(self, reach, *, settings: BatchSettings | None = None, accept_new_host_key: bool = False,
                 agent: str | Path | None = None) -> None:
        # No BatchSession.__init__: there is no agent and no Python on the phone.
        self.reach = reach
        self.settings = settings or BatchSettings()
        self.agent = None
        self.python = None
        self.transport = open_transport(reach, accept_new_host_key=accept_new_host_key)
        self.phone = Phone(reach, self.transport)
        self.visits = 0
        self.last: BatchResult | None = None
        self._ready = False

    def measure(self, models: Mapping[str, Path], *, settings: BatchSettings | None = None,
                baseline: Path | None = None, runtime: str | None = None) -> BatchResult:
        """Measure ``models`` ({key: .tflite file}) in one adb push and one adb shell; timings keyed by ``key``."""
        settings = settings or self.settings
        if not models:
            raise ModelError("a batch needs at least one model")
        if len(models) > MAX_MODELS:
            raise ModelError(f"a batch holds at most {MAX_MODELS} models, got {len(models)}: split it")
        bad = sorted({Path(p).suffix or "no extension" for p in models.values() if Path(p).suffix.lower() != ".tflite"})
        if bad:
            raise ModelError(f"{self.reach.name} measures .tflite models with benchmark_model, got {', '.join(bad)}")
        if not self._ready:
            self.phone.prepare()
            self.transport.run(["sh", "-c", "find . -maxdepth 1 -name 'batch-*' -mmin +60 -exec rm -rf {} + "
                                "2>/dev/null; true"], timeout=60)  # folders of batches that were killed
            self._ready = True
        names = {f"m{i:04d}.tflite": key for i, key in enumerate(models)}
        with tempfile.TemporaryDirectory(prefix="edgeprune-phone-batch-") as tmp:
            folder = Path(tmp) / "batch"
            folder.mkdir()
            for (name, key) in names.items():
                src = Path(models[key])
                if not src.is_file():
                    raise ModelError(f"{src}: model file not found")
                shutil.copyfile(src, folder / name)
            shutil.copyfile(baseline or baseline_model(".tflite", Path(tmp)), folder / BASELINE)
            digests = {p.name: sha256_file(p) for p in folder.iterdir()}
            tag = hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]
            step(f"{self.reach.name}: pushing {len(models)} models and the baseline in one folder")
            remote = self.transport.push_folder(folder, f"batch-{tag}")
        self._check_folder(remote, digests)
        before = self.phone.thermal()
        order = [*names, BASELINE]
        flags = " ".join(self.phone.flags(settings.threads))
        tag = secrets.token_hex(8)
        step(f"{self.reach.name}: timing {len(models)} models with benchmark_model ({settings.rounds} rounds, "
             f"{self.phone.delegate.label})")
        try:
            res = self.transport.run(
                ["sh", "-c", BATCH_SCRIPT, "edgeprune-batch", self.phone.remote_binary, remote,
                 str(settings.rounds), str(settings.runs), str(settings.warmup), str(int(settings.max_s)), flags,
                 tag, *order],
                timeout=settings.timeout_s + 30, max_output=MAX_REPLY)
        except EdgePruneError:
            self.transport.remove_folder(remote)
            raise
        self.visits += 1
        after = self.phone.thermal()
        if res.overflow:
            raise BenchmarkModelError(f"benchmark_model batch on {self.reach.name}: the reply passed "
                                      f"{MAX_REPLY // 2**20} MiB; refused, and the script was stopped")
        rows, done = parse_phone_batch(res.stdout, target=self.reach.name, expected=names, rounds=settings.rounds,
                                       tag=tag)
        result = self._result(rows, done, names, settings, before, after, res.seconds)
        self.last = result
        return result

    def _check_folder(self, remote: str, digests: dict[str, str]) -> None:
        """Every pushed file hashed on the phone (one sha256sum) against ours; else the folder goes."""
        res = self.transport.run(["sh", "-c", 'cd "$1" && sha256sum -- *', "edgeprune-sha", remote], timeout=120,
                                 max_output=1 << 20)
        got = {}
        for line in res.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and len(parts[0]) == 64:
                got[parts[1].lstrip("*")] = parts[0]
        if got != digests:
            self.transport.remove_folder(remote)
            bad = sorted(n for n in digests if got.get(n) != digests[n])
            raise TransportError(f"{self.reach.name}: the pushed batch folder arrived damaged ({len(bad)} of "
                                 f"{len(digests)} files differ, e.g. {bad[:1]}); nothing was measured")

    def _result(self, rows, done: int, names: dict[str, str], settings: BatchSettings, before, after,
                seconds: float) -> BatchResult:
        timings, fell_back, unknown = {}, [], 0
        for name, key in names.items():
            timing, first = _timing(name, rows[name], target=self.reach.name)
            timings[key] = timing
            if first is not None:
                judged = judge_delegate(first, self.phone.delegate)
                if judged["fell_back"]:
                    fell_back.append(key)
                unknown += judged["fell_back"] is None
        base, _ = _timing(BASELINE, rows[BASELINE], target=self.reach.name)
        if not base.ok:
            raise BenchmarkModelError(f"benchmark_model on {self.reach.name} cannot run the empty baseline model "
                                      f"({base.error}), so nothing can be timed there")
        throttled, reasons = judge_thermal(before, after)
        return BatchResult(
            target=self.reach.name, runtime="litert", runtime_version=self.phone.runtime_version,
            board=dict(self.phone.facts), timings=timings, baseline=base, rounds_done=done,
            complete=done >= settings.rounds, throttled=throttled, throttle_reasons=reasons, other_busy_cores=None,
            measure_s=seconds,
            settings={"rounds": settings.rounds, "runs": settings.runs, "warmup": settings.warmup,
                      "threads": self.phone.threads(settings.threads), "max_s": settings.max_s,
                      "runner": "benchmark_model",
                      "statistic": "p50 = median over rounds of each round's median (its mean where the binary prints no "
                                   "percentiles; one benchmark_model run of "
                                   "`runs` timed runs per model per round); p10/p90 over those round medians",
                      "delegate": {"name": self.phone.delegate.name, "label": self.phone.delegate.label,
                                   "fell_back": fell_back[:50], "fell_back_models": len(fell_back),
                                   "coverage_unknown_models": unknown}},
            host=self.reach.address, host_key=None)

    def identity(self, result: BatchResult | None = None) -> dict[str, Any]:
        """The agent's identity keys, and the delegate and its threads: a GPU table is not a CPU table."""
        ident = super().identity(result)
        ident.update(threads=self.phone.threads(self.settings.threads), delegate=self.phone.delegate.name,
                     delegate_path=self.phone.delegate.path)
        return ident
