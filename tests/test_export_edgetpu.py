"""Coral: the Edge TPU compiler step, its report parsed into the JSON, and the message when it is absent.

The real edgetpu_compiler cannot be installed here (x86-64 Linux from
Google's apt repository only, no network), so a FAKE compiler -- a shell
script named ``edgetpu_compiler`` put first on PATH -- stands in for it. It
prints the real compiler's report format (as published in Coral's docs and
in users' logs) and copies its input to ``<stem>_edgetpu.tflite``. The INT8
model it is handed is real: made by onnx2tf + TFLiteConverter and checked.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from edgeprune.export.edgetpu import INSTALL_HINT, parse_report

REAL_FORMAT_REPORT = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 231 ms.

Input model: model.int8.tflite
Input size: 3.03KiB
Output model: out/model.int8_edgetpu.tflite
Output size: 296.85KiB
On-chip memory used for caching model parameters: 10.00KiB
On-chip memory remaining for caching model parameters: 7.73MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 3
Operation log: out/model.int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 1
Number of operations that will run on CPU: 2

Operator                       Count      Status

DEPTHWISE_CONV_2D              1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
"""


def test_parse_report_sizes_counts_and_op_table():
    r = parse_report(REAL_FORMAT_REPORT)
    assert r["compiler_version"] == "16.0.384591198"
    assert r["compiled"] is True and r["compile_ms"] == 231.0
    assert r["on_chip_used_bytes"] == 10 * 1024
    assert r["on_chip_remaining_bytes"] == round(7.73 * 1024 * 1024)
    assert r["off_chip_used_bytes"] == 0
    assert r["subgraphs"] == 1 and r["total_ops"] == 3
    assert r["ops_on_tpu"] == 1 and r["ops_on_cpu"] == 2
    assert r["mapped_ops"] == 1 and r["unmapped_ops"] == 2
    assert {o["op"]: o["mapped"] for o in r["ops"]} == {
        "DEPTHWISE_CONV_2D": True, "DEQUANTIZE": False, "QUANTIZE": False}
    assert r["ops"][1]["status"] == "Operation is working on an unsupported data type"


def test_parse_report_off_chip_streaming():
    text = REAL_FORMAT_REPORT.replace(
        "Off-chip memory used for streaming uncached model parameters: 0.00B",
        "Off-chip memory used for streaming uncached model parameters: 64.00MiB")
    assert parse_report(text)["off_chip_used_bytes"] == 64 * 1024 * 1024


FAKE = r"""#!/bin/sh
# FAKE edgetpu_compiler for edgeprune's tests: prints the real compiler's
# report format and copies the model; it compiles nothing.
out=.
while [ $# -gt 1 ]; do
  case "$1" in
    -o|--out_dir) out="$2"; shift 2;;
    -s|--show_operations) shift;;
    *) shift;;
  esac
done
model="$1"
stem=$(basename "$model" .tflite)
cp "$model" "$out/${stem}_edgetpu.tflite"
cat <<EOF
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: $model
Input size: 97.44KiB
Output model: $out/${stem}_edgetpu.tflite
Output size: 180.02KiB
On-chip memory used for caching model parameters: 96.50KiB
On-chip memory remaining for caching model parameters: 7.60MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 9
Operation log: $out/${stem}_edgetpu.log

Operator                       Count      Status

CONV_2D                        3          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
RESHAPE                        1          Mapped to Edge TPU
QUANTIZE                       1          Mapped to Edge TPU
DEQUANTIZE                     1          Operation is working on an unsupported data type
MEAN                           1          More than one subgraph is not supported
EOF
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    exe = bindir / "edgetpu_compiler"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return exe


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("torch")
    from edgeprune.load import load_model

    return load_model("digits-cnn")


def test_coral_export_runs_compiler_and_reports_memory_and_ops(digits, tmp_path, fake_compiler):
    from edgeprune.api import export_model as export

    report = export(digits, target="coral-usb", output=tmp_path / "out")
    int8 = next(a for a in report.artifacts if a.step == "tflite int8")
    compiled = report.final
    assert compiled.step == "edgetpu compile" and compiled.path.name == "digits-cnn.int8_edgetpu.tflite"
    assert compiled.path.is_file() and int8.final is False
    tpu = compiled.extra["edgetpu"]
    assert tpu["on_chip_used_bytes"] == round(96.5 * 1024)
    assert tpu["off_chip_used_bytes"] == 0
    assert tpu["mapped_ops"] == 7 and tpu["unmapped_ops"] == 2
    assert int8.agreement["top1"] >= 0.95  # the int8 model handed to the compiler was verified
    data = json.loads((tmp_path / "out" / "export.json").read_text())
    assert data["artifacts"][-1]["extra"]["edgetpu"]["ops"][0] == {
        "op": "CONV_2D", "count": 3, "status": "Mapped to Edge TPU", "mapped": True}
    assert not report.notes


def test_coral_without_compiler_still_makes_int8_and_says_how(digits, tmp_path, monkeypatch):
    from edgeprune.api import export_model as export

    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler anywhere
    report = export(digits, target="coral-dev-board", output=tmp_path / "out")
    assert report.final.step == "tflite int8" and report.final.path.is_file()
    assert report.notes == [INSTALL_HINT]
    assert "apt-get install edgetpu-compiler" in INSTALL_HINT and "x86-64" in INSTALL_HINT
    assert report.final.extra["edgetpu"]["compiled"] is False
