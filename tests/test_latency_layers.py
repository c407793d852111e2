"""Which layers a plan changes, and their shapes under a plan, checked against real pruning."""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from edgeprune.latency.layers import LayerShape, candidate_counts, layer_inventory  # noqa: E402
from edgeprune.models import build  # noqa: E402
from edgeprune.prune import ChannelPlan, example_input, prune_  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_digits_cnn_layers_follow_their_groups():
    model = build("digits-cnn", pretrained=False)
    x = example_input((1, 1, 16, 16))
    layers = {lay.name: lay for lay in layer_inventory(model, x).layers}
    assert list(layers) == ["features.0", "features.3", "features.6", "classifier.1", "classifier.3"]
    stem = layers["features.0"]
    assert stem.out_group is None and stem.shape.cin == 1 and stem.shape.hw == (16, 16)
    assert layers["features.3"].shape.stride == (2, 2) and layers["features.6"].shape.hw == (8, 8)
    keep = {"features.3": 16, "features.6": 32, "classifier.1": 48}
    assert layers["features.3"].channels_under(keep) == (16, 16)  # its input is the protected stem
    assert layers["features.6"].channels_under(keep) == (16, 32)
    # flatten before the Linear: 32 kept channels x 4x4 positions
    assert layers["classifier.1"].channels_under(keep) == (32 * 16, 48)
    assert layers["classifier.3"].channels_under(keep) == (48, 10)
    assert layers["classifier.1"].shape.kind == "linear" and layers["classifier.1"].shape.hw == (1, 1)
    assert layers["features.6"].channels_under({}) == (32, 64)  # missing groups keep everything


@pytest.mark.parametrize(
    "name, shape",
    [("mobilenetv2", (1, 3, 64, 64)), ("yolo-small", (1, 3, 64, 64)), ("resnet18", (1, 3, 64, 64))],
)
def test_predicted_shapes_equal_the_pruned_model(name, shape):
    """Depthwise convs, residual adds, concats (yolo's C2f and neck): every layer's predicted
    (cin, cout, groups) under a random aligned plan is what pruning really produces."""
    model = build(name)
    x = example_input(shape)
    inv = layer_inventory(model, x)
    groups, layers = inv.groups, inv.layers
    rng = random.Random(0)
    space = {g.id: candidate_counts(g.channels, multiple=8 * g.slices) for g in groups if g.prunable}
    keep = {gid: rng.choice(c) for gid, c in space.items()}
    plan = ChannelPlan.from_keep(groups, keep, align=8, input_shape=shape, base=name)
    prune_(model, plan, x=x, verify=False)
    modules = dict(model.named_modules())
    depthwise = 0
    for lay in layers:
        m = modules[lay.name]
        want = lay.shape_under(plan.keep)
        got = (
            (m.in_channels, m.out_channels, m.groups)
            if isinstance(m, nn.Conv2d)
            else (m.in_features, m.out_features, 1)
        )
        assert got == (want.cin, want.cout, want.groups), lay.name
        depthwise += want.depthwise
    assert (depthwise > 0) == (name == "mobilenetv2")


def test_layer_shape_macs_and_keys():
    conv = LayerShape("conv", 64, 32, (3, 3), (2, 2), (1, 1), hw=(56, 56))
    assert conv.out_hw == (28, 28) and conv.macs == 28 * 28 * 32 * 64 * 9
    dw = LayerShape("conv", 96, 96, (3, 3), (1, 1), (1, 1), groups=96, hw=(28, 28))
    assert dw.depthwise and dw.with_channels(48, 48).groups == 48
    assert dw.with_channels(48, 48).family() == dw.family() != conv.family()
    assert conv.with_channels(16, 32).key() != conv.key()
    assert LayerShape.from_dict(conv.to_dict()) == conv
    assert LayerShape("linear", 1024, 64, hw=(1, 1)).macs == 1024 * 64


def test_candidate_counts():
    assert candidate_counts(96, multiple=16) == [32, 48, 64, 80, 96]  # from 25 %, rounded up
    assert candidate_counts(96, multiple=16, min_keep=0.0) == [16, 32, 48, 64, 80, 96]
    assert candidate_counts(10, multiple=16) == [10]  # smaller than one step: keeps all
    assert candidate_counts(100, multiple=16) == [32, 48, 64, 80, 96, 100]  # full count always
    many = candidate_counts(960, multiple=8, max_steps=20)
    assert len(many) <= 20 and many[0] == 240 and many[-1] == 960
    assert all(c % 8 == 0 for c in many)


def test_channel_importance_is_comparable_across_groups():
    from edgeprune.latency.allocate import channel_importance
    from edgeprune.models.digits import digits_data

    model = build("digits-cnn", pretrained=False)
    x = example_input((1, 1, 16, 16))
    groups = layer_inventory(model, x).prunable
    mags = channel_importance(model, x, groups, criterion="l1")
    assert set(mags) == {g.id for g in groups}
    for s in mags.values():  # without data: every group is worth 1, channels sorted high to low
        assert s.sum() == pytest.approx(1.0) and (s[:-1] >= s[1:]).all()
    xs, ys = digits_data("train")
    data = list(zip(xs[:128].split(64), ys[:128].split(64), strict=True))
    taylor = channel_importance(model, x, groups, criterion="taylor", data=data)
    assert sum(s.sum() for s in taylor.values()) == pytest.approx(1.0)  # one unit for all groups
    assert all(p.grad is None for p in model.parameters())  # gradients stayed on a copy
