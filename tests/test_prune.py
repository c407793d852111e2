"""Pruning the reference models: plans from 10 % to 70 % removed.

For every model and ratio: the pruned model runs, its output shapes are
unchanged, parameters drop, the ONNX export matches PyTorch
(``max_abs <= 1e-4 * max(1, max|output|)``), and an ``.ept`` save/load
round-trip gives identical outputs (bit for bit).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

import numpy as np  # noqa: E402

from edgeprune.errors import PruneError  # noqa: E402
from edgeprune.export.onnx import export_onnx, run_onnx  # noqa: E402
from edgeprune.load import load_model  # noqa: E402
from edgeprune.models import build  # noqa: E402
from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_, save_pruned  # noqa: E402
from tests.sizes import SMALL  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ONNX_TOL = 1e-4


def _outs(model, x):
    with torch.no_grad():
        out = model(x)
    return [o.clone() for o in (out if isinstance(out, (tuple, list)) else [out])]


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", list(SMALL))
def test_prune_reference_model(name, ratio, tmp_path):
    shape = SMALL[name]
    model = build(name, pretrained=False)
    x = example_input(shape)
    before = [o.shape for o in _outs(model, x)]
    params0 = _params(model)
    groups = prunable_groups(model, x)
    plan = ChannelPlan.uniform(groups, ratio, align=1, input_shape=shape, base=name)
    assert plan.pruned_groups(), "the plan removes nothing"
    assert abs(plan.removed_fraction() - ratio) < 0.05
    prune_(model, plan)
    ref = _outs(model, x)
    assert [o.shape for o in ref] == before
    assert _params(model) < params0 * (1 - ratio / 2)

    onnx_out = run_onnx(export_onnx(model, shape, tmp_path / "m.onnx"), x.numpy())
    scale = max(1.0, max(float(r.abs().max()) for r in ref))
    err = max(float(np.abs(r.numpy() - o).max()) for r, o in zip(ref, onnx_out, strict=True))
    assert err <= ONNX_TOL * scale, (err, scale)

    save_pruned(model, plan, tmp_path / "m.ept", name=name)
    loaded = load_model(str(tmp_path / "m.ept"))
    assert loaded.plan.keep == plan.keep and loaded.input_shape == shape
    for a, b in zip(ref, _outs(loaded.module, x), strict=True):
        assert torch.equal(a, b)


def test_aligned_counts_are_multiples_of_the_alignment():
    model = build("mobilenetv2", pretrained=False)
    x = example_input((1, 3, 64, 64))
    groups = prunable_groups(model, x)
    plan = ChannelPlan.uniform(groups, 0.3, align=8, input_shape=(1, 3, 64, 64), base="mobilenetv2")
    assert all(k % 8 == 0 for k in plan.keep.values())
    prune_(model, plan)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs[1:])  # all but the stem's 3 inputs


def test_group_ids_are_stable_and_a_plan_applies_to_a_fresh_model():
    x = example_input((1, 3, 128, 128))
    a = prunable_groups(build("yolo-small", pretrained=False), x)
    b = prunable_groups(build("yolo-small", pretrained=False), x)
    assert [(g.id, g.channels, g.layers) for g in a] == [(g.id, g.channels, g.layers) for g in b]
    plan = ChannelPlan.uniform(a, 0.4, align=8, input_shape=(1, 3, 128, 128), base="yolo-small")
    again = ChannelPlan.from_json(plan.to_json())
    assert again.keep == plan.keep and again.input_shape == plan.input_shape
    fresh = build("yolo-small", pretrained=False)
    prune_(fresh, again)
    assert [o.shape for o in _outs(fresh, x)] == [(1, 144, 16, 16), (1, 144, 8, 8), (1, 144, 4, 4)]


def test_outputs_stem_and_named_layers_are_protected():
    x = example_input((1, 3, 64, 64))
    model = build("resnet18", pretrained=False)
    everything = {g.id: g for g in prunable_groups(model, x, include_protected=True)}
    assert everything["fc"].reason == "its channels are a model output"
    assert everything["conv1"].reason == "input stem"  # with layer1's adds: one group
    assert "layer1.0.conv2" in everything["conv1"].layers
    assert "conv1" in {g.id for g in prunable_groups(model, x, protect_stem=False)}
    ids = {g.id for g in prunable_groups(model, x, protect=["layer3.1.conv1"])}
    assert "layer3.1.conv1" not in ids and "layer3.0.conv1" in ids
    with pytest.raises(PruneError, match="did you mean .*layer3.1.conv1"):
        prunable_groups(model, x, protect=["layer3.1.conv"])


def test_yolo_detect_head_outputs_are_protected():
    x = example_input((1, 3, 128, 128))
    groups = prunable_groups(build("yolo-small", pretrained=False), x, include_protected=True)
    owner = {layer: g for g in groups for layer in g.layers}
    for i in range(3):
        for branch in ("cv2", "cv3"):
            g = owner[f"model.18.{branch}.{i}.2"]
            assert not g.prunable and g.reason == "its channels are a model output"


@pytest.mark.parametrize("name", list(SMALL))
def test_pruning_equals_zeroing_the_removed_channels(name):
    """The pruned model computes exactly what the original does with the removed channels zeroed.

    Zeroing a channel (its conv rows and BatchNorm scale and shift) is what
    removing it means; this checks every concat offset, residual add, split
    half and Linear-after-flatten that the surgery touched.
    """
    import copy

    from edgeprune.prune.groups import analyse
    from edgeprune.prune.importance import choose_removed

    shape = SMALL[name]
    model = build(name, pretrained=False)
    torch.manual_seed(1)
    for m in model.modules():  # trained-like BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    x = example_input(shape)
    plan = ChannelPlan.uniform(prunable_groups(model, x), 0.5, align=1, input_shape=shape)
    masked = copy.deepcopy(model)
    analysis = analyse(masked, x)
    with torch.no_grad():
        for g in analysis.prunable():
            removed = choose_removed(
                torch.arange(g.channels, 0, -1).float(), plan.keep[g.id], g.slices
            )
            root = analysis.roots[g.id]
            fn = analysis.dg.get_pruner_of_module(root).prune_out_channels
            for dep, idxs in analysis.dg.get_pruning_group(root, fn, removed):
                layer = dep.target.module
                if analysis.dg.is_out_channel_pruning_fn(dep.handler) and hasattr(layer, "weight"):
                    layer.weight[idxs] = 0
                    if layer.bias is not None:
                        layer.bias[idxs] = 0
        expect = _outs(masked, x)
    prune_(model, plan, importance="first")
    for a, b in zip(expect, _outs(model, x), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), float((a - b).abs().max())


def test_plan_for_another_architecture_is_refused():
    x = example_input((1, 3, 64, 64))
    plan = ChannelPlan.uniform(
        prunable_groups(build("resnet18", pretrained=False), x),
        0.3,
        input_shape=(1, 3, 64, 64),
        base="resnet18",
    )
    with pytest.raises(PruneError, match="another architecture"):
        prune_(build("mobilenetv2", pretrained=False), plan)


def test_no_group_goes_to_zero_and_bad_plans_fail():
    x = example_input((1, 1, 16, 16))
    groups = prunable_groups(build("digits-cnn", pretrained=False), x)
    plan = ChannelPlan.uniform(groups, 0.99, align=1, input_shape=(1, 1, 16, 16))
    assert min(plan.keep.values()) >= 1
    with pytest.raises(PruneError, match="at least one"):
        ChannelPlan.from_keep(groups, {"features.3": 0}, input_shape=(1, 1, 16, 16))
    with pytest.raises(PruneError, match="ratio"):
        ChannelPlan.uniform(groups, 1.0, input_shape=(1, 1, 16, 16))
    with pytest.raises(PruneError, match="not an edgeprune channel plan"):
        ChannelPlan.from_json('{"groups": []}')


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn", "taylor"])
def test_importance_criteria_on_real_digits(criterion):
    from edgeprune.models.digits import digits_accuracy, digits_data

    model = build("digits-cnn")  # trained (cached)
    x = example_input((1, 1, 16, 16))
    plan = ChannelPlan.uniform(prunable_groups(model, x), 0.25, align=1, input_shape=(1, 1, 16, 16))
    xs, ys = digits_data("train")
    data = list(zip(xs.split(128), ys.split(128), strict=True))[:4]
    prune_(model, plan, importance=criterion, data=data)
    # Without fine-tuning a quarter of the channels costs some accuracy, not all of it.
    assert digits_accuracy(model) > 0.5


def test_taylor_scores_a_dead_channel_zero_and_removes_it_first():
    """The Taylor sum is the loss change of removing a channel: a channel that carries nothing scores 0."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[4].weight[5] = 0.0
        model[4].bias[5] = 0.0  # channel 5 of the second conv's group is dead
    x = example_input((1, 1, 8, 8))
    groups = prunable_groups(model, x)
    data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))) for _ in range(3)]
    plan = ChannelPlan.from_keep(groups, {"3": 7}, input_shape=(1, 1, 8, 8))
    ref = copy.deepcopy(model)
    prune_(model, plan, importance="taylor", data=data)
    gammas = model[4].weight.detach()
    assert gammas.shape == (7,) and bool((gammas != 0).all())  # the dead channel went, the live ones stayed
    assert torch.allclose(model(x), ref(x), atol=1e-5)  # removing it changed nothing


def test_taylor_needs_data():
    model = build("digits-cnn", pretrained=False)
    x = example_input((1, 1, 16, 16))
    plan = ChannelPlan.uniform(prunable_groups(model, x), 0.25, input_shape=(1, 1, 16, 16))
    with pytest.raises(PruneError, match="needs data"):
        prune_(model, plan, importance="taylor")


class _Grouped(torch.nn.Module):
    """A grouped conv (groups=4) inside a residual: torch-pruning alone mis-slices these."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.g = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, groups=4), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.b = nn.Conv2d(32, 24, 1)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = self.a(self.stem(x))
        x = self.g(x) + x
        return self.head(self.b(x).mean((2, 3)))


def test_grouped_conv_pruning_equals_masking_the_removed_channels():
    from edgeprune.prune.importance import choose_removed

    torch.manual_seed(0)
    model = _Grouped().eval()
    for bn in (model.a[1], model.g[1]):  # non-trivial BN statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = example_input((1, 3, 16, 16))
    groups = {g.id: g for g in prunable_groups(model, x)}
    assert groups["a.0"].slices == 4 and "g.0" in groups["a.0"].layers
    plan = ChannelPlan.from_keep(groups.values(), {"a.0": 16, "b": 24}, input_shape=(1, 3, 16, 16))
    removed = choose_removed(torch.arange(32, 0, -1).float(), 16, 4)
    assert removed == [4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31]
    masked = _Grouped().eval()
    masked.load_state_dict(model.state_dict())
    with torch.no_grad():  # zero the removed channels: same function as removing them
        for bn in (masked.a[1], masked.g[1]):
            bn.weight[removed] = 0
            bn.bias[removed] = 0
        expect = masked(x)
    prune_(model, plan, importance="first")
    assert model.g[0].weight.shape == (16, 4, 3, 3) and model.g[0].groups == 4
    assert torch.allclose(model(x), expect, atol=1e-6)


def test_exported_program_cannot_be_pruned_one_line(tmp_path):
    from edgeprune.api import prune_model

    model = build("digits-cnn", pretrained=False)
    path = tmp_path / "d.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 16, 16),)), str(path))
    with pytest.raises(PruneError, match="cannot be pruned.*factory"):
        prune_model(
            str(path),
            target="local",
            ratio=0.3,
            output=tmp_path / "out",
            input_shape=(1, 1, 16, 16),
        )


class _FeaturesAndLogits(torch.nn.Module):
    """Returns a feature map that is also consumed further: its channels are outputs."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.top = nn.Sequential(
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU()
        )
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        feats = self.mid(self.stem(x))
        return feats, self.fc(self.top(feats).mean((2, 3)))


def test_a_returned_feature_map_is_protected_even_when_consumed():
    model = _FeaturesAndLogits().eval()
    x = example_input((1, 3, 16, 16))
    groups = {g.id: g for g in prunable_groups(model, x, include_protected=True)}
    assert groups["mid.0"].reason == "its channels are a model output"
    assert groups["top.0"].prunable
    plan = ChannelPlan.uniform(groups.values(), 0.5, input_shape=(1, 3, 16, 16))
    prune_(model, plan)
    assert [o.shape for o in _outs(model, x)] == [(1, 16, 16, 16), (1, 4)]


def test_ept_whose_weights_do_not_fit_its_plan_is_one_line(tmp_path):
    import json

    from edgeprune.errors import ModelError

    model = build("digits-cnn", pretrained=False)
    x = example_input((1, 1, 16, 16))
    plan = ChannelPlan.uniform(
        prunable_groups(model, x), 0.5, input_shape=(1, 1, 16, 16), base="digits-cnn"
    )
    prune_(model, plan)
    path = save_pruned(model, plan, tmp_path / "d.ept")
    blob = torch.load(path, weights_only=True)
    meta = json.loads(blob["meta"])
    meta["plans"][0]["groups"][0]["keep"] = 24  # the file's weights have 16 there
    blob["meta"] = json.dumps(meta)
    torch.save(blob, tmp_path / "bad.ept")
    with pytest.raises(ModelError, match=r"bad.ept: its weights do not fit digits-cnn") as exc:
        load_model(str(tmp_path / "bad.ept"))
    assert "\n" not in str(exc.value)
    blob["meta"] = "{not json"
    torch.save(blob, tmp_path / "damaged.ept")
    with pytest.raises(ModelError, match="damaged.ept: damaged"):
        load_model(str(tmp_path / "damaged.ept"))


class _OffsetAfterBN(torch.nn.Module):
    """``bn(conv(x)) + 1``: a removed channel would have carried 1, not 0, to the next conv."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.b = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(torch.relu(self.stem(x))) + 1.0
        return self.fc(self.b(h).mean((2, 3)))


def test_surgery_check_flags_channels_that_do_not_carry_zero():
    x = example_input((1, 3, 8, 8))
    model = _OffsetAfterBN().eval()
    plan = ChannelPlan.from_keep(prunable_groups(model, x), {"a.0": 8}, input_shape=(1, 3, 8, 8))
    with pytest.raises(
        PruneError, match="differs from the original with the removed channels zeroed"
    ):
        prune_(model, plan)
    model = _OffsetAfterBN().eval()
    prune_(model, plan, verify=False)
    assert model.b.in_channels == 8
