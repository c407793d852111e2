"""The latency model's plain-value stages: table lookup, cache, estimate, calibration, allocation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeprune.latency.allocate import allocate
from edgeprune.latency.estimate import RooflineEstimate
from edgeprune.latency.layers import Layer, LayerShape, candidate_counts
from edgeprune.latency.predict import Calibration, Predictor
from edgeprune.latency.table import LatencyTable, cache_path, interp_staircase, load_cached
from edgeprune.profiles import load_profile

IDENT = {"board_id": "b0a4", "host_key": "ssh-ed25519 SHA256:abc", "transport": "ssh",
         "runtime": "onnxruntime", "runtime_version": "1.31.1", "threads": 1, "cpu_quota": None}


def test_interpolation_never_crosses_a_cliff():
    flat = [(16, 1.0), (32, 2.0), (64, 4.0)]
    assert interp_staircase(flat, 32) == (2.0, "exact")
    assert interp_staircase(flat, 48) == (3.0, "interpolated")
    cliff = [(16, 1.0), (32, 2.0), (64, 8.0)]  # cost per channel doubles between 32 and 64
    assert interp_staircase(cliff, 48) == (8.0, "step")
    assert interp_staircase(flat, 8)[1] == interp_staircase(flat, 128)[1] == "scaled"


def _staircase_ms(cin: int, cout: int) -> float:
    """A synthetic board: output channels cost in blocks of 32 (the staircase), input channels linearly,
    plus a little per-output-channel traffic."""
    return 0.002 * cin * 32 * math.ceil(cout / 32) + 0.01 * cout


def _measure_like_the_builder(table: LatencyTable, base: LayerShape, couts: list[int], cins: list[int]):
    for co in couts:  # every candidate output count at the full input count
        s = base.with_channels(base.cin, co)
        table.add(s, p50_ms=_staircase_ms(s.cin, co) + 0.01, min_ms=0.0, spread=0.0, n=10, baseline_ms=0.01)
    for co in (couts[0], couts[-1]):  # a few input counts at the smallest and the full output count
        for ci in cins:
            s = base.with_channels(ci, co)
            table.add(s, p50_ms=_staircase_ms(ci, co) + 0.01, min_ms=0.0, spread=0.0, n=10,
                      baseline_ms=0.01)


def test_table_lookup_follows_the_staircase_between_measured_points():
    base = LayerShape("conv", 128, 128, (3, 3), (1, 1), (1, 1), hw=(28, 28))
    table = LatencyTable(IDENT, fmt="onnx", precision="fp32")
    couts = candidate_counts(128, multiple=16)
    _measure_like_the_builder(table, base, couts, [32, 64, 96, 128])
    # every (cin, cout) a plan can pick, most never measured as such: within 3 % of the truth
    for ci in candidate_counts(128, multiple=16):
        for co in couts:
            truth = _staircase_ms(ci, co)
            assert table.lookup(base.with_channels(ci, co)) == pytest.approx(truth, rel=0.03), (ci, co)
    assert table.stats.get("profile", 0) > 0 and table.stats.get("scaled", 0) == 0
    # the output axis is measured at every aligned step: 48 -> 64 is a flat stair, 64 -> 80 a cliff
    t = {co: table.lookup(base.with_channels(128, co)) for co in (48, 64, 80)}
    assert t[80] - t[64] > 10 * (t[64] - t[48])


def test_table_json_roundtrip_identity_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    base = LayerShape("conv", 64, 64, (1, 1), hw=(14, 14))
    table = LatencyTable(IDENT, fmt="onnx", precision="fp32")
    _measure_like_the_builder(table, base, [16, 32, 48, 64], [16, 64])
    path = table.save(cache_path(table))
    again = load_cached(IDENT, fmt="onnx", precision="fp32")
    assert again.entries == table.entries and again.key == table.key
    assert again.lookup(base.with_channels(32, 48)) == table.lookup(base.with_channels(32, 48))
    # a second model with a layer of the same shape needs nothing new
    assert again.missing([base.with_channels(64, 32), base.with_channels(16, 16)]) == []
    # another runtime version, host key, precision or thread count is another table
    for change in ({"runtime_version": "1.32.0"}, {"host_key": "ssh-ed25519 SHA256:zzz"}, {"threads": 4}):
        assert not load_cached({**IDENT, **change}, fmt="onnx", precision="fp32").entries
    assert not load_cached(IDENT, fmt="onnx", precision="int8").entries
    # the address is not part of the key at all
    assert "addr" not in json.dumps(table.key) and "10.200" not in path.name
    path.write_text("{ damaged")
    assert not load_cached(IDENT, fmt="onnx", precision="fp32").entries


def test_roofline_estimate_is_labelled_and_monotone():
    est = RooflineEstimate(load_profile("raspberry-pi-5"), "int8")
    small = est.lookup(LayerShape("conv", 32, 32, (3, 3), padding=(1, 1), hw=(56, 56)))
    big = est.lookup(LayerShape("conv", 64, 64, (3, 3), padding=(1, 1), hw=(56, 56)))
    assert 0 < small < big and est.source == "estimate" and "estimate" in est.describe()
    # 64x64x3x3 at 56x56 = 115.6 M MACs at 153.6 GOPS: 1.5 ms, compute bound
    assert big == pytest.approx(2 * 64 * 64 * 9 * 56 * 56 / 153.6e9 * 1e3, rel=1e-6)
    no_int8 = RooflineEstimate(load_profile("jetson-nano"), "int8")
    assert any("assumed" in n for n in no_int8.notes)


def test_calibration_one_point_and_many():
    cal = Calibration(base_ms=0.1)
    assert cal(2.0) == pytest.approx(2.1)  # uncalibrated: table + per-call cost
    cal.add(4.0, 6.1)  # the whole model measures 1.5x its layers
    assert cal(4.0) == pytest.approx(6.1) and cal(2.0) == pytest.approx(0.1 + 3.0)
    cal.add(2.0, 2.6)
    assert cal(2.0) == pytest.approx(2.6) and cal(3.0) == pytest.approx(4.35)
    assert cal(1.0) == pytest.approx(2.6 - 1.75)  # outside: the nearest segment's line
    cal.add(3.0, 7.0)  # noise: a smaller plan measured slower; the fit stays monotone
    values = [cal(t) for t in np.linspace(1.0, 5.0, 41)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:], strict=False))


class FakeCosts:
    """A fake board's layer costs from a formula (no hardware): a cliff after every 32 outputs."""

    source = "fake"

    def lookup(self, shape: LayerShape) -> float:
        return _staircase_ms(shape.cin, shape.cout) * shape.hw[0] * shape.hw[1] / 784


def _chain():
    """conv a (3 -> A) -> conv b (A -> B) -> conv c (B -> 64, protected), each 28x28."""
    mk = lambda ci, co: LayerShape("conv", ci, co, (3, 3), (1, 1), (1, 1), hw=(28, 28))  # noqa: E731
    layers = [
        Layer("a", mk(3, 128), "A", (), 3),
        Layer("b", mk(128, 128), "B", (("A", 1, 128),), 0),
        Layer("c", mk(128, 64), None, (("B", 1, 128),), 0),
    ]
    space = {"A": candidate_counts(128, multiple=16), "B": candidate_counts(128, multiple=16)}
    return layers, space


def test_allocation_meets_the_budget_and_keeps_the_important_group():
    layers, space = _chain()
    pred = Predictor(layers, FakeCosts())
    full = pred.predict({"A": 128, "B": 128})
    flat = {"A": np.ones(128) / 128, "B": np.ones(128) / 128}
    skewed = {"A": np.ones(128) / 128, "B": np.r_[np.full(64, 0.9 / 64), np.full(64, 0.1 / 64)]}
    for budget in (0.9 * full, 0.7 * full, 0.5 * full):
        a = allocate(space, flat, pred, budget)
        assert a.feasible and a.predicted_ms <= budget and a.predicted_ms == pred.predict(a.keep)
        assert all(a.keep[g] in space[g] for g in space)
        # group B's last 64 channels carry little: it gives them first
        b = allocate(space, skewed, pred, budget)
        assert b.keep["B"] <= a.keep["B"] and b.importance_kept >= a.importance_kept - 1e-9
    assert allocate(space, flat, pred, 2 * full).keep == {"A": 128, "B": 128}


def test_allocation_jumps_flat_stairs():
    """Inside a block of 32 outputs, removing 16 channels saves nothing: the greedy must not stop
    there, and must not waste importance on a flat step when the next step saves time."""
    layers, space = _chain()
    pred = Predictor(layers, FakeCosts())
    scores = {g: np.ones(128) / 128 for g in space}
    a = allocate(space, scores, pred, 0.8 * pred.predict({"A": 128, "B": 128}))
    # never rest on the upper half of a 32-block where the lower half costs the same:
    # keeping 112 or 80 costs what 128 or 96 cost, so the fill pass takes them back
    assert all(k % 32 == 0 for k in a.keep.values()), a.keep


def test_infeasible_budget_says_so_with_the_fastest_plan():
    layers, space = _chain()
    pred = Predictor(layers, FakeCosts())
    scores = {g: np.ones(128) / 128 for g in space}
    a = allocate(space, scores, pred, 0.01)
    assert not a.feasible and a.keep == {"A": 32, "B": 32}
    assert a.fastest_ms == pytest.approx(pred.predict({"A": 32, "B": 32})) == a.predicted_ms
