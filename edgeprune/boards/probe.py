"""Measure this machine's compute and memory figures for the ``local`` profile.

Run once, the first time a figure is needed, then cached in
``<cache>/probe-local.json`` keyed by a fingerprint of the CPU (model, core
count) so a different machine re-measures. The probe takes ~2 s:

- ``fp32_gflops``: best of several float32 1024x1024 matrix multiplies in
  NumPy's BLAS using every core; ``fp32_gflops_1thread`` the same on one
  thread (separate processes, because BLAS fixes its thread count at load).
- ``copy_gbps``: best of several 64 MiB array copies, counting the bytes read
  and written (what a bandwidth-bound layer moves).

Example::

    >>> probe_local()["fp32_gflops"] > 0
    True
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from edgeprune._paths import atomic_write_text, cache_dir

_CACHE_NAME = "probe-local.json"
_PROBE_VERSION = 1

# Runs in a child process so that the BLAS thread count can be fixed by env.
_CHILD = r"""
import json, time, numpy as np
n = 1024
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(8):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
gflops = 2 * n ** 3 / best / 1e9
src = np.ones(64 * 2 ** 20 // 4, dtype=np.float32); dst = np.empty_like(src)
np.copyto(dst, src)
bestc = float("inf")
for _ in range(8):
    t = time.perf_counter(); np.copyto(dst, src); bestc = min(bestc, time.perf_counter() - t)
print(json.dumps({"gflops": gflops, "copy_gbps": 2 * src.nbytes / bestc / 1e9}))
"""


def _cpu_facts() -> dict[str, Any]:
    model, mhz = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(value)
    except (OSError, ValueError):
        pass
    ghz = None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", encoding="ascii") as fh:
            ghz = int(fh.read().strip()) / 1e6
    except (OSError, ValueError):
        ghz = round(mhz / 1000, 2) if mhz else None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu_model": model or "unknown CPU", "cores": cores, "max_ghz": ghz, "memory_gb": round(mem, 1)}


def _run_child(threads: int | None) -> dict[str, float]:
    env = dict(os.environ)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(out.stdout)


def _fingerprint(facts: dict[str, Any]) -> str:
    return f"v{_PROBE_VERSION}|{facts['cpu_model']}|{facts['cores']}|{facts['memory_gb']}"


def probe_local(*, refresh: bool = False) -> dict[str, Any]:
    """This machine's measured figures (cached; ``refresh=True`` measures again)."""
    facts = _cpu_facts()
    path = cache_dir() / _CACHE_NAME
    if not refresh and path.is_file():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("fingerprint") == _fingerprint(facts) and cached.get("fp32_gflops", 0) > 0:
                cached["cached"] = True
                return cached
        except (OSError, ValueError):
            pass  # a damaged cache is measured again and rewritten
    all_threads = _run_child(None)
    one_thread = _run_child(1)
    result = {
        **facts,
        "fingerprint": _fingerprint(facts),
        "fp32_gflops": round(all_threads["gflops"], 1),
        "fp32_gflops_1thread": round(one_thread["gflops"], 1),
        "copy_gbps": round(max(all_threads["copy_gbps"], one_thread["copy_gbps"]), 1),
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "method": "NumPy BLAS float32 1024^3 matmul (best of 8); 64 MiB copy, bytes read+written (best of 8)",
    }
    atomic_write_text(path, json.dumps(result, indent=2))
    result["cached"] = False
    return result
