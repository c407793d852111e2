"""Device profiles: one data file per board, validated on load.

A profile is a TOML (or YAML) file in ``device_profiles/`` (shipped) or in a
folder the user names, either with ``$EDGEPRUNE_PROFILES`` (folders joined by
``:``) or with ``profiles_dirs = ["..."]`` in the config file
(``$EDGEPRUNE_CONFIG``, default ``~/.config/edgeprune/config.toml``). A user
profile with the name of a shipped one replaces it.

Each profile records the CPU, the accelerator, peak throughput per precision,
memory size and bandwidth, supported precisions, the default runtime and
export format and precision, the channel alignment, how the board is reached,
the Python version of its stock OS image, and the source of every figure.
The schema is :data:`SCHEMA`; every load checks it and an error names the
file, the key and what is expected.

The ``local`` profile is this machine: its figures say ``"measure"`` and are
measured the first time they are needed (:mod:`edgeprune.boards.probe`), then cached.

Example::

    >>> p = load_profile("raspberry-pi-5")
    >>> p.runtime, p.export_format, p.export_precision, p.alignment("int8")
    ('litert', 'tflite', 'int8', 8)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgeprune._paths import config_file, data_dir
from edgeprune.boards.config import read_config
from edgeprune.boards.probe import probe_local
from edgeprune.errors import ProfileError, did_you_mean

# Lazy imports: the imports inside functions below load yaml, which importing this module does not;
# they load only when a function that needs them runs.

PRECISIONS = ("fp32", "fp16", "int8")
RUNTIMES = ("onnxruntime", "litert", "tensorrt", "edgetpu")
FORMATS = ("onnx", "tflite")
TRANSPORTS = ("local", "ssh", "adb")
ACCELERATORS = ("none", "gpu", "npu", "tpu", "dsp")
PROFILE_SUFFIXES = (".toml", ".yaml", ".yml")

MEASURE = "measure"  # a figure the local probe measures instead of a datasheet


class _Num:
    """A non-negative number, or ``"measure"`` where ``allow_measure``."""

    def __init__(self, *, allow_measure: bool = False, positive: bool = True) -> None:
        self.allow_measure = allow_measure
        self.positive = positive

    def describe(self) -> str:
        s = "a positive number" if self.positive else "a number"
        return s + (' or "measure"' if self.allow_measure else "")

    def check(self, value: Any) -> bool:
        if self.allow_measure and value == MEASURE:
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return value > 0 if self.positive else True


class _Int(_Num):
    def describe(self) -> str:
        return "a positive integer" + (' or "measure"' if self.allow_measure else "")

    def check(self, value: Any) -> bool:
        if self.allow_measure and value == MEASURE:
            return True
        return isinstance(value, int) and not isinstance(value, bool) and value > 0


class _Str:
    def __init__(self, choices: tuple[str, ...] | None = None) -> None:
        self.choices = choices

    def describe(self) -> str:
        return f"one of {', '.join(self.choices)}" if self.choices else "a string"

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and (self.choices is None or value in self.choices)


class _List:
    def __init__(self, item: _Str) -> None:
        self.item = item

    def describe(self) -> str:
        return f"a non-empty list, each {self.item.describe()}"

    def check(self, value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(self.item.check(v) for v in value)


# key -> (validator or nested schema, required). "source" keys say where figures come from.
SCHEMA: dict[str, Any] = {
    "schema": (_Int(), True),
    "name": (_Str(), True),
    "title": (_Str(), True),
    "notes": (_Str(), False),
    "fake": (_Str(), False),
    "cpu": (
        {
            "model": (_Str(), True),
            "cores": (_Int(allow_measure=True), True),
            "max_ghz": (_Num(allow_measure=True), True),
            "source": (_Str(), True),
        },
        True,
    ),
    "accelerator": (
        {
            "kind": (_Str(ACCELERATORS), True),
            "model": (_Str(), True),
            "source": (_Str(), True),
        },
        True,
    ),
    # Peak throughput per precision of the unit that runs the model by default:
    # GFLOPS for fp32/fp16, GOPS for int8. Absent = no public figure.
    "peak": (
        {
            "unit": (_Str(("cpu", "gpu", "npu", "tpu", "dsp")), True),
            "fp32_gflops": (_Num(allow_measure=True), False),
            "fp16_gflops": (_Num(allow_measure=True), False),
            "int8_gops": (_Num(allow_measure=True), False),
            "source": (_Str(), True),
        },
        True,
    ),
    "memory": (
        {
            "size_gb": (_Num(allow_measure=True), True),
            "bandwidth_gbps": (_Num(allow_measure=True), False),
            "source": (_Str(), True),
        },
        True,
    ),
    "runtime": (
        {
            "default": (_Str(RUNTIMES), True),
            "supported": (_List(_Str(RUNTIMES)), True),
            "precisions": (_List(_Str(PRECISIONS)), True),
            "source": (_Str(), True),
        },
        True,
    ),
    "export": (
        {
            "format": (_Str(FORMATS), True),
            "precision": (_Str(PRECISIONS), True),
            "io_precision": (_Str(("float32", "int8", "uint8")), False),
            "compiler": (_Str(), False),
            "refuse_int8": (_Str(), False),
        },
        True,
    ),
    "alignment": (
        {
            "channels": (_Int(), True),
            "fp16": (_Int(), False),
            "int8": (_Int(), False),
            "source": (_Str(), True),
        },
        True,
    ),
    # Phones measured with LiteRT's benchmark_model (edgeprune.bench.phone): the delegate it runs
    # with unless --delegate or the targets file's `delegate` says otherwise.
    "delegate": (
        {
            "default": (_Str(("cpu", "gpu", "nnapi", "external")), True),
            "threads": (_Int(), False),
            "external_path": (_Str(), False),
            "external_options": (_Str(), False),
            "source": (_Str(), True),
        },
        False,
    ),
    "reach": (
        {
            "transport": (_Str(TRANSPORTS), True),
            "python": (_Str(), False),
            "workdir": (_Str(), False),
            "deploy_dir": (_Str(), False),
            "notes": (_Str(), False),
        },
        True,
    ),
}


@dataclass(frozen=True)
class Profile:
    """A validated board profile. ``data`` is the file's content as loaded."""

    name: str
    path: Path
    data: dict[str, Any] = field(repr=False)

    # -- the figures other stages use -------------------------------------
    @property
    def title(self) -> str:
        return self.data["title"]

    @property
    def runtime(self) -> str:
        return self.data["runtime"]["default"]

    @property
    def runtimes(self) -> list[str]:
        return list(self.data["runtime"]["supported"])

    @property
    def precisions(self) -> list[str]:
        return list(self.data["runtime"]["precisions"])

    @property
    def export_format(self) -> str:
        return self.data["export"]["format"]

    @property
    def export_precision(self) -> str:
        return self.data["export"]["precision"]

    @property
    def transport(self) -> str:
        return self.data["reach"]["transport"]

    @property
    def python(self) -> str | None:
        return self.data["reach"].get("python")

    @property
    def is_fake(self) -> bool:
        return "fake" in self.data

    def alignment(self, precision: str | None = None) -> int:
        """Channel multiple that kept counts round to, for ``precision``."""
        al = self.data["alignment"]
        return int(al.get(precision, al["channels"])) if precision else int(al["channels"])

    def peak(self, precision: str = "fp32") -> float | None:
        """Peak throughput (GFLOPS, or GOPS for int8); measured for ``local``."""
        key = "int8_gops" if precision == "int8" else f"{precision}_gflops"
        value = self.data["peak"].get(key)
        if value == MEASURE:
            return probe_local()["fp32_gflops"]
        return None if value is None else float(value)

    def bandwidth_gbps(self) -> float | None:
        """Memory bandwidth in GB/s (None where no public figure exists)."""
        value = self.data["memory"].get("bandwidth_gbps")
        if value is None:
            return None
        if value == MEASURE:
            return probe_local()["copy_gbps"]
        return float(value)

    @property
    def measured(self) -> bool:
        """True when some figures come from the local probe, not a datasheet."""
        return any(
            v == MEASURE
            for sec in self.data.values()
            if isinstance(sec, dict)
            for v in sec.values()
        )

    def resolved(self) -> dict[str, Any]:
        """The profile's data with every ``"measure"`` replaced by the measured figure."""
        out = copy.deepcopy(self.data)
        if not self.measured:
            return out

        probe = probe_local()
        fills = {
            ("cpu", "cores"): probe["cores"],
            ("cpu", "max_ghz"): probe.get("max_ghz"),
            ("peak", "fp32_gflops"): probe["fp32_gflops"],
            ("memory", "bandwidth_gbps"): probe["copy_gbps"],
            ("memory", "size_gb"): probe["memory_gb"],
        }
        for (sec, key), value in fills.items():
            if out.get(sec, {}).get(key) == MEASURE:
                out[sec][key] = value
                out[sec]["source"] = f"measured on this machine by edgeprune's probe ({probe['when']})"
        out["cpu"]["model"] = probe.get("cpu_model") or out["cpu"]["model"]
        return out


# -- loading -----------------------------------------------------------------

def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.strerror}") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ProfileError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a table of keys, got {type(data).__name__}")
    return data


def _validate(data: dict[str, Any], schema: dict[str, Any], path: Path, prefix: str = "") -> None:
    for key in data:
        if key not in schema:
            near = did_you_mean(key, schema, n=1, cutoff=0.6, quote=True, prefix=prefix)
            hint = f" ({near})" if near else f" (known keys: {', '.join(schema)})"
            raise ProfileError(f"{path}: unknown key '{prefix}{key}'{hint}")
    for key, (spec, required) in schema.items():
        full = f"{prefix}{key}"
        if key not in data:
            if required:
                raise ProfileError(f"{path}: missing key '{full}'")
            continue
        value = data[key]
        if isinstance(spec, dict):
            if not isinstance(value, dict):
                raise ProfileError(f"{path}: key '{full}': expected a table, got {value!r}")
            _validate(value, spec, path, prefix=f"{full}.")
        elif not spec.check(value):
            raise ProfileError(f"{path}: key '{full}': expected {spec.describe()}, got {value!r}")


def _check_consistency(data: dict[str, Any], path: Path) -> None:
    rt = data["runtime"]
    if rt["default"] not in rt["supported"]:
        raise ProfileError(f"{path}: key 'runtime.default': '{rt['default']}' is not in runtime.supported")
    prec = data["export"]["precision"]
    if prec not in rt["precisions"]:
        raise ProfileError(f"{path}: key 'export.precision': '{prec}' is not in runtime.precisions")
    if data["schema"] != 1:
        raise ProfileError(f"{path}: key 'schema': this edgeprune reads schema 1, got {data['schema']}")


def load_profile_file(path: str | os.PathLike[str]) -> Profile:
    """Load and validate one profile file. The file's stem must equal its ``name``."""
    path = Path(path)
    data = _parse(path)
    _validate(data, SCHEMA, path)
    _check_consistency(data, path)
    if data["name"] != path.stem:
        raise ProfileError(f"{path}: key 'name': '{data['name']}' must match the file name '{path.stem}'")
    return Profile(name=data["name"], path=path, data=data)


def profile_dirs() -> list[Path]:
    """Folders searched for profiles, shipped first (later ones override)."""
    dirs = [data_dir("device_profiles")]
    cfg = config_file()
    if cfg.is_file():
        dirs += [Path(d).expanduser() for d in read_config().get("profiles_dirs", [])]
    env = os.environ.get("EDGEPRUNE_PROFILES")
    if env:
        dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return dirs


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if not d.is_dir():
            raise ProfileError(f"{d}: profiles folder does not exist (from $EDGEPRUNE_PROFILES or profiles_dirs)")
        for f in sorted(d.iterdir()):
            if f.suffix in PROFILE_SUFFIXES and not f.name.startswith("."):
                found[f.stem] = f
    return found


def list_profiles() -> list[Profile]:
    """Every known profile, validated (a malformed one raises, naming its file)."""
    return [load_profile_file(p) for _, p in sorted(_profile_files().items())]


def load_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name suggests the nearest ones.

    Example::

        load_profile("jetson-nano").export_precision   # 'fp16'
    """
    files = _profile_files()
    if name in files:
        return load_profile_file(files[name])
    hint = did_you_mean(name, files, n=3, cutoff=0.4) or "see `edgeprune targets list`"
    raise ProfileError(f"unknown target '{name}': {hint}")
