#!/usr/bin/env python3
"""edgeprune's on-device benchmark agent: one file, standard library only.

It runs on the board (Python 3.6 to 3.12; JetPack 4.6 ships 3.6), loads a
model with whichever runtime the board has, measures it, and prints ONE JSON
document on stdout. The document's format is specified in PROTOCOL.md next to
this file (the only place it is written down); the host parses it as untrusted
input and never imports this file.

Usage (the host uploads this file and runs it; you can run it by hand too)::

    python3 agent.py bench MODEL.onnx [--runs 100] [--warmup 10] [--threads 4]
                     [--runtime onnxruntime|litert|tensorrt|edgetpu]
                     [--profile-ops] [--max-warmup-s 10] [--deadline-s 600]
    python3 agent.py batch ARCHIVE.tar [--runtime R] [--threads N] [--rounds 10]
                     [--runs 5] [--warmup 5] [--max-s 120] [--remove-archive] [--deadline-s 600]
    python3 agent.py probe      # board facts and which runtimes import
    python3 agent.py run MODEL --inputs X.npy [--out OUT.npz]   # outputs of MODEL on X
    python3 agent.py release ACTION DEPLOY_DIR [--token T] [--id ID]  # the deploy folder

Design:

- Runtimes are backends in a registry (``BACKENDS``), found by name. Each
  imports its runtime lazily, so a board without it gets a JSON error naming
  the package to install, never a traceback.
- LiteRT is tried as ``ai_edge_litert``, then ``tflite_runtime``, then
  ``tensorflow.lite``. TensorRT builds its engine here, on the board (engines
  are not portable), and caches it by the ONNX file's sha256 next to the
  model. The Edge TPU is LiteRT plus the ``libedgetpu`` delegate.
- Timing: load (session/interpreter creation), first inference, then warm-up:
  at least ``--warmup`` runs, then batches until the median of a batch moves
  by less than ``--settle`` (2 %) from the previous batch's, bounded by
  ``--max-warmup-s``. Then ``--runs`` timed runs, each timed alone with
  ``time.perf_counter`` around the runtime call only.
- The per-op profile (``--profile-ops``) runs in a second session AFTER the
  timed runs so that profiling never slows the reported numbers.
- Throttling: ``vcgencmd get_throttled`` (Raspberry Pi), thermal zones with a
  passive/hot trip point, read before and after the runs. ``throttled`` is
  null when the board offers no signal.
- ``batch`` (protocol 2) measures many models in one visit: one archive
  (tar, optionally gzip) holding ``manifest.json`` and the models, each
  member checked here (plain names, regular files, size and count caps:
  Python 3.6's tarfile has no extraction filter). Board facts are read and
  the runtime imported once, every model is loaded, then timed in
  interleaved rounds (A B C, B C A, ...) beside an empty baseline model
  that measures the runtime's fixed per-call cost. ``--max-s`` ends the
  rounds early (the reply says how many were done).
- Safety: the real stdout is kept for the JSON alone (runtimes that print go
  to stderr); ``--deadline-s`` arms SIGALRM with its default action, so the
  kernel ends the agent even if a runtime call never returns.
"""

import argparse
import base64
import binascii
import errno
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import traceback

PROTOCOL = 2
AGENT_VERSION = "2.0.0"


class AgentFailure(Exception):
    """A failure reported in the JSON ``error`` object (kind, message, install)."""

    def __init__(self, kind, message, install=None):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.install = install


# --------------------------------------------------------------------------
# board facts


def _read(path, default=None):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except (OSError, IOError, ValueError):
        return default


def _run_cmd(argv, timeout=3.0):
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError:
        return None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    if proc.returncode != 0:
        return None
    return out.decode("utf-8", "replace").strip()


def _cpu_model():
    text = _read("/proc/cpuinfo", "") or ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    dt = _read("/proc/device-tree/model")
    if dt:
        return dt.strip("\x00")
    return platform.processor() or platform.machine()


def _cpu_max():
    """(quota us, period us) of this process's cgroup CPU limit (v2 ``cpu.max``, v1 ``cfs_quota_us``), or None."""
    text = _read("/proc/self/cgroup", "") or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ctrls, path = parts[1].split(","), parts[2]
        if parts[0] == "0" and parts[1] == "":  # cgroup v2
            raw = _read("/sys/fs/cgroup" + path + "/cpu.max")
            if raw and not raw.startswith("max"):
                q, p = raw.split()
                return float(q), float(p)
        elif "cpu" in ctrls:
            for base in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
                q = _read(base + path + "/cpu.cfs_quota_us")
                p = _read(base + path + "/cpu.cfs_period_us")
                if q is not None and p:
                    return None if int(q) < 0 else (float(q), float(p))
    return None


def _cpu_quota():
    """The CFS quota of this process's cgroup as a fraction of one CPU, or None."""
    qp = _cpu_max()
    return qp[0] / qp[1] if qp and qp[1] > 0 else None


def _cpu_quota_period_ms():
    """The CFS period in ms (what a timed round must span several of on a quota), or None."""
    qp = _cpu_max()
    return qp[1] / 1000.0 if qp else None


def _cgroup_throttled_periods():
    text = _read("/proc/self/cgroup", "") or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "cpu" in parts[1].split(","):
            stat = _read("/sys/fs/cgroup/cpu" + parts[2] + "/cpu.stat")
            if stat:
                for row in stat.splitlines():
                    if row.startswith("nr_throttled"):
                        return int(row.split()[1])
    return None


def _meminfo():
    out = {}
    for line in (_read("/proc/meminfo", "") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            out[key] = int(rest.split()[0]) / 1024.0
    return out


def _thermal():
    """[(zone type, temp C, passive/hot trip C or None)] from /sys/class/thermal."""
    zones = []
    base = "/sys/class/thermal"
    try:
        names = sorted(n for n in os.listdir(base) if n.startswith("thermal_zone"))
    except OSError:
        return zones
    for name in names:
        raw = _read(os.path.join(base, name, "temp"))
        try:
            temp = int(raw) / 1000.0
        except (TypeError, ValueError):
            continue
        trip = None
        for i in range(16):
            ttype = _read(os.path.join(base, name, "trip_point_%d_type" % i))
            if ttype is None:
                break
            if ttype in ("passive", "hot"):
                try:
                    t = int(_read(os.path.join(base, name, "trip_point_%d_temp" % i))) / 1000.0
                except (TypeError, ValueError):
                    continue
                if t > 0 and (trip is None or t < trip):
                    trip = t
        zones.append((_read(os.path.join(base, name, "type"), name), temp, trip))
    return zones


def _cpufreq():
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    cur = _read(base + "scaling_cur_freq")
    mx = _read(base + "cpuinfo_max_freq")
    return {
        "governor": _read(base + "scaling_governor"),
        "freq_mhz": int(cur) / 1000.0 if cur and cur.isdigit() else None,
        "max_freq_mhz": int(mx) / 1000.0 if mx and mx.isdigit() else None,
    }


def throttle_state():
    """A snapshot of every throttling signal this board offers."""
    state = {"vcgencmd": None, "thermal": [], "cgroup_throttled_periods": _cgroup_throttled_periods()}
    out = _run_cmd(["vcgencmd", "get_throttled"])
    if out and "=" in out:
        try:
            state["vcgencmd"] = int(out.split("=", 1)[1], 16)
        except ValueError:
            pass
    state["thermal"] = [{"zone": z, "temp_c": t, "trip_c": trip} for z, t, trip in _thermal()]
    state.update(_cpufreq())
    return state


def judge_throttle(before, after):
    """(throttled true/false/None, reasons) from two snapshots."""
    reasons = []
    have_signal = False
    vb, va = before.get("vcgencmd"), after.get("vcgencmd")
    if va is not None:
        have_signal = True
        if va & 0xE:  # bit 1 freq capped, 2 throttled now, 3 soft temp limit
            reasons.append("vcgencmd get_throttled=0x%x (capped/throttled now)" % va)
        new_sticky = ((va >> 16) & ~((vb or 0) >> 16)) & 0xE
        if new_sticky:
            reasons.append("vcgencmd: throttling occurred during the run (0x%x)" % va)
    for snap in (before, after):
        for z in snap.get("thermal") or []:
            if z.get("trip_c"):
                have_signal = True
                if z["temp_c"] >= z["trip_c"]:
                    reasons.append("%s at %.1f C >= trip %.1f C" % (z["zone"], z["temp_c"], z["trip_c"]))
    if not have_signal:
        return None, ["no throttling signal on this board (no vcgencmd, no thermal trip points)"]
    return bool(reasons), reasons


def _tegrastats_line():
    try:
        proc = subprocess.Popen(["tegrastats", "--interval", "200"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None
    try:
        line = proc.stdout.readline().decode("utf-8", "replace").strip()
    finally:
        proc.kill()
        proc.wait()
    return line or None


def board_facts():
    mem = _meminfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    machine_id = _read("/etc/machine-id") or ""
    host = socket.gethostname()
    ident = hashlib.sha256((machine_id + "|" + host + "|" + platform.machine()).encode()).hexdigest()[:16]
    facts = {
        "id": ident,
        "hostname": host,
        "machine": platform.machine(),
        "os": platform.platform(),
        "model": (_read("/proc/device-tree/model") or "").strip("\x00") or None,
        "cpu_model": _cpu_model(),
        "cores": cores,
        "cpu_quota": _cpu_quota(),
        "cpu_quota_period_ms": _cpu_quota_period_ms(),
        "memory_total_mb": mem.get("MemTotal"),
        "memory_available_mb": mem.get("MemAvailable"),
        "temperatures_c": dict((z, t) for z, t, _ in _thermal()),
        "tegrastats": _tegrastats_line(),
        "python": platform.python_version(),
    }
    facts.update(_cpufreq())
    return facts


def _cpu_snapshot():
    """(wall s, busy CPU s of the whole machine, CPU s of this process) for contention."""
    busy = None
    line = (_read("/proc/stat", "") or "").split("\n", 1)[0].split()
    if line and line[0] == "cpu":
        vals = [int(v) for v in line[1:9]]  # user nice system idle iowait irq softirq steal
        hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        busy = (sum(vals) - vals[3] - vals[4]) / hz
    t = os.times()
    return time.time(), busy, t[0] + t[1]


def contention(before, after):
    """CPU cores that OTHER processes kept busy while we measured (None when unknown)."""
    wall = after[0] - before[0]
    if before[1] is None or after[1] is None or wall <= 0:
        return None
    others = ((after[1] - before[1]) - (after[2] - before[2])) / wall
    return round(max(others, 0.0), 3)


def _rss_mb():
    for line in (_read("/proc/self/status", "") or "").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return None


def _peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


# --------------------------------------------------------------------------
# runtime backends


def _np():
    try:
        import numpy
    except ImportError:
        raise AgentFailure("missing_runtime", "numpy is not installed on this board",
                           "pip install numpy")
    return numpy


def _random_input(np, shape, dtype, rng):
    shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 224) for i, d in enumerate(shape)]
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.randint(0, 2, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.randint(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)


class Backend(object):
    """One runtime: load a model, run it once, optionally profile its ops."""

    name = ""
    install = ""

    def __init__(self, model_path, threads):
        self.model_path = model_path
        self.threads = threads
        self.inputs = []  # [{"name", "shape", "dtype"}]
        self.outputs = []

    def version(self):
        raise NotImplementedError

    def load(self):
        raise NotImplementedError

    def run(self):
        raise NotImplementedError

    def profile_ops(self, n):
        return {"source": self.name, "available": False,
                "reason": "this runtime's Python API offers no per-op profile"}


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    install = "pip install onnxruntime (on Jetson: the onnxruntime-gpu wheel for your JetPack)"

    def _ort(self):
        try:
            import onnxruntime
        except ImportError:
            raise AgentFailure("missing_runtime", "ONNX Runtime is not installed on this board "
                               "(python: %s)" % sys.executable, self.install)
        return onnxruntime

    def version(self):
        return self._ort().__version__

    def _session(self, profile_prefix=None):
        ort = self._ort()
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
        if profile_prefix:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        return ort.InferenceSession(self.model_path, sess_options=so, providers=["CPUExecutionProvider"])

    def load(self):
        np = _np()
        self.sess = self._session()
        rng = np.random.RandomState(0)
        self.feeds = {}
        for i in self.sess.get_inputs():
            dtype = np.dtype(_ORT_TYPES.get(i.type, "float32"))
            self.feeds[i.name] = _random_input(np, i.shape, dtype, rng)
            self.inputs.append({"name": i.name, "shape": list(self.feeds[i.name].shape), "dtype": str(dtype)})
        for o in self.sess.get_outputs():
            self.outputs.append({"name": o.name, "shape": [d if isinstance(d, int) else -1 for d in o.shape],
                                 "dtype": _ORT_TYPES.get(o.type, o.type)})
        self.providers = self.sess.get_providers()

    def run(self):
        self.sess.run(None, self.feeds)

    def profile_ops(self, n):
        prefix = os.path.join(os.path.dirname(os.path.abspath(self.model_path)), ".ep-ortprof-%d" % os.getpid())
        sess = self._session(profile_prefix=prefix)
        for _ in range(n):
            sess.run(None, self.feeds)
        path = sess.end_profiling()
        try:
            with open(path) as fh:
                events = json.load(fh)
        finally:
            try:
                os.remove(path)
            except OSError:
                pass
        by_type, by_node = {}, {}
        for ev in events:
            if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
                continue
            args = ev.get("args") or {}
            op = args.get("op_name", "?")
            node = ev["name"][: -len("_kernel_time")]
            us = float(ev.get("dur", 0))
            t = by_type.setdefault(op, [0.0, 0])
            t[0] += us
            t[1] += 1
            nd = by_node.setdefault(node, [0.0, op])
            nd[0] += us
        total = sum(v[0] for v in by_type.values()) or 1.0
        ops = [{"op_type": k, "ms_per_run": v[0] / n / 1000.0, "calls_per_run": v[1] / float(n),
                "share": v[0] / total} for k, v in by_type.items()]
        ops.sort(key=lambda r: -r["ms_per_run"])
        nodes = [{"node": k, "op_type": v[1], "ms_per_run": v[0] / n / 1000.0} for k, v in by_node.items()]
        nodes.sort(key=lambda r: -r["ms_per_run"])
        return {"source": "onnxruntime enable_profiling", "available": True, "runs": n,
                "by_op_type": ops, "top_nodes": nodes[:20]}


def _litert_module():
    """(Interpreter class, load_delegate, package name, version) of the first LiteRT found."""
    try:
        from ai_edge_litert import interpreter as mod
        import ai_edge_litert
        return mod.Interpreter, mod.load_delegate, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "?")
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod
        import tflite_runtime
        return mod.Interpreter, mod.load_delegate, "tflite_runtime", getattr(tflite_runtime, "__version__", "?")
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter, tf.lite.experimental.load_delegate, "tensorflow.lite", tf.__version__
    except ImportError:
        pass
    raise AgentFailure("missing_runtime", "no LiteRT runtime on this board (tried ai_edge_litert, "
                       "tflite_runtime, tensorflow.lite; python: %s)" % sys.executable, LiteRTBackend.install)


class LiteRTBackend(Backend):
    name = "litert"
    install = "pip install ai-edge-litert (Python 3.10-3.13; else tflite-runtime with numpy<2)"
    delegate = None

    def version(self):
        _, _, pkg, ver = _litert_module()
        return "%s %s" % (pkg, ver)

    def _delegates(self, load_delegate):
        return []

    def load(self):
        np = _np()
        interp_cls, load_delegate, _, _ = _litert_module()
        kwargs = {"model_path": self.model_path, "experimental_delegates": self._delegates(load_delegate)}
        if self.threads:
            kwargs["num_threads"] = self.threads
        self.interp = interp_cls(**kwargs)
        self.interp.allocate_tensors()
        rng = np.random.RandomState(0)
        for d in self.interp.get_input_details():
            arr = _random_input(np, [int(x) for x in d["shape"]], np.dtype(d["dtype"]), rng)
            self.interp.set_tensor(d["index"], arr)
            self.inputs.append({"name": d["name"], "shape": list(arr.shape), "dtype": str(arr.dtype)})
        for d in self.interp.get_output_details():
            self.outputs.append({"name": d["name"], "shape": [int(x) for x in d["shape"]],
                                 "dtype": str(np.dtype(d["dtype"]))})
        self.providers = [self.delegate or "cpu (XNNPACK where the runtime applies it)"]

    def run(self):
        # Inputs are set once at load: like benchmark_model, only invoke() is timed.
        self.interp.invoke()


class EdgeTPUBackend(LiteRTBackend):
    name = "edgetpu"
    install = "libedgetpu1-std from Google's Coral apt repository (https://coral.ai/software/)"
    delegate = "libedgetpu.so.1"

    def _delegates(self, load_delegate):
        try:
            return [load_delegate(self.delegate)]
        except (ValueError, OSError) as exc:
            raise AgentFailure("missing_runtime", "cannot load the Edge TPU delegate %s: %s"
                               % (self.delegate, exc), self.install)


class TensorRTBackend(Backend):
    """TensorRT 8.x/10.x with device memory through ctypes + libcudart (no pycuda needed).

    Not run here (no GPU); written to TensorRT's documented Python API.
    """

    name = "tensorrt"
    install = "TensorRT comes with JetPack: sudo apt install python3-libnvinfer"

    def _trt(self):
        try:
            import tensorrt
        except ImportError:
            raise AgentFailure("missing_runtime", "TensorRT's Python bindings are not installed "
                               "(python: %s)" % sys.executable, self.install)
        return tensorrt

    def version(self):
        return self._trt().__version__

    def _cuda(self):
        import ctypes
        for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2"):
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise AgentFailure("missing_runtime", "libcudart (the CUDA runtime) cannot be loaded", self.install)

    def _engine_bytes(self, trt, logger):
        h = hashlib.sha256()
        with open(self.model_path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        cache = os.path.join(os.path.dirname(os.path.abspath(self.model_path)), "engines")
        if not os.path.isdir(cache):
            os.makedirs(cache)
        path = os.path.join(cache, "%s-trt%s.engine" % (h.hexdigest()[:32], trt.__version__))
        self.engine_cached = os.path.exists(path)
        if self.engine_cached:
            with open(path, "rb") as fh:
                return fh.read()
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        with open(self.model_path, "rb") as fh:
            if not parser.parse(fh.read()):
                errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise AgentFailure("bad_model", "TensorRT cannot parse the ONNX file: " + errs)
        config = builder.create_builder_config()
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if hasattr(builder, "build_serialized_network"):
            data = builder.build_serialized_network(network, config)
        else:
            data = builder.build_engine(network, config).serialize()
        if data is None:
            raise AgentFailure("runtime_error", "TensorRT failed to build an engine for this model")
        data = bytes(data)
        tmp = path + ".tmp-%d" % os.getpid()
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.rename(tmp, path)
        return data

    def load(self):
        import ctypes
        np = _np()
        trt = self._trt()
        cuda = self._cuda()
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(self._engine_bytes(trt, logger))
        self.ctx = self.engine.create_execution_context()
        self.cuda = cuda
        rng = np.random.RandomState(0)
        self.v3 = hasattr(self.engine, "num_io_tensors")
        names = ([self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)] if self.v3
                 else [self.engine.get_binding_name(i) for i in range(self.engine.num_bindings)])
        self.ptrs = []
        for i, name in enumerate(names):
            if self.v3:
                shape = [int(d) for d in self.engine.get_tensor_shape(name)]
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
                is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            else:
                shape = [int(d) for d in self.engine.get_binding_shape(i)]
                dtype = np.dtype(trt.nptype(self.engine.get_binding_dtype(i)))
                is_in = self.engine.binding_is_input(i)
            host = _random_input(np, shape, dtype, rng) if is_in else np.zeros([max(d, 1) for d in shape], dtype)
            ptr = ctypes.c_void_p()
            if cuda.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(host.nbytes)) != 0:
                raise AgentFailure("runtime_error", "cudaMalloc failed for %s" % name)
            if is_in:
                cuda.cudaMemcpy(ptr, host.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(host.nbytes), 1)
                self.inputs.append({"name": name, "shape": list(host.shape), "dtype": str(dtype)})
            else:
                self.outputs.append({"name": name, "shape": list(host.shape), "dtype": str(dtype)})
            self.ptrs.append(ptr.value)
            if self.v3:
                self.ctx.set_tensor_address(name, ptr.value)
        self.stream = ctypes.c_void_p()
        cuda.cudaStreamCreate(ctypes.byref(self.stream))
        self.providers = ["tensorrt (engine %s)" % ("cached" if self.engine_cached else "built now")]

    def run(self):
        if self.v3:
            self.ctx.execute_async_v3(self.stream.value)
            self.cuda.cudaStreamSynchronize(self.stream)
        else:
            self.ctx.execute_v2(self.ptrs)


BACKENDS = {b.name: b for b in (OnnxRuntimeBackend, LiteRTBackend, TensorRTBackend, EdgeTPUBackend)}
DEFAULT_RUNTIME = {".onnx": "onnxruntime", ".tflite": "litert"}
FORMAT_OF = {"onnxruntime": ".onnx", "tensorrt": ".onnx", "litert": ".tflite", "edgetpu": ".tflite"}


# --------------------------------------------------------------------------
# measuring


def percentile(sorted_vals, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_vals:
        return None
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def stats_ms(samples_s):
    vals = sorted(s * 1000.0 for s in samples_s)
    n = len(vals)
    mean = sum(vals) / n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1) if n > 1 else 0.0
    return {"n": n, "min": vals[0], "max": vals[-1], "mean": mean, "std": var ** 0.5,
            "p50": percentile(vals, 50), "p90": percentile(vals, 90), "p99": percentile(vals, 99)}


def _timed(fn, count):
    clock = time.perf_counter
    out = []
    append = out.append
    for _ in range(count):
        t0 = clock()
        fn()
        append(clock() - t0)
    return out


def _median(vals):
    return percentile(sorted(vals), 50)


def warm_up(fn, minimum, settle, max_seconds, max_runs=2000):
    """Run ``fn`` at least ``minimum`` times, then in batches until the batch median settles.

    Returns (runs done, settled?, seconds spent).
    """
    start = time.perf_counter()
    done = 0
    last = _timed(fn, max(minimum, 1))
    done += len(last)
    prev = None
    while True:
        if time.perf_counter() - start > max_seconds or done >= max_runs:
            return done, False, time.perf_counter() - start
        per = max(_median(last), 1e-6)
        batch = int(min(25, max(3, 0.25 / per)))
        last = _timed(fn, batch)
        done += batch
        med = _median(last)
        if prev is not None and abs(med - prev) <= settle * prev:
            return done, True, time.perf_counter() - start
        prev = med


def bench(args):
    model = os.path.abspath(args.model)
    if not os.path.isfile(model):
        raise AgentFailure("bad_model", "model file not found on the board: %s" % model)
    ext = os.path.splitext(model)[1].lower()
    runtime = args.runtime or DEFAULT_RUNTIME.get(ext)
    if runtime not in BACKENDS:
        raise AgentFailure("bad_args", "unknown runtime %r for %s (known: %s)"
                           % (runtime, ext, ", ".join(sorted(BACKENDS))))
    if FORMAT_OF[runtime] != ext:
        raise AgentFailure("bad_args", "runtime %s takes %s files, got %s" % (runtime, FORMAT_OF[runtime], ext))
    backend = BACKENDS[runtime](model, args.threads)
    version = backend.version()
    h = hashlib.sha256()
    with open(model, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    board = board_facts()
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    try:
        backend.load()
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure("bad_model", "%s cannot load %s: %s" % (runtime, os.path.basename(model),
                                                                  str(exc).strip()[:2000]))
    load_ms = (time.perf_counter() - t0) * 1000.0
    rss1 = _rss_mb()
    t0 = time.perf_counter()
    backend.run()
    first_ms = (time.perf_counter() - t0) * 1000.0
    before = throttle_state()
    load_before = _read("/proc/loadavg", "").split()[:1]
    w_runs, settled, w_s = warm_up(backend.run, args.warmup, args.settle, args.max_warmup_s)
    cpu0 = _cpu_snapshot()
    samples = _timed(backend.run, args.runs)
    cpu1 = _cpu_snapshot()
    after = throttle_state()
    throttled, reasons = judge_throttle(before, after)
    ops = backend.profile_ops(min(args.runs, 20)) if args.profile_ops else None
    cg0, cg1 = before.get("cgroup_throttled_periods"), after.get("cgroup_throttled_periods")
    return {
        "runtime": {"name": runtime, "version": version, "providers": getattr(backend, "providers", [])},
        "board": board,
        "model": {"path": model, "sha256": h.hexdigest(), "bytes": os.path.getsize(model),
                  "inputs": backend.inputs, "outputs": backend.outputs},
        "settings": {"runs": args.runs, "warmup_min": args.warmup, "threads": args.threads,
                     "settle": args.settle, "max_warmup_s": args.max_warmup_s, "profile_ops": args.profile_ops},
        "timing": {"load_ms": load_ms, "first_inference_ms": first_ms, "warmup_runs": w_runs,
                   "warmup_settled": settled, "warmup_s": w_s},
        "latency_ms": stats_ms(samples),
        "memory": {"rss_before_load_mb": rss0, "rss_after_load_mb": rss1, "peak_rss_mb": _peak_rss_mb()},
        "load": {"loadavg_1m_before": float(load_before[0]) if load_before else None,
                 "other_busy_cores": contention(cpu0, cpu1)},
        "op_profile": ops,
        "throttle": {"throttled": throttled, "reasons": reasons, "before": before, "after": after,
                     "cpu_quota_throttled_periods": (cg1 - cg0) if cg0 is not None and cg1 is not None else None},
    }


# --------------------------------------------------------------------------
# batch (protocol 2): many models, one visit

BATCH_FORMAT = "edgeprune.batch"
MAX_MEMBERS = 4096
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _bad_archive(message):
    return AgentFailure("bad_args", "batch archive: " + message)


def extract_batch(archive, dest):
    """Extract ``archive`` into the new folder ``dest``, checking every member first.

    Only regular files with plain names (no '/', no leading dot), each at most
    MAX_MEMBER_BYTES, at most MAX_MEMBERS of them and MAX_ARCHIVE_BYTES in all.
    Files are written by this code (never ``tar.extract``), so no link, device,
    owner or mode from the archive reaches the board. Returns {name: path}.
    """
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad_archive("cannot read %s: %s" % (os.path.basename(archive), exc))
    os.mkdir(dest, 0o700)
    files, total, count = {}, 0, 0
    try:
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise _bad_archive("damaged: %s" % exc)
            if member is None:
                break
            count += 1
            if count > MAX_MEMBERS:
                raise _bad_archive("more than %d members" % MAX_MEMBERS)
            name = member.name
            if not _PLAIN_NAME.match(name) or name in files:
                raise _bad_archive("member %r is not a plain, unique file name" % name[:80])
            if not member.isfile():
                raise _bad_archive("member %r is not a regular file (links, folders and devices "
                                   "are refused)" % name)
            if member.size > MAX_MEMBER_BYTES or total + member.size > MAX_ARCHIVE_BYTES:
                raise _bad_archive("member %r: size %d is over the limit (%d per file, %d in all)"
                                   % (name, member.size, MAX_MEMBER_BYTES, MAX_ARCHIVE_BYTES))
            total += member.size
            src = tar.extractfile(member)
            path = os.path.join(dest, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            written = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > member.size:
                        raise _bad_archive("member %r is longer than its header says" % name)
                    out.write(chunk)
            if written != member.size:
                raise _bad_archive("member %r is truncated" % name)
            files[name] = path
    finally:
        tar.close()
    return files


def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(files):
    """The checked manifest: ([(name, sha256)], baseline name or None)."""
    path = files.get("manifest.json")
    if path is None:
        raise _bad_archive("no manifest.json")
    if os.path.getsize(path) > MAX_MANIFEST_BYTES:
        raise _bad_archive("manifest.json is too large")
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except ValueError as exc:
        raise _bad_archive("manifest.json is not JSON: %s" % exc)
    if not isinstance(doc, dict) or doc.get("format") != BATCH_FORMAT or doc.get("version") != 1:
        raise _bad_archive('manifest.json is not an %s version 1 manifest' % BATCH_FORMAT)
    models = doc.get("models")
    if not isinstance(models, list):
        raise _bad_archive("manifest.json: 'models' must be a list")
    out = []
    for entry in models:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _bad_archive("manifest.json: every model needs a name")
        name, digest = entry["name"], entry.get("sha256")
        if name not in files or name == "manifest.json":
            raise _bad_archive("manifest.json names %r, which the archive does not hold" % name[:80])
        if _sha256_file(files[name]) != digest:
            raise _bad_archive("%s: its sha256 differs from the manifest's" % name)
        out.append((name, digest))
    baseline = doc.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or baseline not in files):
        raise _bad_archive("manifest.json: baseline %r is not in the archive" % str(baseline)[:80])
    return out, baseline


class _Entry(object):
    def __init__(self, name, path, sha):
        self.name, self.path, self.sha = name, path, sha
        self.backend, self.error, self.samples, self.load_ms = None, None, [], None
        self.rounds_ms = []  # per interleaved round, the median of its runs: what the host bootstraps over
        self.rounds_mean_ms = []  # per round, the mean of its runs (what a board with a CPU quota sustains)


def _summary(samples_s):
    vals = sorted(s * 1000.0 for s in samples_s)
    p50 = percentile(vals, 50)
    p10, p90 = percentile(vals, 10), percentile(vals, 90)
    return {"n": len(vals), "p50_ms": p50, "min_ms": vals[0], "p10_ms": p10, "p90_ms": p90,
            "spread": (p90 - p10) / p50 if p50 > 0 else 0.0}


def batch(args):
    archive = os.path.abspath(args.archive)
    if not os.path.isfile(archive):
        raise AgentFailure("bad_args", "batch archive not found on the board: %s" % archive)
    runtime = args.runtime
    if runtime not in BACKENDS:
        raise AgentFailure("bad_args", "unknown runtime %r (known: %s)" % (runtime, ", ".join(sorted(BACKENDS))))
    ext = FORMAT_OF[runtime]
    version = BACKENDS[runtime]("", args.threads).version()  # imports the runtime, once
    work = os.path.join(os.path.dirname(archive), "batch-%d-%s" % (os.getpid(), hashlib.sha256(
        os.urandom(8)).hexdigest()[:8]))
    try:
        files = extract_batch(archive, work)
        if args.remove_archive:
            os.remove(archive)
        listed, baseline = read_manifest(files)
        entries = [_Entry(n, files[n], d) for n, d in listed]
        for e in entries:
            if os.path.splitext(e.name)[1].lower() != ext:
                e.error = "runtime %s takes %s files" % (runtime, ext)
        base = _Entry(baseline, files[baseline], None) if baseline else None
        board = board_facts()
        rss0 = _rss_mb()
        t_load = time.perf_counter()
        for e in [x for x in entries + [base] if x is not None and x.error is None]:
            backend = BACKENDS[runtime](e.path, args.threads)
            t0 = time.perf_counter()
            try:
                backend.load()
                backend.run()
            except AgentFailure:
                raise
            except Exception as exc:
                e.error = "%s cannot load %s: %s" % (runtime, e.name, str(exc).strip()[:500])
                continue
            e.backend, e.load_ms = backend, (time.perf_counter() - t0) * 1000.0
        load_s = time.perf_counter() - t_load
        if base is not None and base.error:
            raise AgentFailure("bad_model", "the baseline model: " + base.error)
        live = [e for e in entries + [base] if e is not None and e.backend is not None]
        before = throttle_state()
        load_before = (_read("/proc/loadavg", "") or "").split()[:1]
        start = time.perf_counter()
        for e in live:
            _timed(e.backend.run, args.warmup)
        cpu0 = _cpu_snapshot()
        rounds_done = 0
        while live and rounds_done < args.rounds:
            if rounds_done and time.perf_counter() - start > args.max_s:
                break
            k = rounds_done % len(live) if live else 0
            for e in live[k:] + live[:k]:  # each round starts one model later: no fixed position
                got = _timed(e.backend.run, args.runs)
                e.samples.extend(got)
                e.rounds_ms.append(round(_median(got) * 1000.0, 6))
                e.rounds_mean_ms.append(round(sum(got) / len(got) * 1000.0, 6))
            rounds_done += 1
        cpu1 = _cpu_snapshot()
        measure_s = time.perf_counter() - start
        after = throttle_state()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    throttled, reasons = judge_throttle(before, after)
    cg0, cg1 = before.get("cgroup_throttled_periods"), after.get("cgroup_throttled_periods")
    results = []
    for e in entries:
        if e.backend is None:
            results.append({"name": e.name, "sha256": e.sha, "ok": False, "error": e.error})
        else:
            r = {"name": e.name, "sha256": e.sha, "ok": True, "load_ms": e.load_ms, "rounds_ms": e.rounds_ms,
                 "rounds_mean_ms": e.rounds_mean_ms}
            r.update(_summary(e.samples))
            results.append(r)
    base_doc = None
    if base is not None:
        base_doc = {"name": base.name, "load_ms": base.load_ms}
        base_doc.update(_summary(base.samples))
    return {
        "runtime": {"name": runtime, "version": version},
        "board": board,
        "settings": {"rounds": args.rounds, "runs": args.runs, "warmup": args.warmup,
                     "threads": args.threads, "max_s": args.max_s},
        "batch": {"models": len(entries), "rounds_done": rounds_done, "complete": rounds_done >= args.rounds,
                  "load_s": load_s, "measure_s": measure_s},
        "baseline": base_doc,
        "results": results,
        "memory": {"rss_before_load_mb": rss0, "peak_rss_mb": _peak_rss_mb()},
        "load": {"loadavg_1m_before": float(load_before[0]) if load_before else None,
                 "other_busy_cores": contention(cpu0, cpu1)},
        "throttle": {"throttled": throttled, "reasons": reasons, "before": before, "after": after,
                     "cpu_quota_throttled_periods": (cg1 - cg0) if cg0 is not None and cg1 is not None else None},
    }


def probe(args):
    runtimes = {}
    for name, cls in sorted(BACKENDS.items()):
        try:
            runtimes[name] = {"available": True, "version": cls("", 0).version()}
            if name == "edgetpu":
                _, load_delegate, _, _ = _litert_module()
                EdgeTPUBackend("", 0)._delegates(load_delegate)
        except AgentFailure as exc:
            runtimes[name] = {"available": False, "error": exc.message, "install": exc.install}
        except Exception as exc:  # a runtime that is present but broken
            runtimes[name] = {"available": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    return {"board": board_facts(), "runtimes": runtimes}


# --------------------------------------------------------------------------
# ship: `run` (an artifact on given inputs) and `release` (the deploy folder)
#
# `run` loads the artifact with the board's runtime, feeds it the inputs the
# host uploaded (.npy, never unpickled) and hands the raw outputs back, inline
# in the JSON when small, else in an .npz file the host downloads. `release`
# does every change to the deploy folder, each path checked to stay inside it:
#
#   DEPLOY/releases/ID/   one shipped release (model.*, manifest.json, checks)
#   DEPLOY/staging/ID/    an upload in progress (not a release until activated);
#                         under the lock, anything else in staging/ is a dead deploy's
#   DEPLOY/current        symlink -> releases/ID, replaced with rename(2)
#   DEPLOY/previous       symlink -> the release current pointed to before
#   DEPLOY/lock.json      the deploy lock: created with link(2), so it appears
#                         complete or not at all; its mtime is its heartbeat

RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
LOCK_FILE = "lock.json"
SEQ_FILE = "release.seq"  # the release's place in the order they were made (activate writes it)
MAX_SMALL_JSON = 256 * 1024  # manifest.json and lock.json are read up to this


def _model_io(backend):
    """(input name, declared shape with None for dynamic dims, input dtype, output names)."""
    np = _np()
    if isinstance(backend, OnnxRuntimeBackend):
        ins, outs = backend.sess.get_inputs(), backend.sess.get_outputs()
        shapes = [[d if isinstance(d, int) and d > 0 else None for d in i.shape] for i in ins]
        dtypes = [np.dtype(_ORT_TYPES.get(i.type, "float32")) for i in ins]
        names, out_names = [i.name for i in ins], [o.name for o in outs]
    elif isinstance(backend, LiteRTBackend):  # and the Edge TPU
        ins, outs = backend.interp.get_input_details(), backend.interp.get_output_details()
        shapes = [[int(v) for v in d["shape"]] for d in ins]
        dtypes = [np.dtype(d["dtype"]) for d in ins]
        names, out_names = [d["name"] for d in ins], [d["name"] for d in outs]
    else:
        shapes = [list(d["shape"]) for d in backend.inputs]
        dtypes = [np.dtype(d["dtype"]) for d in backend.inputs]
        names, out_names = [d["name"] for d in backend.inputs], [d["name"] for d in backend.outputs]
    if len(names) != 1:
        raise AgentFailure("bad_args", "run feeds models with one input; this one has %d" % len(names))
    return names[0], shapes[0], dtypes[0], out_names


def _infer(backend, name, x):
    """The outputs of one batch ``x`` through a loaded backend, as numpy arrays."""
    if isinstance(backend, OnnxRuntimeBackend):
        return backend.sess.run(None, {name: x})
    if isinstance(backend, LiteRTBackend):
        it = backend.interp
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
    return _infer_tensorrt(backend, x)


def _infer_tensorrt(b, x):
    """Copy ``x`` to the input buffer, run, copy every output back (NOT RUN on a Jetson yet)."""
    import ctypes
    np = _np()
    eng = b.engine
    names = ([eng.get_tensor_name(i) for i in range(eng.num_io_tensors)] if b.v3
             else [eng.get_binding_name(i) for i in range(eng.num_bindings)])
    x = np.ascontiguousarray(x)
    inputs = set(d["name"] for d in b.inputs)
    for name, ptr in zip(names, b.ptrs):
        if name in inputs:
            b.cuda.cudaMemcpy(ctypes.c_void_p(ptr), x.ctypes.data_as(ctypes.c_void_p),
                              ctypes.c_size_t(x.nbytes), 1)
    b.run()
    outs = []
    for name, ptr in zip(names, b.ptrs):
        if name not in inputs:
            d = [o for o in b.outputs if o["name"] == name][0]
            host = np.empty(d["shape"], np.dtype(d["dtype"]))
            b.cuda.cudaMemcpy(host.ctypes.data_as(ctypes.c_void_p), ctypes.c_void_p(ptr),
                              ctypes.c_size_t(host.nbytes), 2)
            outs.append(host)
    return outs


def run_model(args):
    np = _np()
    model = os.path.abspath(args.model)
    if not os.path.isfile(model):
        raise AgentFailure("bad_model", "model file not found on the board: %s" % model)
    ext = os.path.splitext(model)[1].lower()
    runtime = args.runtime or DEFAULT_RUNTIME.get(ext)
    if runtime not in BACKENDS or FORMAT_OF[runtime] != ext:
        raise AgentFailure("bad_args", "runtime %r cannot run %s files" % (runtime, ext))
    if not args.inputs.endswith(".npy"):
        raise AgentFailure("bad_args", "--inputs must be a .npy file, got %s" % args.inputs)
    try:
        x = np.load(args.inputs, allow_pickle=False)
    except (OSError, IOError, ValueError) as exc:
        raise AgentFailure("bad_args", "cannot read inputs %s: %s" % (args.inputs, str(exc)[:300]))
    backend = BACKENDS[runtime](model, args.threads)
    version = backend.version()
    t0 = time.perf_counter()
    try:
        backend.load()
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure("bad_model", "%s cannot load %s: %s" % (runtime, os.path.basename(model),
                                                                  str(exc).strip()[:2000]))
    load_ms = (time.perf_counter() - t0) * 1000.0
    name, shape, dtype, out_names = _model_io(backend)
    if x.dtype != dtype:
        raise AgentFailure("bad_args", "inputs have dtype %s; the model's input %s takes %s"
                           % (x.dtype, name, dtype))
    if x.ndim != len(shape) or x.ndim == 0 or any(
            s is not None and s != v for s, v in zip(shape[1:], x.shape[1:])):
        raise AgentFailure("bad_args", "inputs have shape %s; the model's input %s takes %s"
                           % (list(x.shape), name, shape))
    batch = shape[0] or len(x)
    if len(x) == 0 or len(x) % batch:
        raise AgentFailure("bad_args", "%d input samples do not split into batches of %d"
                           % (len(x), batch))
    t0 = time.perf_counter()
    parts = [_infer(backend, name, x[i:i + batch]) for i in range(0, len(x), batch)]
    run_ms = (time.perf_counter() - t0) * 1000.0
    outs = []
    for k in range(len(parts[0])):
        arrs = [np.asarray(p[k]) for p in parts]
        if len(arrs) == 1:
            outs.append(arrs[0])
        else:
            outs.append(np.concatenate(arrs) if arrs[0].ndim else np.stack(arrs))
    total = sum(a.nbytes for a in outs)
    described = [{"name": str(n), "dtype": a.dtype.str, "shape": list(a.shape)}
                 for n, a in zip(out_names, outs)]
    outputs_file = None
    if total <= args.inline_max_bytes:
        for d, a in zip(described, outs):
            d["data_b64"] = base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")
    elif not args.out:
        raise AgentFailure("bad_args", "the outputs are %d bytes, more than --inline-max-bytes %d; "
                           "give --out FILE.npz" % (total, args.inline_max_bytes))
    else:
        out = os.path.abspath(args.out)
        tmp = "%s.tmp-%d" % (out, os.getpid())
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **dict(("output_%d" % i, a) for i, a in enumerate(outs)))
            os.rename(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        outputs_file = {"path": out, "bytes": os.path.getsize(out), "sha256": _sha256_file(out)}
    return {
        "runtime": {"name": runtime, "version": version, "providers": getattr(backend, "providers", [])},
        "board": board_facts(),
        "model": {"path": model, "sha256": _sha256_file(model), "bytes": os.path.getsize(model),
                  "inputs": backend.inputs, "outputs": backend.outputs},
        "run": {"samples": len(x), "batches": len(parts), "load_ms": load_ms, "run_ms": run_ms},
        "outputs": described,
        "outputs_file": outputs_file,
    }


def _release_id(rid):
    if not RELEASE_ID.match(rid or ""):
        raise AgentFailure("bad_args", "release id %r is not a plain name (letters, digits, . _ -, "
                           "at most 100)" % (rid,))
    return rid


def _rand():
    return binascii.hexlify(os.urandom(6)).decode("ascii")


def _read_json(path):
    """The JSON object in ``path`` (read up to MAX_SMALL_JSON), or None."""
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(MAX_SMALL_JSON).decode("utf-8"))
    except (OSError, IOError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path):
    """Flush a release to disk before it becomes current: a board can lose power any time."""
    for root, _, files in os.walk(path):
        for f in files:
            fd = os.open(os.path.join(root, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _deploy_root(path, create=False):
    path = os.path.abspath(os.path.expanduser(path))
    if create:
        for sub in ("releases", "staging"):
            if not os.path.islink(os.path.join(path, sub)):
                os.makedirs(os.path.join(path, sub), exist_ok=True)
    if not os.path.isdir(path):
        return None
    root = os.path.realpath(path)
    for sub in ("releases", "staging"):
        p = os.path.join(root, sub)
        if os.path.islink(p):
            raise AgentFailure("bad_args", "%s is a symlink; refused: releases stay inside the "
                               "deploy folder" % p)
    return root


def _inside(root, path):
    parent = os.path.realpath(os.path.dirname(path))
    return parent == root or parent.startswith(root + os.sep)


def _remove(root, path):
    """Remove a file, symlink (never followed) or folder that lies inside the deploy folder."""
    if not _inside(root, path) or os.path.realpath(path) == root:
        raise AgentFailure("bad_args", "refusing to remove %s: outside the deploy folder %s" % (path, root))
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _link_id(root, name):
    """The release id a ``current``/``previous`` symlink points to, or None."""
    try:
        target = os.readlink(os.path.join(root, name))
    except OSError:
        return None
    rid = target[len("releases/"):] if target.startswith("releases/") else ""
    return rid if RELEASE_ID.match(rid) else None


def _swap_link(root, name, target):
    tmp = os.path.join(root, ".%s-%s" % (name, _rand()))
    os.symlink(target, tmp)
    try:
        os.rename(tmp, os.path.join(root, name))  # rename(2): readers see the old or the new link
    except OSError:
        os.unlink(tmp)
        raise


def _read_lock(root):
    """(owner dict, seconds since its last refresh) of the lock, or (None, None)."""
    path = os.path.join(root, LOCK_FILE)
    try:
        mtime = os.lstat(path).st_mtime
    except OSError:
        return None, None
    owner = _read_json(path) or {"token": None, "unreadable": True}
    return owner, max(0.0, time.time() - mtime)


def _need_lock(root, token):
    owner, _ = _read_lock(root)
    if not token or owner is None or owner.get("token") != token:
        held = ("it is held by pid %s on %s" % (owner.get("pid"), owner.get("host"))
                if owner else "nobody holds it")
        raise AgentFailure("lock_lost", "this deploy does not hold the lock of %s (%s)" % (root, held))


def _release_lock(root, args):
    path = os.path.join(root, LOCK_FILE)
    try:
        owner = json.loads(args.owner or "{}")
    except ValueError:
        raise AgentFailure("bad_args", "--owner must be a JSON object")
    if not isinstance(owner, dict) or not args.token:
        raise AgentFailure("bad_args", "lock needs --token and a JSON object --owner")
    owner["token"] = args.token
    data = json.dumps(owner, sort_keys=True).encode("utf-8")
    tmp = os.path.join(root, ".lock-%s.tmp" % _rand())
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # atomic, fails if the lock exists, and never shows a half-written file
        acquired = True
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            acquired = False
        elif exc.errno in (errno.EPERM, errno.EACCES, errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP):
            acquired = _lock_by_create(path, data)  # no hard links here (or SELinux forbids them)
        else:
            raise
    finally:
        os.unlink(tmp)
    if acquired:
        _fsync_dir(root)
        return {"acquired": True, "owner": owner, "age_s": 0.0}
    held, age = _read_lock(root)
    return {"acquired": False, "owner": held, "age_s": age}


def _lock_by_create(path, data):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _release_break(root, args):
    """Remove a stale lock, but only the one the host judged stale (its token)."""
    path = os.path.join(root, LOCK_FILE)
    aside = os.path.join(root, ".lock-broken-%s.json" % _rand())
    try:
        os.rename(path, aside)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return {"broken": False, "owner": None}
        raise
    try:
        owner = _read_json(aside) or {}
        if str(owner.get("token") or "-") != args.token:
            try:
                os.link(aside, path)  # not the stale one: put it back (unless a newer lock exists)
            except OSError:
                pass
            return {"broken": False, "owner": owner}
        return {"broken": True, "owner": owner}
    finally:
        os.unlink(aside)


def _switch_to(root, rid):
    old = _link_id(root, "current")
    if old == rid:
        return {"current": rid, "previous": _link_id(root, "previous"), "changed": False}
    _swap_link(root, "current", "releases/" + rid)
    if old:
        _swap_link(root, "previous", "releases/" + old)
    _fsync_dir(root)
    return {"current": rid, "previous": old or _link_id(root, "previous"), "changed": True}


def _release_dir(root, sub, rid):
    path = os.path.join(root, sub, _release_id(rid))
    if os.path.islink(path) or not os.path.isdir(path):
        raise AgentFailure("bad_release", "release %s not found in %s" % (rid, os.path.join(root, sub)))
    return path


def _seq(root, rid):
    """A release's sequence number (0 for one made before they were recorded)."""
    try:
        with open(os.path.join(root, "releases", rid, SEQ_FILE), "rb") as fh:
            text = fh.read(32).decode("ascii").strip()
    except (OSError, IOError, ValueError):
        return 0
    return int(text) if text.isdigit() else 0


def _ordered(root):
    """The real release folders, oldest first: by recorded sequence number, never by the id's hex part."""
    rels = os.path.join(root, "releases")
    names = [n for n in (os.listdir(rels) if os.path.isdir(rels) else [])
             if RELEASE_ID.match(n) and not os.path.islink(os.path.join(rels, n))
             and os.path.isdir(os.path.join(rels, n))]
    return sorted(names, key=lambda n: (_seq(root, n), n))


def _listing(root):
    rels = os.path.join(root, "releases")
    out = []
    for rid in _ordered(root):
        path = os.path.join(rels, rid)
        size = 0
        for r, _, files in os.walk(path):
            size += sum(os.lstat(os.path.join(r, f)).st_size for f in files)
        manifest = _read_json(os.path.join(path, "manifest.json"))
        out.append({"id": rid, "bytes": size, "manifest": manifest, "seq": _seq(root, rid),
                    "manifest_error": None if manifest else "manifest.json missing or not JSON"})
    owner, age = _read_lock(root)
    return {"releases": out, "current": _link_id(root, "current"),
            "previous": _link_id(root, "previous"),
            "lock": {"owner": owner, "age_s": age} if owner else None}


def _free_bytes(root):
    try:
        st = os.statvfs(root)
        return st.f_bavail * st.f_frsize
    except (OSError, AttributeError):
        return None


def release(args):
    try:
        return _release(args)
    except (OSError, IOError) as exc:  # a full disk, a read-only folder, permissions
        raise AgentFailure("os_error", "%s: %s" % (getattr(exc, "filename", None) or args.folder,
                                                   exc.strerror or exc))


def _release(args):
    act = args.action
    root = _deploy_root(args.folder, create=act == "init")
    if root is None:
        if act == "list":
            return {"action": act, "deploy_dir": os.path.abspath(os.path.expanduser(args.folder)),
                    "exists": False, "releases": [], "current": None, "previous": None, "lock": None}
        raise AgentFailure("bad_args", "deploy folder %s does not exist" % args.folder)
    doc = {"action": act, "deploy_dir": root}
    if act == "init":
        doc.update(current=_link_id(root, "current"), previous=_link_id(root, "previous"),
                   free_bytes=_free_bytes(root))
    elif act == "list":
        doc.update(_listing(root), exists=True)
    elif act == "lock":
        doc.update(_release_lock(root, args))
    elif act == "refresh":
        owner, _ = _read_lock(root)
        held = bool(args.token) and owner is not None and owner.get("token") == args.token
        if held:
            os.utime(os.path.join(root, LOCK_FILE), None)
        doc.update(held=held, owner=owner)
    elif act == "unlock":
        owner, _ = _read_lock(root)
        released = bool(args.token) and owner is not None and owner.get("token") == args.token
        if released:
            os.unlink(os.path.join(root, LOCK_FILE))
        doc.update(released=released)
    elif act == "break":
        doc.update(_release_break(root, args))
    else:
        _need_lock(root, args.token)
        if act == "activate":
            rid = _release_id(args.id)
            src = _release_dir(root, "staging", rid)
            dst = os.path.join(root, "releases", rid)
            if os.path.lexists(dst):
                raise AgentFailure("bad_release", "release %s already exists in %s" % (rid, root))
            seq = max([_seq(root, n) for n in _ordered(root)] or [0]) + 1
            with open(os.path.join(src, SEQ_FILE), "w") as fh:
                fh.write("%d\n" % seq)
            _fsync_tree(src)
            os.rename(src, dst)
            _fsync_dir(os.path.dirname(dst))
            doc.update(_switch_to(root, rid))
        elif act == "switch":
            _release_dir(root, "releases", args.id)
            doc.update(_switch_to(root, args.id))
        elif act == "stage":
            rid = _release_id(args.id)
            if os.path.lexists(os.path.join(root, "releases", rid)):
                raise AgentFailure("bad_release", "release %s already exists in %s" % (rid, root))
            staging = os.path.join(root, "staging")
            doc["removed"] = []
            for name in sorted(os.listdir(staging)):  # under the lock: leftovers of dead deploys
                _remove(root, os.path.join(staging, name))
                doc["removed"].append("%s (staging)" % name)
            os.mkdir(os.path.join(staging, rid))
            doc.update(staging=os.path.join(staging, rid), current=_link_id(root, "current"),
                       previous=_link_id(root, "previous"), free_bytes=_free_bytes(root))
        elif act == "discard":
            path = os.path.join(root, "staging", _release_id(args.id))
            doc["removed"] = os.path.lexists(path)
            if doc["removed"]:
                _remove(root, path)
        elif act == "gc":
            doc.update(_gc(root, max(1, args.keep), args.keep_staging))
    return doc


def _gc(root, keep, keep_staging):
    """Remove staging leftovers and all but the newest ``keep`` releases (never current/previous)."""
    removed = []
    staging = os.path.join(root, "staging")
    for name in sorted(os.listdir(staging)):
        if name != keep_staging:
            _remove(root, os.path.join(staging, name))
            removed.append("%s (staging)" % name)
    rels = os.path.join(root, "releases")
    names = sorted(os.listdir(rels))
    real = _ordered(root)  # oldest first, by sequence number
    kept = set(real[-keep:]) | set([_link_id(root, "current"), _link_id(root, "previous")])
    for name in names:
        if name not in kept:
            _remove(root, os.path.join(rels, name))
            removed.append(name)
    now = time.time()
    for name in os.listdir(root):  # temporaries of killed deploys (lock temps: only old ones)
        path = os.path.join(root, name)
        if name.startswith((".current-", ".previous-")) or (
                name.startswith(".lock-") and now - os.lstat(path).st_mtime > 600):
            _remove(root, path)
    return {"removed": removed, "kept": sorted(k for k in kept if k)}


# --------------------------------------------------------------------------
# entry point


def parse_args(argv):
    p = argparse.ArgumentParser(prog="agent.py", description="edgeprune on-device benchmark agent")
    sub = p.add_subparsers(dest="cmd")
    b = sub.add_parser("bench")
    b.add_argument("model")
    b.add_argument("--runs", type=int, default=100)
    b.add_argument("--warmup", type=int, default=10, help="minimum warm-up runs")
    b.add_argument("--threads", type=int, default=0, help="0 = the runtime's default")
    b.add_argument("--runtime", choices=sorted(BACKENDS), default=None)
    b.add_argument("--profile-ops", action="store_true")
    b.add_argument("--settle", type=float, default=0.02)
    b.add_argument("--max-warmup-s", type=float, default=10.0)
    b.add_argument("--deadline-s", type=int, default=0, help="the kernel ends the agent after this")
    ba = sub.add_parser("batch")
    ba.add_argument("archive")
    ba.add_argument("--runtime", choices=sorted(BACKENDS), default="onnxruntime")
    ba.add_argument("--threads", type=int, default=0, help="0 = the runtime's default")
    ba.add_argument("--rounds", type=int, default=10, help="interleaved rounds over every model")
    ba.add_argument("--runs", type=int, default=5, help="timed runs of a model in each round")
    ba.add_argument("--warmup", type=int, default=5, help="untimed runs of each model first")
    ba.add_argument("--max-s", type=float, default=120.0, help="no new round after this many seconds")
    ba.add_argument("--remove-archive", action="store_true", help="delete the archive once extracted")
    ba.add_argument("--deadline-s", type=int, default=0, help="the kernel ends the agent after this")
    pr = sub.add_parser("probe")
    pr.add_argument("--deadline-s", type=int, default=0)
    sub.add_parser("version")
    r = sub.add_parser("run", help="run a model on given inputs, return its outputs")
    r.add_argument("model")
    r.add_argument("--inputs", required=True, help=".npy file (loaded without pickle)")
    r.add_argument("--runtime", choices=sorted(BACKENDS), default=None)
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--out", default=None, help=".npz file for outputs too big to inline")
    r.add_argument("--inline-max-bytes", type=int, default=1 << 20)
    r.add_argument("--deadline-s", type=int, default=0)
    rl = sub.add_parser("release", help="change or list the deploy folder")
    rl.add_argument("action", choices=["init", "list", "lock", "refresh", "unlock", "break",
                                       "stage", "activate", "switch", "discard", "gc"])
    rl.add_argument("folder")
    rl.add_argument("--token", default="")
    rl.add_argument("--owner", default=None, help="JSON object recorded in the lock")
    rl.add_argument("--id", default="")
    rl.add_argument("--keep", type=int, default=3)
    rl.add_argument("--keep-staging", default=None)
    rl.add_argument("--deadline-s", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd is None:
        p.error("a command is required: bench, batch, probe, run, release or version")
    if args.cmd == "bench" and (args.runs < 1 or args.runs > 100000 or args.warmup < 0):
        p.error("--runs must be 1..100000 and --warmup >= 0")
    if args.cmd == "batch" and not (1 <= args.rounds <= 10 ** 6 and 1 <= args.runs <= 10000
                                    and 0 <= args.warmup <= 10000 and args.max_s > 0):
        p.error("--rounds 1..1e6, --runs 1..10000, --warmup 0..10000, --max-s > 0")
    return args


# The agent's commands (protocol: targets/PROTOCOL.md), by the name the host sends.
COMMANDS = {"bench": bench, "batch": batch, "probe": probe, "run": run_model, "release": release}


def main(argv=None):
    # Keep the real stdout for the JSON; anything a runtime prints goes to stderr.
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    start = time.time()
    doc = {"protocol": PROTOCOL, "agent": {"version": AGENT_VERSION, "python": platform.python_version(),
                                           "executable": sys.executable, "pid": os.getpid()},
           "command": None, "ok": True, "error": None}
    code = 0
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        doc["command"] = args.cmd
        if getattr(args, "deadline_s", 0):
            signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the kernel kills us, even inside C code
            signal.alarm(args.deadline_s)
        doc.update(COMMANDS[args.cmd](args))
    except AgentFailure as exc:
        doc["ok"], code = False, 2
        doc["error"] = {"kind": exc.kind, "message": exc.message, "install": exc.install}
    except SystemExit as exc:  # argparse
        doc["ok"], code = False, 2
        doc["error"] = {"kind": "bad_args", "message": "invalid arguments (exit %s)" % exc.code, "install": None}
    except Exception as exc:
        doc["ok"], code = False, 3
        doc["error"] = {"kind": "internal", "message": "%s: %s" % (type(exc).__name__, str(exc)[:2000]),
                        "install": None, "traceback": traceback.format_exc()[-4000:]}
    doc["elapsed_s"] = time.time() - start
    real_stdout.write(json.dumps(doc, sort_keys=True) + "\n")
    real_stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
