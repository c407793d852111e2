"""The host reads the agent's output as untrusted input."""

from __future__ import annotations

import json

import pytest

from edgeprune.bench.result import MAX_OUTPUT_BYTES, BenchResult, parse_agent_output
from edgeprune.errors import AgentError


def good_doc(**over):
    doc = {
        "protocol": 1,
        "ok": True,
        "error": None,
        "command": "bench",
        "agent": {"version": "1.0.0"},
        "runtime": {"name": "onnxruntime", "version": "1.31.1", "providers": []},
        "board": {"id": "abc", "hostname": "pi", "machine": "aarch64", "cpu_model": "Cortex-A76"},
        "model": {"sha256": "0" * 64, "path": "/x"},
        "settings": {"runs": 3},
        "timing": {
            "load_ms": 5.0,
            "first_inference_ms": 2.0,
            "warmup_runs": 10,
            "warmup_settled": True,
        },
        "latency_ms": {
            "n": 3,
            "min": 1.0,
            "mean": 1.5,
            "std": 0.1,
            "p50": 1.4,
            "p90": 1.8,
            "p99": 1.9,
            "max": 2.0,
        },
        "memory": {"peak_rss_mb": 80.0},
        "op_profile": None,
        "throttle": {"throttled": False, "reasons": []},
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_good_document_parses():
    r = parse_agent_output(good_doc(), target="pi")
    assert isinstance(r, BenchResult) and r.latency_ms["p50"] == 1.4 and r.throttled is False
    assert set(r.to_dict()) >= {"latency_ms", "runtime", "board", "throttled"}


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"", "printed nothing"),
        (b"Segmentation fault\n\x00\xff", "not the agent's JSON"),
        (b"[1, 2]", "not an object"),
        (b"[" * 100000, "not the agent's JSON"),
        (good_doc(protocol=99), "protocol 99"),
        (
            good_doc(
                latency_ms={
                    "n": 3,
                    "min": 1,
                    "mean": 1,
                    "std": 0,
                    "p50": "fast",
                    "p90": 1,
                    "p99": 1,
                }
            ),
            "latency_ms.p50",
        ),
        (
            good_doc(
                latency_ms={"n": 3, "min": -1, "mean": 1, "std": 0, "p50": 1, "p90": 1, "p99": 1}
            ),
            "out of range",
        ),
        (
            good_doc(
                latency_ms={"n": 3, "min": 1, "mean": 1, "std": 0, "p50": 5, "p90": 2, "p99": 3}
            ),
            "not ordered",
        ),
        (b'{"protocol": 1, "ok": true, "latency_ms": {"n": 3, "min": NaN}}', "expected a number"),
        (good_doc(throttle={"throttled": "maybe", "reasons": []}), "throttled"),
        (good_doc(runtime="onnxruntime"), "'runtime' must be an object"),
    ],
)
def test_bad_output_is_refused_with_one_line(payload, words):
    with pytest.raises(AgentError) as exc:
        parse_agent_output(payload, target="pi")
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_huge_output_is_refused_before_parsing():
    with pytest.raises(AgentError, match="over the"):
        parse_agent_output(b" " * (MAX_OUTPUT_BYTES + 1), target="pi")


def test_agent_error_carries_the_install_hint():
    doc = good_doc(
        ok=False,
        error={
            "kind": "missing_runtime",
            "message": "ONNX Runtime is not installed",
            "install": "pip install onnxruntime",
        },
    )
    with pytest.raises(AgentError, match="install on the board: pip install onnxruntime"):
        parse_agent_output(doc, target="pi")


def test_bracket_bomb_is_refused_even_with_a_raised_recursion_limit():
    # onnx2tf raises the recursion limit to 2**31 - 1 on import; json's C decoder
    # would then overflow the C stack (a segfault) on deeply nested input.
    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(2**31 - 1)
    try:
        with pytest.raises(AgentError, match="nested deeper"):
            parse_agent_output(b"[" * 1_000_000, target="pi")
    finally:
        sys.setrecursionlimit(old)
