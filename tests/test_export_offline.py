"""Conversion runs with the network unavailable.

onnx2tf downloads a calibration file for every 3-channel 4-D input, even for
fp32 (FACTS.md); edgeprune hands it its own samples. These tests run a
3-channel model through ONNX -> TFLite full INT8 in a child process where
the network is gone: (1) every socket connect/DNS lookup raises, (2) when
permitted (root), inside a fresh network namespace with ``unshare -n``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("onnx2tf")
pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]

NO_NET = """
import socket
def _refuse(*a, **k):
    raise OSError("network disabled by edgeprune's offline test")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""

CONVERT = """
import json, sys
import torch
from torch import nn
from edgeprune.models import LoadedModel
from edgeprune.api import export_model as export

torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                    nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)).eval()
lm = LoadedModel(module=net, input_shape=(1, 3, 32, 32), name="tiny3ch", source="test", task="classify")
r = export(lm, target="raspberry-pi-5", output=sys.argv[1], calib_count=32, verify_count=16)
print("RESULT", json.dumps({"step": r.final.step, "cosine": r.final.agreement["cosine"]}))
"""


def _run(cmd_prefix, tmp_path, body):
    script = tmp_path / "convert_offline.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TF_CPP_MIN_LOG_LEVEL": "3", "HTTP_PROXY": "", "HTTPS_PROXY": ""}
    return subprocess.run([*cmd_prefix, sys.executable, str(script), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)


def _result(proc) -> dict:
    import json

    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_tflite_int8_conversion_with_sockets_refused(tmp_path):
    res = _result(_run([], tmp_path, NO_NET + CONVERT))
    assert res["step"] == "tflite int8" and res["cosine"] > 0.99


def test_unpatched_onnx2tf_would_need_the_network(tmp_path):
    """Control: onnx2tf's own sample download fails here, so the patch is what makes conversion work."""
    body = NO_NET + """
import onnx2tf.onnx2tf as o
try:
    o.download_test_image_data()
except BaseException as exc:
    print("RESULT", '{"failed": true}')
else:
    print("RESULT", '{"failed": false}')
"""
    assert _result(_run([], tmp_path, body)) == {"failed": True}


def test_tflite_int8_conversion_in_empty_network_namespace(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) not installed")
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no permission to create a network namespace (needs root)")
    res = _result(_run([unshare, "-n"], tmp_path, CONVERT))
    assert res["step"] == "tflite int8" and res["cosine"] > 0.99
