"""Measuring models on boards: the agent's result (:mod:`.result`) and the runner (:mod:`.runner`).

Example::

    from edgeprune.bench import BenchSettings, bench_target
    from edgeprune.boards.reach import resolve_target

    r = bench_target(resolve_target("local"), "model.onnx", settings=BenchSettings(runs=50))
    r.latency_ms["p50"]
"""

from edgeprune.bench.result import BenchResult, parse_agent_output
from edgeprune.bench.runner import BenchSettings, bench_many, bench_target

__all__ = ["BenchResult", "BenchSettings", "bench_many", "bench_target", "parse_agent_output"]
