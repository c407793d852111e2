"""The Coral Edge TPU compiler: run it when installed, parse its report into plain values.

``edgetpu_compiler -s -o OUT model.tflite`` writes ``model_edgetpu.tflite``
and prints a report like::

    Edge TPU Compiler version 16.0.384591198
    Model compiled successfully in 231 ms.
    Input model: model.tflite
    Input size: 3.03KiB
    Output model: model_edgetpu.tflite
    Output size: 296.85KiB
    On-chip memory used for caching model parameters: 10.00KiB
    On-chip memory remaining for caching model parameters: 7.73MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 3
    Operation log: model_edgetpu.log
    ...
    Number of operations that will run on Edge TPU: 1
    Number of operations that will run on CPU: 2
    Operator                       Count      Status
    DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
    DEQUANTIZE                     1          Operation is working on an unsupported data type

:func:`parse_report` turns that into a dict (sizes in bytes, the op table
with mapped / not-mapped counts). The compiler exists only for x86-64
Linux, from Google's Coral apt repository; when it is absent the INT8
model is still produced and :data:`INSTALL_HINT` says how to get it.
Compiled models run only with libedgetpu on a Coral board, so they are not
run here.

Example::

    report = compile_edgetpu(Path("m.int8.tflite"), Path("out/"))   # None if not installed
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgeprune.errors import ExportError

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    "edgetpu_compiler is not installed, so the INT8 model was not compiled for the Edge TPU. "
    "It runs on x86-64 Linux only, from Google's Coral apt repository: "
    "echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' | "
    "sudo tee /etc/apt/sources.list.d/coral-edgetpu.list; "
    "curl https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add -; "
    "sudo apt-get update && sudo apt-get install edgetpu-compiler; "
    "then run: edgetpu_compiler -s -o OUT_DIR MODEL.int8.tflite"
)

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_KEYS = {
    "Input size": "input_size_bytes",
    "Output size": "output_size_bytes",
    "On-chip memory used for caching model parameters": "on_chip_used_bytes",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining_bytes",
    "On-chip memory available for caching model parameters": "on_chip_available_bytes",
    "Off-chip memory used for streaming uncached model parameters": "off_chip_used_bytes",
}
_INT_KEYS = {
    "Number of Edge TPU subgraphs": "subgraphs",
    "Total number of operations": "total_ops",
    "Number of operations that will run on Edge TPU": "ops_on_tpu",
    "Number of operations that will run on CPU": "ops_on_cpu",
}
_STR_KEYS = {"Input model": "input_model", "Output model": "output_model", "Operation log": "operation_log"}
_OP_ROW = re.compile(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$")


def _bytes(text: str) -> int | None:
    m = re.match(r"\s*([\d.]+)\s*([KMG]?i?B)\s*$", text)
    if not m:
        return None
    return int(round(float(m.group(1)) * _UNITS.get(m.group(2), 1)))


def parse_report(text: str) -> dict[str, Any]:
    """The compiler's stdout as a dict; ``ops`` is a list of {op, count, status, mapped}."""
    out: dict[str, Any] = {"ops": []}
    m = re.search(r"Edge TPU Compiler version (\S+)", text)
    if m:
        out["compiler_version"] = m.group(1)
    m = re.search(r"Model compiled successfully in ([\d.]+) ?ms", text)
    out["compiled"] = bool(m)
    if m:
        out["compile_ms"] = float(m.group(1))
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and key in _SIZE_KEYS:
            out[_SIZE_KEYS[key]] = _bytes(value)
        elif sep and key in _INT_KEYS and value.isdigit():
            out[_INT_KEYS[key]] = int(value)
        elif sep and key in _STR_KEYS:
            out[_STR_KEYS[key]] = value
        else:
            row = _OP_ROW.match(line.strip())
            if row and row.group(1) != "Operator":
                status = row.group(3)
                out["ops"].append({"op": row.group(1), "count": int(row.group(2)), "status": status,
                                   "mapped": status.startswith("Mapped to Edge TPU")})
    if out["ops"]:
        out["mapped_ops"] = sum(o["count"] for o in out["ops"] if o["mapped"])
        out["unmapped_ops"] = sum(o["count"] for o in out["ops"] if not o["mapped"])
    elif "total_ops" in out and "ops_on_cpu" not in out and out.get("compiled"):
        out["mapped_ops"], out["unmapped_ops"] = out["total_ops"], 0  # all mapped: no table printed
    return out


def compiler_path() -> str | None:
    return shutil.which(COMPILER)


def compile_edgetpu(tflite: Path, out_dir: Path, *, timeout: float = 600) -> dict[str, Any] | None:
    """Compile ``tflite`` for the Edge TPU into ``out_dir``; None when the compiler is absent.

    The returned dict is :func:`parse_report`'s plus ``path`` (the compiled file).
    """
    exe = compiler_path()
    if exe is None:
        return None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(tflite)], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ExportError(f"edgetpu_compiler did not finish on {tflite} within {timeout:.0f} s") from None
    report = parse_report(proc.stdout + "\n" + proc.stderr)
    compiled = out_dir / f"{Path(tflite).stem}_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        tail = " ".join((proc.stdout + " " + proc.stderr).split())[-400:]
        raise ExportError(f"edgetpu_compiler failed on {tflite} (exit {proc.returncode}): {tail}")
    report["path"] = str(compiled)
    return report
