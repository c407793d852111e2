"""The latency model's plain-value stages: table lookup, cache, estimate, calibration, allocation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeprune.boards.profiles import load_profile
from edgeprune.latency.allocate import allocate
from edgeprune.latency.estimate import RooflineEstimate
from edgeprune.latency.layers import Layer, LayerShape, candidate_counts
from edgeprune.latency.predict import Calibration, Predictor
from edgeprune.latency.table import LatencyTable, cache_path, interp_staircase, load_cached

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


def test_two_close_rounds_do_not_send_the_extrapolation_far_under():
    """Rounds 1 and 2 both a few % over, close together: their segment's slope is mostly noise. Extrapolated
    as it is, it asked for a plan 40 % under the budget (seen on resnet18-fmnist: rounds at 1.05, 1.01,
    then 0.62 x budget); bounded by the nearest point's ratio, the next plan lands near the budget."""
    cal = Calibration(base_ms=0.1)
    truth = lambda t: 0.1 + t  # noqa: E731  the board: 1 ms per table ms
    cal.add(10.0, truth(10.0))  # the unpruned model
    cal.add(5.0, 5.2)  # round 1: 4 % over what the board does on average
    cal.add(4.8, 5.16)  # round 2: a smaller plan, only 0.04 ms faster (slope 0.2: noise)
    target = 0.95 * 5.0
    # the plan the allocation would pick: the largest table sum predicted under the target
    t_plan = max(t for t in np.linspace(0.5, 4.8, 431) if cal(t) <= target)
    assert truth(t_plan) / 5.0 > 0.85  # unbounded, the segment's line asked for t = 2.75 (0.57 x budget)
    assert truth(t_plan) <= 5.0


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


def _two_resolutions():
    """a (3 -> A) at 32x32, b (A -> B) at 32x32 stride 2, c (B -> C) at 16x16, d (C -> 10) at 16x16."""
    def mk(ci, co, hw, s=1):
        return LayerShape("conv", ci, co, (3, 3), (s, s), (1, 1), hw=(hw, hw))

    layers = [
        Layer("a", mk(3, 64, 32), "A", (), 3),
        Layer("b", mk(64, 64, 32, 2), "B", (("A", 1, 64),), 0),
        Layer("c", mk(64, 128, 16), "C", (("B", 1, 64),), 0),
        Layer("d", mk(128, 10, 16), None, (("C", 1, 128),), 0),
    ]
    space = {g: candidate_counts(n, multiple=8) for g, n in (("A", 64), ("B", 64), ("C", 128))}
    return layers, space


def test_stages_split_by_resolution_and_each_gets_a_probe():
    from edgeprune.latency.predict import stage_probes, stages_of

    layers, space = _two_resolutions()
    stages, info = stages_of(layers)
    assert stages == {"a": 0, "b": 0, "c": 1, "d": 1}
    assert [s["input_px"] for s in info] == [[32], [16]]
    assert sum(s["macs_share"] for s in info) == pytest.approx(1.0, abs=1e-3)
    probes = stage_probes(layers, space, stages, len(info))
    # each probe takes the groups its stage produces to their smallest candidate, the rest stay whole
    assert probes == {0: {"A": space["A"][0], "B": space["B"][0]}, 1: {"C": space["C"][0]}}


def test_a_small_resolution_joins_its_neighbour():
    from edgeprune.latency.predict import stages_of

    layers, _ = _two_resolutions()
    tiny = Layer("fc", LayerShape("linear", 128, 10, hw=(1, 1)), None, (("C", 1, 128),), 0)
    stages, info = stages_of([*layers, tiny])
    assert stages["fc"] == stages["d"] and len(info) == 2  # a Linear's few MACs are no stage of their own


def test_stage_scales_recover_what_a_layer_costs_in_the_graph():
    """Whole models where the 32 px layers cost 0.5x and the 16 px ones 2x their table entries: the fit on
    the unpruned model and one probe per stage finds both, and the prediction follows the board."""
    from edgeprune.latency.predict import fit_stage_scales, stage_probes, stages_of

    layers, space = _two_resolutions()
    pred = Predictor(layers, FakeCosts(), calibration=Calibration(base_ms=0.05))
    stages, info = stages_of(layers)
    true = [0.5, 2.0]

    def board(keep):  # a FAKE board: its whole-model latency from the per-stage truth
        return 0.05 + sum(s * t for s, t in zip(true, pred.stage_sums(keep, stages, 2), strict=True))

    full = {g: c[-1] for g, c in space.items()}
    rows = [(pred.stage_sums(full, stages, 2), board(full))]
    for keep in stage_probes(layers, space, stages, len(info)).values():
        rows.append((pred.stage_sums({**full, **keep}, stages, 2), board({**full, **keep})))
    scales = fit_stage_scales(rows, 0.05)
    assert scales == pytest.approx(true, rel=0.05)
    single = (board(full) - 0.05) / sum(rows[0][0])
    pred.set_layer_scale({n: scales[k] / single for n, k in stages.items()})
    pred.calibration.add(pred.table_ms(full), board(full))
    plan = {"A": 64, "B": 64, "C": 32}  # only the expensive 16 px stage cut
    assert pred.predict(plan) == pytest.approx(board(plan), rel=0.03)
    one_scale = Predictor(layers, FakeCosts(), calibration=Calibration(base_ms=0.05))
    one_scale.calibration.add(one_scale.table_ms(full), board(full))
    assert abs(one_scale.predict(plan) / board(plan) - 1) > 0.15  # what one scale gets wrong


def test_stage_fit_uses_only_the_probes_the_board_ran():
    """A probe the board failed to run (or did not send back) drops out of the fit; the stages keep one
    scale rather than fitting on an error's zero time."""
    from types import SimpleNamespace

    from edgeprune.latency.predict import StageFit

    layers, space = _two_resolutions()
    sf = StageFit.plan(layers, space)
    assert sorted(sf.probes) == [0, 1] and sf.probe_name(1) == "probe1"
    ok = SimpleNamespace(ok=True, p50_ms=1.5)
    failed = SimpleNamespace(ok=False, p50_ms=0.0, error="out of memory")
    assert sf.measured({"unpruned": ok, "probe0": ok, "probe1": failed}) == {0: 1.5}
    assert sf.measured({"unpruned": ok}) == {}
    pred = Predictor(layers, FakeCosts(), calibration=Calibration(base_ms=0.05))
    full = {g: c[-1] for g, c in space.items()}
    assert sf.apply(pred, full, sf.measured({"unpruned": ok}), 2.0, 0.05) is False
    assert "scale" not in sf.info[0] and sf.info[0]["probe_groups"] == 2
