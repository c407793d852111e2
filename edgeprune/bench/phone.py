"""Phones without Python: LiteRT's own ``benchmark_model`` binary, pushed once over adb, measures models.

NOT YET RUN AGAINST A REAL PHONE: written to adb's, LiteRT's and Android's
documented behaviour and run against a FAKE adb and a FAKE binary (tests/).

An adb target without ``python =`` in its targets entry is measured this way
(``Reach.runner == "benchmark_model"``). What is needed on this computer:
``adb`` and the Android build of ``benchmark_model``, found in this order:

1. ``benchmark_model = "PATH"`` in the target's entry of the targets file;
2. litert-cli's cache, ``~/.cache/litert-cli/binaries/<abi>/benchmark_model``
   (``<abi>``: the phone's ``ro.product.cpu.abi``, e.g. ``arm64-v8a``);
3. else one line saying where to get it and where to put it (edgeprune
   downloads nothing).

It is pushed once into the workdir as ``benchmark_model-<sha256[:16]>`` (the
transport's checked upload skips a phone that has it). The phone's facts come
from ``getprop`` (model, SoC, Android version, ABI), its thermal state from
``dumpsys thermalservice`` before and after the runs, where it answers.

The delegate (:mod:`edgeprune.bench.delegates`): ``--delegate`` (bench), else
the targets entry's ``delegate``, else the profile's ``[delegate] default``.
Every result says which delegate ran and whether the model fell back to the
CPU (the binary's node-coverage lines).

Example::

    result = bench_phone(resolve_target("my-pixel"), "model.tflite", settings=BenchSettings(runs=50))
    result.latency_ms["p50"], result.delegate["fell_back"], result.missing
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_write_text, sha256_file
from edgeprune.bench.bm_output import BenchmarkOutput, parse_benchmark_output
from edgeprune.bench.delegates import judge_delegate, resolve_delegate
from edgeprune.bench.result import BenchResult, cache_file
from edgeprune.errors import BenchmarkModelError, ModelError, TransportError
from edgeprune.progress import step
from edgeprune.transport import CONNECT_TIMEOUT_S, open_transport

LITERT_CLI_CACHE = "~/.cache/litert-cli/binaries"  # litert-cli 0.2.1 keeps the binaries it downloads here
PREBUILT = ("https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/"
            "nightly/latest/android_aarch64_benchmark_model")
ELF_MACHINE = {"arm64-v8a": 183, "armeabi-v7a": 40, "x86_64": 62, "x86": 3}  # e_machine per Android ABI
MAX_OUTPUT = 4 * 2**20  # one run's stdout+stderr (op-profiling tables of a big model included)
THERMAL = ("NONE", "LIGHT", "MODERATE", "SEVERE", "CRITICAL", "EMERGENCY", "SHUTDOWN")  # PowerManager
PROPS = ("ro.product.model", "ro.product.manufacturer", "ro.soc.manufacturer", "ro.soc.model",
         "ro.board.platform", "ro.hardware", "ro.build.version.release", "ro.build.version.sdk",
         "ro.product.cpu.abi", "ro.serialno", "ro.build.fingerprint")
FACTS_SCRIPT = (
    'for k in "$@"; do printf "%s=%s\\n" "$k" "$(getprop "$k" 2>/dev/null | head -c 200 | tr -d "\\n")"; done; '
    'printf "nproc=%s\\n" "$(nproc 2>/dev/null)"; '
    'printf "mem_kb=%s\\n" "$(grep MemTotal /proc/meminfo 2>/dev/null | tr -dc 0-9)"'
)
_TEMP = re.compile(r"Temperature\{mValue=([-0-9.eE]+), mType=(-?\d+), mName=([^,}]{1,60}), mStatus=(\d+)")


def find_binary(reach, abi: str) -> Path:
    """The ``benchmark_model`` to push: the targets entry's, else litert-cli's cache, else one-line error."""
    if reach.benchmark_model:
        path = Path(reach.benchmark_model)
        if not path.is_file():
            raise BenchmarkModelError(
                f"{reach.name}: benchmark_model = \"{path}\" ({reach.sources.get('benchmark_model', 'targets file')})"
                " is not a file; fix the path, or remove the key to use litert-cli's cache")
        return path
    cached = Path(LITERT_CLI_CACHE).expanduser() / abi / "benchmark_model"
    if cached.is_file():
        return cached
    raise BenchmarkModelError(
        f"{reach.name}: no benchmark_model binary for this phone ({abi}) on this computer; edgeprune downloads "
        f"nothing: get LiteRT's Android arm64 build of benchmark_model ({PREBUILT}, or build "
        "//tflite/tools/benchmark:benchmark_model with --config=android_arm64) and put it at "
        f"{LITERT_CLI_CACHE}/{abi}/benchmark_model, or name it with benchmark_model = \"PATH\" in "
        f"[{reach.name}] of your targets file")


def check_binary(path: Path, abi: str, target: str) -> None:
    """Refuse a file that cannot run on this phone: an ELF for another machine, or not a program."""
    head = path.read_bytes()[:20] if path.stat().st_size else b""
    if head.startswith(b"\x7fELF"):
        machine = int.from_bytes(head[18:20], "little" if head[5:6] == b"\x01" else "big")
        want = ELF_MACHINE.get(abi)
        if want is not None and machine != want:
            raise BenchmarkModelError(
                f"{target}: {path} is a program for another processor (ELF machine {machine}), the phone is "
                f"{abi}: get the Android {abi} build of benchmark_model")
    elif not head.startswith(b"#!"):
        raise BenchmarkModelError(f"{target}: {path} is not a program (neither an ELF binary nor a script)")


def _clean(value: str, n: int = 200) -> str:
    return "".join(c for c in value if c.isprintable())[:n].strip()


def parse_facts(stdout: bytes, *, serial: str | None) -> dict[str, Any]:
    """``getprop`` answers (untrusted) as the board facts a BenchResult carries."""
    props: dict[str, str] = {}
    for line in stdout.decode("utf-8", "replace").splitlines()[:100]:
        key, sep, value = line.partition("=")
        if sep and (key in PROPS or key in ("nproc", "mem_kb")):
            props[key] = _clean(value)
    get = props.get
    abi = get("ro.product.cpu.abi") or ""
    if abi not in ELF_MACHINE:
        abi = "unknown" if not abi else f"unknown ({abi[:30]})"
    soc = " ".join(v for v in (get("ro.soc.manufacturer"), get("ro.soc.model")) if v) or (
        get("ro.board.platform") or get("ro.hardware") or None)
    ident = get("ro.serialno") or serial or "unknown"
    cores = get("nproc") or ""
    mem = get("mem_kb") or ""
    release, sdk = get("ro.build.version.release"), get("ro.build.version.sdk")
    return {
        "id": "android-" + hashlib.sha256(f"android:{ident}".encode()).hexdigest()[:16],
        "hostname": get("ro.product.model") or None,
        "machine": abi,
        "os": f"Android {release or '?'}" + (f" (SDK {sdk})" if sdk else ""),
        "model": " ".join(v for v in (get("ro.product.manufacturer"), get("ro.product.model")) if v) or None,
        "cpu_model": soc,
        "cores": int(cores) if cores.isdigit() and 0 < int(cores) < 1024 else None,
        "memory_total_mb": round(int(mem) / 1024) if mem.isdigit() and len(mem) < 12 else None,
        "fingerprint": get("ro.build.fingerprint") or None,
        "cpu_quota": None,
        "python": None,
    }


def parse_thermal(text: str) -> dict[str, Any]:
    """``dumpsys thermalservice`` (untrusted): the overall status and the HAL's current temperatures."""
    m = re.search(r"^Thermal Status: (\d+)\s*$", text, re.MULTILINE)
    if not m or int(m.group(1)) >= len(THERMAL):
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "no output")
        return {"answered": False, "reason": f"dumpsys thermalservice did not answer ({_clean(first, 120)})"}
    current = text.split("Current temperatures from HAL:", 1)
    block = current[1] if len(current) == 2 else text
    temps, hot = {}, []
    for value, _kind, name, status in _TEMP.findall(block)[:40]:
        try:
            t = float(value)
        except ValueError:
            continue
        if -100.0 <= t <= 250.0:
            temps[_clean(name, 60)] = t
            if int(status) > 0:
                hot.append(f"{_clean(name, 60)} {t:.0f} °C at {THERMAL[min(int(status), 6)]}")
    status = int(m.group(1))
    return {"answered": True, "status": status, "status_name": THERMAL[status], "temperatures_c": temps,
            "sensors_throttling": hot}


def judge_thermal(before: dict[str, Any], after: dict[str, Any]) -> tuple[bool | None, list[str]]:
    """(throttled, reasons): throttled when the phone's thermal status was above NONE before or after."""
    seen = [s for s in (before, after) if s.get("answered")]
    if not seen:
        return None, [before.get("reason") or "no thermal state on this phone"]
    worst = max(s["status"] for s in seen)
    reasons = [f"thermal status {THERMAL[worst]} ({worst}) around the runs"] if worst else []
    for s in seen:
        reasons += [f"sensor {h}" for h in s.get("sensors_throttling", [])[:5]]
    return worst > 0, reasons[:20]


class Phone:
    """One connected adb phone measured with benchmark_model (``transport`` must be open).

    :meth:`prepare` reads the facts, finds and pushes the binary (once per
    sha256); :meth:`run` runs it on a model already on the phone.
    """

    def __init__(self, reach, transport, *, delegate: str | None = None) -> None:
        self.reach = reach
        self.t = transport
        self.delegate = resolve_delegate(reach, delegate)
        self.facts: dict[str, Any] = {}
        self.binary: Path | None = None
        self.binary_sha = ""
        self.remote_binary = ""

    @property
    def runtime_version(self) -> str:
        return f"benchmark_model {self.binary_sha[:12]}"

    def prepare(self) -> None:
        if self.remote_binary:
            return
        step(f"{self.reach.name}: reading the phone's facts, pushing benchmark_model if it changed")
        self.t.ensure_workdir()
        res = self.t.run(["sh", "-c", FACTS_SCRIPT, "edgeprune-facts", *PROPS], timeout=30, max_output=1 << 16)
        self.facts = parse_facts(res.stdout, serial=self.reach.hostname)
        abi = self.facts["machine"]
        if abi.startswith("unknown"):
            raise BenchmarkModelError(f"{self.reach.name}: the phone did not say its ABI (getprop "
                                      f"ro.product.cpu.abi: {abi}); is it an Android device?")
        self.binary = find_binary(self.reach, abi)
        check_binary(self.binary, abi, self.reach.name)
        self.binary_sha = sha256_file(self.binary)
        name = f"benchmark_model-{self.binary_sha[:16]}"
        self.t.upload(self.binary, name)
        path = self.t.path(name)
        res = self.t.run(["chmod", "755", path], timeout=30)
        if res.rc != 0:
            raise BenchmarkModelError(f"{self.reach.name}: cannot make {path} executable on the phone: "
                                      f"{res.stderr.decode('utf-8', 'replace').strip()[:200]}")
        self.remote_binary = path

    def threads(self, threads: int = 0) -> int:
        return threads or int((self.reach.profile.data.get("delegate") or {}).get("threads") or 0)

    def flags(self, threads: int = 0) -> list[str]:
        n = self.threads(threads)
        return [*self.delegate.flags, *([f"--num_threads={n}"] if n else [])]

    def thermal(self) -> dict[str, Any]:
        try:
            res = self.t.run(["sh", "-c", "dumpsys thermalservice 2>&1 | head -c 65536"], timeout=20,
                             max_output=1 << 17)
        except TransportError as exc:
            return {"answered": False, "reason": f"dumpsys thermalservice did not answer ({exc})"}
        return parse_thermal(res.stdout.decode("utf-8", "replace"))

    def run(self, model_path: str, *, runs: int, warmup: int, threads: int = 0, timeout: float,
            extra: tuple[str, ...] = (), what: str = "") -> BenchmarkOutput:
        """Run the binary on ``model_path`` (on the phone); its parsed output, or one-line BenchmarkModelError."""
        # --max_secs bounds the timed runs; ``timeout`` (loading included) is the hard limit, from here
        argv = [self.remote_binary, f"--graph={model_path}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
                "--min_secs=0", "--warmup_min_secs=0", f"--max_secs={max(1, int(timeout) - 5)}",
                *self.flags(threads), *extra]
        res = self.t.run(argv, timeout=timeout, max_output=MAX_OUTPUT)
        where = f"benchmark_model on {self.reach.name}"
        if res.overflow:
            raise BenchmarkModelError(f"{where}: printed more than {MAX_OUTPUT // 2**20} MiB for {what or 'the model'}; "
                                      "refused, and it was stopped")
        out = parse_benchmark_output(res.stdout + b"\n" + res.stderr, where=where)
        failure = run_failure(res.rc, out, what=what or "the model")
        if failure:
            raise BenchmarkModelError(f"{where}: {failure}")
        return out


def run_failure(rc: int | None, out: BenchmarkOutput, *, what: str) -> str | None:
    """Why one run of the binary gave no measurement (one phrase), or None when it did."""
    last = out.errors[-1] if out.errors else None
    if rc in (126, 127):
        return (f"the phone cannot start the binary (exit {rc}: {last or 'not found or not executable'}); "
                "is it the Android arm64 build?")
    if rc is not None and (rc < 0 or rc > 128):
        sig = -rc if rc < 0 else rc - 128
        return f"crashed on {what} (signal {sig})" + (f" after: {last}" if last else "")
    if rc != 0:
        return f"failed on {what} (exit {rc}): {last or 'no error message'}"
    if out.inference is None or out.inference.count < 1:
        return f"printed no timings for {what} (no count= line among {out.ignored_lines} lines it printed)"
    return None


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def to_bench_result(out: BenchmarkOutput, *, reach, phone: Phone, model: Path, model_sha: str, settings,
                    before: dict, after: dict, ops: dict | None) -> BenchResult:
    """One run's figures as the BenchResult the Python agent returns; what the binary did not give is
    absent and named in ``missing``, never filled in."""
    s = out.inference
    latency = {k: _ms(v) for k, v in (("min", s.min_us), ("max", s.max_us), ("mean", s.avg_us), ("std", s.std_us),
                                      ("p5", s.p5_us), ("p50", s.median_us), ("p95", s.p95_us)) if v is not None}
    throttled, reasons = judge_thermal(before, after)
    missing = list(out.missing) + ["other_busy_cores", "warmup_settled"]
    if throttled is None:
        missing.append("throttled")
    delegate = judge_delegate(out, phone.delegate)
    return BenchResult(
        target=reach.name, runtime="litert", runtime_version=phone.runtime_version, latency_ms=latency,
        runs=s.count, board=dict(phone.facts), throttled=throttled, throttle_reasons=reasons,
        load_ms=_ms(out.init_us), first_inference_ms=_ms(out.first_inference_us),
        warmup_runs=out.warmup.count if out.warmup else settings.warmup,
        warmup_settled=False,  # a fixed number of warm-up runs: the binary does not wait for timings to settle
        peak_memory_mb=out.peak_memory_mb,
        model={"name": model.name, "sha256": model_sha, "bytes": model.stat().st_size},
        settings={"runs": settings.runs, "warmup": settings.warmup, "threads": phone.threads(settings.threads),
                  "profile_ops": settings.profile_ops, "delegate": phone.delegate.name,
                  "flags": phone.flags(settings.threads)},
        other_busy_cores=None, op_profile=ops,
        agent={"runner": "benchmark_model", "binary": str(phone.binary), "binary_sha256": phone.binary_sha},
        host=reach.address, delegate=delegate, missing=missing,
        memory={"init_delta_mb": out.memory_init_mb, "overall_delta_mb": out.memory_overall_mb,
                "peak_mb": out.peak_memory_mb},
        raw={"thermal_before": before, "thermal_after": after, "ignored_lines": out.ignored_lines},
    )


def bench_phone(reach, model: str | Path, *, settings, use_cache: bool = True,
                delegate: str | None = None) -> BenchResult:
    """Measure ``model`` (.tflite) on the phone ``reach`` with benchmark_model; see the module docstring."""
    model = Path(model)
    if not model.is_file():
        raise ModelError(f"{model}: model file not found")
    if model.suffix.lower() != ".tflite":
        raise ModelError(f"{model.name}: {reach.name} measures .tflite files with benchmark_model; export one "
                         f"with: edgeprune export --target {reach.profile.name}")
    model_sha = sha256_file(model)
    remote_model = f"model-{model_sha[:24]}.tflite"
    transport = open_transport(reach, connect_timeout=min(CONNECT_TIMEOUT_S, settings.timeout_s))
    phone = Phone(reach, transport, delegate=delegate)  # a wrong delegate is refused before connecting
    with transport:
        phone.prepare()
        key = {"model": model_sha, "board": transport.identity, "profile": reach.profile.name, "runtime": "litert",
               "runner": "benchmark_model", "binary": phone.binary_sha, "delegate": asdict(phone.delegate),
               "threads": phone.threads(settings.threads), "settings": asdict(settings)}
        cache = cache_file(key)
        if use_cache and cache.is_file():
            try:
                result = BenchResult.from_dict(json.loads(cache.read_text(encoding="utf-8")))
                result.cached, result.target = True, reach.name
                return result
            except (ValueError, TypeError):
                cache.unlink(missing_ok=True)  # a damaged cache entry is measured again
        transport.upload(model, remote_model)
        before = phone.thermal()
        step(f"{reach.name}: measuring {model.name} with benchmark_model ({settings.runs} runs, "
             f"{phone.delegate.label})")
        where = f"{model.name} (uploaded as {remote_model})"
        out = phone.run(transport.path(remote_model), runs=settings.runs, warmup=settings.warmup,
                        threads=settings.threads, timeout=settings.timeout_s, what=where,
                        extra=("--report_peak_memory_footprint=true",))
        ops = None
        if settings.profile_ops:  # a second run: op profiling slows the runs it times
            step(f"{reach.name}: per-op profile of {model.name}")
            prof = phone.run(transport.path(remote_model), runs=min(settings.runs, 50), warmup=1,
                             threads=settings.threads, timeout=settings.timeout_s, what=where,
                             extra=("--enable_op_profiling=true",))
            ops = prof.op_profile or {"available": False, "source": "benchmark_model --enable_op_profiling=true",
                                      "reason": "the binary printed no per-op tables", "by_op_type": [],
                                      "top_nodes": []}
        after = phone.thermal()
    result = to_bench_result(out, reach=reach, phone=phone, model=model, model_sha=model_sha, settings=settings,
                             before=before, after=after, ops=ops)
    data = result.to_dict()
    data["cached_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    atomic_write_text(cache, json.dumps(data))
    return result
