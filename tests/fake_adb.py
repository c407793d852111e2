"""A FAKE adb for the tests (no phone or adbd can exist here), and ``phone`` targets that use it.

The fake is a shell script named ``adb``: ``shell`` runs its arguments joined by
spaces with ``sh -c`` (what adbd does with them), ``push``/``pull`` copy files
and folders. The "phone" is this machine. It checks our quoting, upload
protocol, timeouts and the bench/ship/rollback flows through adb, not adb
itself. Two kinds of fake phone:

- :func:`install_fake_phone`: a phone with a Python (Termux): this machine's
  Python is its interpreter and edgeprune's agent runs there;
- :func:`install_fake_bm_phone`: a phone WITHOUT Python, measured with a FAKE
  ``benchmark_model`` (tests/fake_benchmark_model.py) that edgeprune pushes
  from the path in the targets file. FAKE ``getprop``, ``dumpsys`` and
  ``run-as`` stand in for Android's own (first on the fake shell's PATH).

Knobs (environment, read by the fakes at each call): ``FAKE_ADB_STATE``
(what ``get-state`` answers, default ``device``), ``FAKE_ADB_PUSH=fail|corrupt|corrupt-folder``,
``FAKE_ADB_LOG`` (each call's command and first argument appended there),
``FAKE_THERMAL_STATUS`` (0-6, or ``none``: the service does not answer), and
the fake binary's ``FAKE_BM_MODE`` and ``FAKE_BM_CRASH_ON``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.fake_benchmark_model import write_fake_benchmark_model

FAKE_ADB = """#!/bin/sh
# FAKE adb for edgeprune's tests: not a phone.
[ "$1" = "-s" ] && shift 2
[ -n "$FAKE_ADB_LOG" ] && printf '%s\n' "$1 $2" >> "$FAKE_ADB_LOG"
case "$1" in
  get-state) echo "${FAKE_ADB_STATE:-device}"; [ "${FAKE_ADB_STATE:-device}" = device ] ;;
  shell) shift; exec sh -c "$*" ;;
  push)
    if [ "$FAKE_ADB_PUSH" = fail ]; then
      echo "adb: error: failed to copy '$2' to '$3': remote couldn't create file: No space left on device" >&2
      exit 1
    fi
    cp -r "$2" "$3" || exit 1
    if [ "$FAKE_ADB_PUSH" = corrupt ] && [ -f "$3" ]; then printf 'X' >> "$3"; fi
    if [ "$FAKE_ADB_PUSH" = corrupt-folder ] && [ -d "$3" ]; then printf 'X' >> "$3/m0000.tflite"; fi
    echo "$2: 1 file pushed, 0 skipped."
    ;;
  pull) cp "$2" "$3" ;;
  *) echo "fake adb: unsupported $1" >&2; exit 1 ;;
esac
"""

# FAKE getprop: the values of a Pixel 8 (what the real one prints for these keys), from a file a test may edit.
FAKE_GETPROP = """#!/bin/sh
# FAKE getprop for edgeprune's tests: not Android's.
grep -m1 "^$1=" "$FAKE_PHONE_PROPS" 2>/dev/null | cut -d= -f2-
"""

PROPS = {
    "ro.product.model": "Pixel 8", "ro.product.manufacturer": "Google", "ro.soc.manufacturer": "Google",
    "ro.soc.model": "Tensor G3", "ro.board.platform": "zuma", "ro.hardware": "shiba",
    "ro.build.version.release": "14", "ro.build.version.sdk": "34", "ro.product.cpu.abi": "arm64-v8a",
    "ro.serialno": "FAKE8PIXEL0001", "ro.build.fingerprint": "google/shiba/shiba:14/FAKE/1:user/release-keys",
}

# FAKE dumpsys: `dumpsys thermalservice` in the format Android 10+ prints it.
FAKE_DUMPSYS = """#!/bin/sh
# FAKE dumpsys for edgeprune's tests: not Android's.
if [ "$1" != thermalservice ] || [ "${FAKE_THERMAL_STATUS:-0}" = none ]; then
  echo "Can't find service: $1"; exit 0
fi
cat <<EOF
IsStatusOverride: false
ThermalEventListeners:
	callbacks: 1
	killed: false
	broadcasts count: -1
ThermalStatusListeners:
	callbacks: 1
	killed: false
	broadcasts count: -1
Thermal Status: ${FAKE_THERMAL_STATUS:-0}
Cached temperatures:
	Temperature{mValue=31.5, mType=2, mName=battery, mStatus=0}
HAL Ready: true
HAL connection:
	ThermalHAL AIDL 1  connected: yes
Current temperatures from HAL:
	Temperature{mValue=41.2, mType=0, mName=BIG, mStatus=${FAKE_THERMAL_STATUS:-0}}
	Temperature{mValue=33.0, mType=3, mName=skin, mStatus=0}
	Temperature{mValue=31.5, mType=2, mName=battery, mStatus=0}
Current cooling devices from HAL:
	CoolingDevice{mValue=0, mType=2, mName=battery}
EOF
"""

# FAKE run-as: runs the command as "the app" in its data folder, for the packages under $FAKE_APPS.
FAKE_RUN_AS = """#!/bin/sh
# FAKE run-as for edgeprune's tests: not Android's.
pkg=$1; shift
if [ ! -d "$FAKE_APPS/$pkg" ]; then echo "run-as: package not debuggable: $pkg" >&2; exit 1; fi
cd "$FAKE_APPS/$pkg" && exec "$@"
"""


def _bin(tmp_path: Path, monkeypatch, *, android: bool) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    tools = {"adb": FAKE_ADB}
    if android:
        tools.update(getprop=FAKE_GETPROP, dumpsys=FAKE_DUMPSYS, **{"run-as": FAKE_RUN_AS})
    for name, text in tools.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return bindir


def _targets(tmp_path: Path, monkeypatch, name: str, lines: list[str]) -> Path:
    targets = tmp_path / "targets.toml"
    targets.write_text("\n".join([f"[{name}]", *lines]) + "\n")
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(targets))
    return targets


def install_fake_phone(tmp_path: Path, monkeypatch, *, workdir: Path, deploy_dir: Path | None = None) -> Path:
    """Put the fake ``adb`` first on PATH and a targets file with ``phone`` (pixel-8 profile, a Termux
    Python) in ``EDGEPRUNE_TARGETS``; returns ``tmp_path``."""
    _bin(tmp_path, monkeypatch, android=False)
    lines = ['profile = "pixel-8"', 'host = "FAKE123"', f'workdir = "{workdir}"']
    if deploy_dir is not None:
        lines.append(f'deploy_dir = "{deploy_dir}"')
    lines.append(f'python = "{sys.executable}"')
    _targets(tmp_path, monkeypatch, "phone", lines)
    return tmp_path


def install_fake_bm_phone(tmp_path: Path, monkeypatch, *, profile: str = "pixel-8", name: str = "phone",
                          delegate: str | None = None, run_as: str | None = None,
                          binary: bool = True) -> Path:
    """A FAKE phone WITHOUT Python: the fake adb, getprop, dumpsys and run-as on PATH, the FAKE
    benchmark_model at ``tmp_path/host/benchmark_model`` named in the targets file (``binary=False``:
    not named), the phone's folders under ``tmp_path/data-local-tmp``, apps under ``tmp_path/apps``
    (``run_as``'s folder is made). Returns ``tmp_path``."""
    _bin(tmp_path, monkeypatch, android=True)
    props = tmp_path / "phone-props"
    props.write_text("".join(f"{k}={v}\n" for k, v in PROPS.items()))
    monkeypatch.setenv("FAKE_PHONE_PROPS", str(props))
    monkeypatch.setenv("FAKE_APPS", str(tmp_path / "apps"))
    monkeypatch.setenv("FAKE_BM_LOG", str(tmp_path / "bm.log"))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # litert-cli's cache is looked for under ~/.cache
    for var in ("FAKE_BM_MODE", "FAKE_BM_CRASH_ON", "FAKE_ADB_STATE", "FAKE_ADB_PUSH", "FAKE_THERMAL_STATUS"):
        monkeypatch.delenv(var, raising=False)
    bm = write_fake_benchmark_model(tmp_path / "host" / "benchmark_model")
    root = tmp_path / "data-local-tmp"
    lines = [f'profile = "{profile}"', 'host = "FAKE8PIXEL0001"', f'workdir = "{root / "edgeprune"}"',
             f'deploy_dir = "{root / "edgeprune-deploy"}"']
    if binary:
        lines.append(f'benchmark_model = "{bm}"')
    if delegate:
        lines.append(f'delegate = "{delegate}"')
    if run_as:
        (tmp_path / "apps" / run_as / "files").mkdir(parents=True)
        lines = [x for x in lines if not x.startswith("deploy_dir")] + [f'run_as = "{run_as}"']
    _targets(tmp_path, monkeypatch, name, lines)
    return tmp_path
