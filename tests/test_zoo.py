"""Models users bring (tests/zoo): each block type prunes, or is protected with a reason, never a traceback.

For every zoo model at 30 % and 50 % through ``prune_model`` (the API of
``edgeprune prune``; kept counts aligned to 8, as raspberry-pi-5 asks): the
pruned model, loaded back from its ``.ept``, runs, keeps its output shapes, has
fewer MACs, passes the surgery check (``prune_`` verifies that it computes
what the original computes with the removed channels zeroed, LayerNorm over
channels compared on the kept channels: see edgeprune/prune/check.py), and
its ONNX export matches PyTorch (``max_abs <= 1e-4 * max(1, max|output|)``).
Then one test per block type checks what was pruned and what was kept whole.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402

from edgeprune.errors import PruneError  # noqa: E402
from edgeprune.export.onnx import run_onnx  # noqa: E402
from edgeprune.prune import ChannelPlan, example_input, make_prunable, prunable_groups, prune_  # noqa: E402
from tests.zoo import ZOO, build  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _outs(model, x):
    from edgeprune.checks.outputs import flatten

    with torch.no_grad():
        return [o.clone() for o in flatten(model(x))]


def _pruned(name, ratio, align=8):
    shape = ZOO[name][1]
    model = build(name)
    x = example_input(shape)
    groups = prunable_groups(model, x, include_protected=True)
    plan = ChannelPlan.uniform(groups, ratio, align=align, input_shape=shape, base=ZOO[name][0])
    prune_(model, plan)
    return model, plan, groups, x


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_prunes_runs_and_exports(name, ratio, tmp_path):
    """Through ``prune_model`` (``edgeprune prune``), aligned for raspberry-pi-5 (8)."""
    from edgeprune.api import prune_model
    from edgeprune.load import load_model

    spec, shape = ZOO[name]
    base = build(name)
    x = example_input(shape)
    before = [o.shape for o in _outs(base, x)]
    summary = prune_model(spec, target="raspberry-pi-5", ratio=ratio, input_shape=shape, output=tmp_path)
    assert summary["groups_pruned"], f"{name}: nothing pruned"
    assert all(e["reason"] and e["groups"] for e in summary["protected"])
    assert summary["macs_after"] < summary["macs_before"] * (0.95 if ratio == 0.3 else 0.85), summary
    assert summary["onnx_check"]["passed"]
    model = load_model(summary["model"], trust_factory=spec).module
    ref = _outs(model, x)
    assert [o.shape for o in ref] == before
    onnx_out = run_onnx(tmp_path / "model.onnx", x.numpy())  # the test's own ONNX Runtime run of prune's file
    scale = max(1.0, max(float(r.abs().max()) for r in ref))
    err = max(float(np.abs(r.numpy() - o).max()) for r, o in zip(ref, onnx_out, strict=True))
    assert err <= 1e-4 * scale, (err, scale)


def test_ghost_modules_prune_their_primary_and_cheap_convs_together():
    """cat([primary, cheap(primary)])[:, :oup]: each primary channel takes its cheap twin with it."""
    model, plan, groups, x = _pruned("ghostnet", 0.5)
    ghost = [g for g in groups if g.id.endswith("ghost1.primary_conv.0")]
    assert ghost and all(g.prunable for g in ghost)
    assert all(plan.keep[g.id] < g.channels for g in ghost if g.channels >= 16)  # 8 is the alignment
    mod = model.blocks[1][0].ghost1
    kept = mod.primary_conv[0].out_channels
    assert mod.cheap_operation[0].out_channels == kept == mod.cheap_operation[0].groups
    assert model.blocks[1][0].conv_dw.in_channels == 2 * kept


def test_attention_heads_are_kept_whole_with_a_reason_and_the_mlps_prune():
    model, plan, groups, _ = _pruned("vit", 0.5)
    by_id = {g.id: g for g in groups}
    qkv = [g for g in groups if any(layer.endswith("attn.qkv") for layer in g.layers)]
    assert qkv and not any(g.prunable for g in qkv)
    assert all("reshape" in g.reason for g in qkv), [g.reason for g in qkv]
    for i in range(4):
        fc1 = by_id[f"blocks.{i}.mlp.fc1"]
        assert fc1.prunable and plan.keep[fc1.id] == fc1.channels // 2
        assert model.blocks[i].mlp.fc2.in_features == fc1.channels // 2
        assert model.blocks[i].attn.qkv.out_features == 3 * 96  # untouched


def test_convnext_layernorm_and_layer_scale_prune_with_their_channels():
    model, plan, groups, x = _pruned("convnext", 0.5)
    by_id = {g.id: g for g in groups}
    stage = by_id["downsample_layers.1.1"]  # stage 2's residual stream: LayerNorms, gamma, dwconv
    assert stage.prunable and plan.keep[stage.id] == 32
    block = model.stages[1][0]
    assert block.dwconv.out_channels == 32 and block.norm.normalized_shape == (32,)
    assert block.gamma.shape == (32,) and block.pwconv1.in_features == 32
    assert model.downsample_layers[2][0].weight.shape == (32,)  # channels-first LayerNorm by hand
    assert block.pwconv1.out_features == 128  # its own group: 4 x 64, halved
    assert not by_id["downsample_layers.0.0"].prunable  # the stem


def test_convnext_surgery_check_still_catches_a_wrong_cut(monkeypatch):
    """A LayerNorm group is compared on its kept channels; a wrong cut there must still fail."""
    import copy

    import edgeprune.prune.apply as apply_mod
    from edgeprune.prune.check import check_surgery

    shape = ZOO["convnext"][1]
    model = build("convnext")
    x = example_input(shape)
    plan = ChannelPlan.from_keep(prunable_groups(model, x), {"downsample_layers.1.1": 32}, input_shape=shape)
    seen = {}

    def spy(reference, pruned, removed, xx, **kw):
        seen.update(reference=copy.deepcopy(reference), removed=removed, kw=kw)
        return check_surgery(reference, pruned, removed, xx, **kw)

    monkeypatch.setattr(apply_mod, "check_surgery", spy)
    prune_(model, plan)
    assert seen["kw"].get("normalised"), "the group's LayerNorms were not compared on kept channels"
    with torch.no_grad():  # swap two kept channels of one LayerNorm: a cut in the wrong place
        w = model.stages[1][0].norm.weight
        w[[0, 1]] = w[[1, 0]] + 0.5
    with pytest.raises(PruneError, match="differs from the original"):
        check_surgery(seen["reference"], model, seen["removed"], x, **seen["kw"])


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n"])
def test_ultralytics_style_rewrite_keeps_what_the_forward_loop_reads(name):
    model = build(name)
    x = example_input(ZOO[name][1])
    before = _outs(model, x)
    attrs = {n: (type(m), m.i, m.f, m.type, m.np) for n, m in model.named_modules() if hasattr(m, "f")}
    done = make_prunable(model, x)
    assert done, "no C2f/C3k2 block rewritten"
    for n in done:
        m = model.get_submodule(n)
        cls, i, f, t, np_ = attrs[n]
        assert isinstance(m, cls) and (m.i, m.f, m.type, m.np) == (i, f, t, np_)
        assert type(m).__name__ == cls.__name__
    for a, b in zip(before, _outs(model, x), strict=True):
        assert torch.equal(a, b)


def test_yolo11_psa_attention_is_kept_whole_and_the_rest_prunes():
    model, plan, groups, x = _pruned("yolo11n", 0.5)
    by_id = {g.id: g for g in groups}
    psa = [g for g in groups if any(layer.startswith(("model.10.m.0.attn.", "model.10.cv1")) for layer in g.layers)]
    assert psa and not any(g.prunable for g in psa)  # attention and the split feeding it: kept whole
    assert all(("split" in g.reason or "reshape" in g.reason) for g in psa), [g.reason for g in psa]
    ffn = by_id["model.10.m.0.ffn.0.conv"]  # the PSA block's feed-forward hidden layer is an ordinary group
    assert ffn.prunable and model.model[10].m[0].ffn[0].conv.out_channels == plan.keep[ffn.id] < ffn.channels
    pruned = [gid for gid in plan.pruned_groups() if gid.startswith(("model.2.", "model.4.", "model.13."))]
    assert pruned
    y, raw = model(x)
    assert y.shape == (1, 84, 336) and [r.shape[1] for r in raw] == [144, 144, 144]


def test_regnet_grouped_convs_that_the_alignment_cannot_cut_say_why():
    from edgeprune.prune.groups import kept_whole

    shape = ZOO["regnet"][1]
    model = build("regnet")
    x = example_input(shape)
    groups = prunable_groups(model, x, include_protected=True)
    grouped = [g for g in groups if g.slices > 1]
    assert grouped
    plan = ChannelPlan.uniform(groups, 0.5, align=16, input_shape=shape)
    whole = kept_whole(groups, plan)
    reasons = {gid: e["reason"] for e in whole for gid in e["groups"]}
    stuck = [g for g in grouped if plan.keep[g.id] == g.channels]
    assert stuck, "every grouped-conv group was cut: the test needs one the alignment blocks"
    for g in stuck:
        assert "conv groups" in reasons[g.id] and "16" in reasons[g.id], reasons[g.id]
    # without board alignment the grouped convs prune: same positions from every conv group
    plan1 = ChannelPlan.uniform(groups, 0.5, align=1, input_shape=shape)
    assert all(plan1.keep[g.id] < g.channels for g in grouped)
    prune_(model, plan1)
    conv = model.trunk_output.block2.block1.f.b[0]
    assert conv.groups == 13 and conv.out_channels == 52


@pytest.mark.parametrize(
    "name,block", [("mobilenetv3", "features.4.block"), ("efficientnet", "features.5.0.block")]
)
def test_squeeze_excitation_prunes_with_the_channels_it_gates(name, block):
    model, plan, groups, _ = _pruned(name, 0.5)
    owner = {layer: g for g in groups for layer in g.layers}
    squeeze = owner[f"{block}.2.fc1"]  # fc1 -> act -> fc2: its own group
    gated = owner[f"{block}.2.fc2"]  # fc2's outputs gate the expanded channels: one group with them
    assert f"{block}.0.0" in gated.layers and f"{block}.1.0" in gated.layers
    for g in (squeeze, gated):
        assert g.prunable and plan.keep[g.id] < g.channels
    se = model.get_submodule(f"{block}.2")
    assert se.fc2.out_channels == plan.keep[gated.id] and se.fc1.out_channels == plan.keep[squeeze.id]


def test_protected_note_is_one_line_naming_layers_and_reasons():
    from edgeprune.prune.groups import kept_whole, protected_note

    shape = ZOO["vit"][1]
    model = build("vit")
    groups = prunable_groups(model, example_input(shape), include_protected=True)
    plan = ChannelPlan.uniform(groups, 0.5, align=8, input_shape=shape)
    whole = kept_whole(groups, plan)
    assert all(set(e) >= {"layers", "reason", "groups"} for e in whole)
    note = protected_note(whole)
    assert "\n" not in note and "blocks.0.attn.qkv" in note and "reshape" in note


def test_prune_cli_says_in_one_line_what_it_kept_whole_and_writes_it_to_summary(capsys, tmp_path, monkeypatch):
    import json

    from edgeprune.cli import main

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    with pytest.raises(SystemExit) as exc:
        main(["prune", "-t", "raspberry-pi-5", "-m", ZOO["vit"][0], "--input-shape", "1,3,64,64",
              "--ratio", "0.5", "-o", str(tmp_path)])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    lines = [line for line in out.out.splitlines() if "kept whole" in line]
    assert len(lines) == 1 and "blocks.0.attn.qkv" in lines[0] and "reshape" in lines[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = next(e for e in summary["protected"] if "reshape" in e["reason"])
    assert "blocks.3.attn.qkv" in entry["layers"] and entry["groups"]
    assert summary["groups_pruned"] == 4  # the four MLPs
