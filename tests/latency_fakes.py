"""For the latency tests: a small CNN factory, and a FAKE board whose latencies come from a formula.

The fake board stands in for hardware we cannot have in a test: a board
whose timings are exactly reproducible. Its "agent" reads each ONNX model it
is given (the real files edgeprune built and exported) and returns a p50
computed from the model's convolutions: a staircase (output channels cost in
blocks of ``block``), a per-call cost, and, for whole models, a graph factor
and a per-node cost that the layer table does not see, which the closed
loop must calibrate away. Everything else (micro-models, export, pruning,
the loop) is real.
"""

from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from edgeprune.bench.batch import BatchResult, BatchTiming


class SmallCNN(nn.Module):
    """Stem (protected) -> three prunable convs -> pool -> Linear: a table of ~30 micro-models."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(ci, co, s):
            return [nn.Conv2d(ci, co, 3, s, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(3, 32, 1), *block(32, 64, 2), *block(64, 64, 1), *block(64, 128, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def small_cnn() -> nn.Module:
    """Factory for ``--model tests.latency_fakes:small_cnn`` (seeded weights)."""
    import torch

    torch.manual_seed(0)
    return SmallCNN().eval()


class FakeFormulaBoard:
    """A FAKE board (no hardware): deterministic latencies from each ONNX model's layers."""

    def __init__(self, *, block: int = 32, per_call_ms: float = 0.02, graph_factor: float = 1.25,
                 per_node_ms: float = 0.004, board_id: str = "fake-board-1",
                 slower_after_first_visit: float = 1.0, area_factor: dict[int, float] | None = None,
                 plan_noise: dict[int, float] | None = None, flat_plans: dict[int, float] | None = None,
                 round_noise: float = 0.0, busy_cores: dict[int, float] | None = None,
                 cpu_quota: float | None = None, quota_alias: float = 0.0,
                 report_means: bool = True) -> None:
        self.block, self.per_call, self.graph_factor, self.per_node = block, per_call_ms, graph_factor, per_node_ms
        self.board_id = board_id
        self.slower = slower_after_first_visit  # a board that gets busier/hotter after the first visit
        # in a whole model, a conv whose input has this many pixels costs this factor times its cost alone
        # (a layer alone is not a layer in a graph: layout reorders, weights hot in cache)
        self.area_factor = dict(area_factor or {})
        self.visits = 0
        self.models_seen = 0
        # noise, keyed by the n-th measurement of a "plan" (1 = round 1's first batch), all deterministic:
        self.plan_noise = dict(plan_noise or {})  # the plan's p50 times this factor (noise hitting one round)
        self.flat_plans = dict(flat_plans or {})  # the plan measures unpruned / this, whatever it is (flat pair)
        self.busy = dict(busy_cores or {})  # other processes' busy cores the agent reports in that batch
        self.round_noise = round_noise  # per interleaved round, the plan/unpruned medians scatter this much
        self.quota = cpu_quota  # the board's CPU quota (CPUs, period 100 ms), as the agent reports it
        # under that quota, a round's MEAN is the formula's time / quota (what the board sustains), and its
        # MEDIAN aliases with the period: the unpruned model's runs straddle throttled periods (its median
        # is this much over its sustained time), the plan's do not (its median is the free run time)
        self.quota_alias = quota_alias
        self.report_means = report_means  # False: an older agent, medians only
        self.plan_batches = 0
        self.runs_seen: list[int] = []  # runs per timed round of every batch with a plan

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def conv_ms(self, cin: int, cout: int, k: int, groups: int, out_hw: int) -> float:
        blocks = math.ceil(cout / self.block) * self.block
        return 2e-6 * out_hw * blocks * (cin // groups) * k * k

    def latency(self, path: Path) -> float:
        import onnx
        from onnx import numpy_helper, shape_inference

        model = shape_inference.infer_shapes(onnx.load(str(path)))
        g = model.graph
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in list(g.value_info) + list(g.output) + list(g.input)}
        inits = {i.name: numpy_helper.to_array(i).shape for i in g.initializer}
        ms, nodes, whole = 0.0, 0, len(g.node) > 1
        for n in g.node:
            nodes += 1
            if n.op_type == "Conv":
                cout, cin_g, k, _ = inits[n.input[1]]
                groups = next((a.i for a in n.attribute if a.name == "group"), 1)
                out, inp = shapes[n.output[0]], shapes[n.input[0]]
                f = self.area_factor.get(inp[2] * inp[3], 1.0) if whole else 1.0
                ms += f * self.conv_ms(cin_g * groups, cout, k, groups, out[2] * out[3])
            elif n.op_type == "Gemm":
                cout, cin = inits[n.input[1]]
                ms += self.conv_ms(cin, cout, 1, 1, 1)
        if nodes > 1:  # a whole model: what a lone layer does not show
            ms = ms * self.graph_factor + self.per_node * nodes
        return ms + self.per_call

    def measure(self, models, *, settings=None, baseline=None, runtime=None) -> BatchResult:
        import numpy as np

        self.visits += 1
        self.models_seen += len(models)
        n_plan = 0
        if "plan" in models:
            self.plan_batches += 1
            n_plan = self.plan_batches
            self.runs_seen.append(settings.runs if settings is not None else 0)
        rounds = settings.rounds if settings is not None else 1
        rng = np.random.default_rng(1000 + self.visits)
        p50s = {key: self.per_call + (self.latency(Path(path)) - self.per_call) * (self.slower if self.visits > 1 else 1)
                for key, path in models.items()}
        if n_plan in self.flat_plans:
            p50s["plan"] = p50s["unpruned"] / self.flat_plans[n_plan]
        if n_plan in self.plan_noise:
            p50s["plan"] *= self.plan_noise[n_plan]
        timings = {}
        for key, p50 in p50s.items():
            per_round = [p50] * rounds
            if self.round_noise and key == "plan":
                per_round = list(p50 * (1.0 + self.round_noise * rng.uniform(-1, 1, rounds)))
            means = []
            if self.quota is not None:
                means = [v / self.quota for v in per_round]
                if self.quota_alias and key != "plan":
                    per_round = [v * (1.0 + self.quota_alias) for v in means]
                    p50 = per_round[0]
            timings[key] = BatchTiming(name=key, ok=True, p50_ms=p50, min_ms=p50, p10_ms=p50, p90_ms=p50,
                                       spread=0.0, n=10, rounds_ms=per_round,
                                       rounds_mean_ms=means if self.report_means else [])
        base = BatchTiming(name="baseline", ok=True, p50_ms=self.per_call, min_ms=self.per_call,
                           p10_ms=self.per_call, p90_ms=self.per_call, spread=0.0, n=10)
        board = {"id": self.board_id}
        if self.quota is not None:
            board.update(cpu_quota=self.quota, cpu_quota_period_ms=100.0)
        return BatchResult(target="fake", runtime="fake-formula", runtime_version="1", board=board,
                           timings=timings, baseline=base, rounds_done=rounds, complete=True, throttled=None,
                           throttle_reasons=[], other_busy_cores=self.busy.get(n_plan, 0.0), measure_s=0.0)

    def identity(self, result=None) -> dict:
        return {"board_id": self.board_id, "host_key": None, "transport": "fake", "runtime": "fake-formula",
                "runtime_version": "1", "threads": 0, "cpu_quota": self.quota}
