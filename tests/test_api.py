"""The Python API mirrors the CLI: the same pipeline, plain values back, the same errors."""

from __future__ import annotations

import pytest

import edgeprune
from edgeprune.errors import ProfileError


def test_api_runs_prune_export_bench_on_local(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    summary = edgeprune.prune_model("digits-cnn", target="local", ratio=0.3, output=tmp_path / "pruned")
    assert summary["params_after"] < summary["params_before"]
    report = edgeprune.export_model(summary["model"], target="local", output=tmp_path / "export")
    assert report.passed and report.final.format == "onnx" and report.final.precision == "fp32"
    result = edgeprune.bench_model(report.final.path, target="local", runs=20, warmup=2)
    assert result.runtime == "onnxruntime"
    assert 0 < result.latency_ms["min"] <= result.latency_ms["p50"] <= result.latency_ms["p99"]
    names = {m.name for m in edgeprune.list_models()}
    assert {"resnet18", "mobilenetv2", "yolo-small", "digits-cnn"} <= names


def test_api_errors_are_the_cli_errors():
    with pytest.raises(ProfileError, match="did you mean jetson-nano"):
        edgeprune.bench_model("x.onnx", target="jetson-nan")
