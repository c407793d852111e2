"""The C2f block (``chunk`` + concat) that breaks plain torch-pruning, and edgeprune's rewrite."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
tp = pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from edgeprune.errors import PruneError  # noqa: E402
from edgeprune.models import build  # noqa: E402
from edgeprune.models.yolo import C2f, Conv  # noqa: E402
from edgeprune.prune import ChannelPlan, example_input, make_prunable, prunable_groups, prune_  # noqa: E402
from edgeprune.prune.rewrite import SplitChunkBlock  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small models on a shared 2-core machine: one thread avoids OpenMP barrier stalls."""
    from edgeprune._threads import one_thread

    with one_thread():
        yield


def _c2f_net():
    torch.manual_seed(0)
    net = nn.Sequential(Conv(3, 16, 3, 2), C2f(16, 32, 2, shortcut=True), Conv(32, 8, 1)).eval()
    for m in net.modules():  # trained-like BatchNorm so that halves differ
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_mean.uniform_(-0.2, 0.2)
    return net


def test_plain_torch_pruning_breaks_on_c2f():
    """torch-pruning 1.6.1 on an unrewritten C2f: it raises, or leaves a model that cannot run."""
    net = _c2f_net()
    x = torch.randn(1, 3, 32, 32)
    pruner = tp.pruner.MetaPruner(
        net,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[net[2]],
    )
    broken = False
    try:
        pruner.step()
        with torch.no_grad():
            out = net(x)
        broken = out.shape != (1, 8, 16, 16)
    except (IndexError, RuntimeError):
        broken = True
    assert broken, "torch-pruning now prunes C2f: the rewrite may be unnecessary"


def test_rewrite_keeps_outputs_identical_then_prunes():
    net = _c2f_net()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = net(x).clone()
    assert make_prunable(net, x) == ["1"]
    assert isinstance(net[1], SplitChunkBlock)
    with torch.no_grad():
        assert torch.equal(net(x), before)  # identical, not merely close
    groups = {g.id: g for g in prunable_groups(net, x)}
    assert {"1.cv1a.conv", "1.cv1b.conv"} <= set(groups)
    # cv1b's half is tied to both bottlenecks' outputs by their residual adds
    assert {"1.m.0.cv2.conv", "1.m.1.cv2.conv"} <= set(groups["1.cv1b.conv"].layers)
    plan = ChannelPlan.uniform(groups.values(), 0.5, align=1, input_shape=(1, 3, 32, 32))
    prune_(net, plan)
    with torch.no_grad():
        assert net(x).shape == (1, 8, 16, 16)
    assert net[1].cv1a.conv.out_channels == 8 and net[1].cv1b.conv.out_channels == 8
    assert net[1].cv2.conv.in_channels == 8 * 4  # four concatenated pieces of 8


def test_yolo_small_rewrites_every_c2f_with_identical_outputs():
    model = build("yolo-small", pretrained=False)
    x = example_input((1, 3, 128, 128))
    with torch.no_grad():
        before = [o.clone() for o in model(x)]
    done = make_prunable(model, x)
    assert done == [
        "model.2",
        "model.4",
        "model.6",
        "model.8",
        "model.11",
        "model.13",
        "model.15",
        "model.17",
    ]
    with torch.no_grad():
        for a, b in zip(before, model(x), strict=True):
            assert torch.equal(a, b)


class _NotC2f(nn.Module):
    """Has cv1/cv2/m and chunk, but a different forward: the rewrite must refuse it."""

    def __init__(self):
        super().__init__()
        self.cv1 = Conv(8, 16, 1)
        self.cv2 = Conv(16, 8, 1)
        self.m = nn.ModuleList([Conv(8, 8, 3)])

    def forward(self, x):
        a, b = self.cv1(x).chunk(2, 1)
        return self.cv2(torch.cat((self.m[0](a) * b, b), 1))


def test_rewrite_that_would_change_outputs_is_undone():
    """Looks like a C2f but is not: the rewrite is undone and the block left exactly as it was."""
    net = nn.Sequential(Conv(3, 8, 3), _NotC2f(), Conv(8, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = net(x).clone()
    assert make_prunable(net, x) == []
    assert type(net[1]) is _NotC2f and hasattr(net[1], "cv1")  # restored
    with torch.no_grad():
        assert torch.equal(net(x), before)
    # torch-pruning 1.6.1 itself cannot trace this block (a split half multiplied into a concat):
    # one line naming the cause, not a traceback
    with pytest.raises(PruneError, match="torch-pruning cannot trace this model") as exc:
        prunable_groups(net, x)
    assert "\n" not in str(exc.value)


class _SplitUsedTwice(nn.Module):
    """``a, b = cv1(x).split(...)`` then ``cv2(cat(a, m(b)))``: not C2f's dataflow (C2PSA's)."""

    def __init__(self):
        super().__init__()
        self.c = 8
        self.cv1 = Conv(8, 16, 1)
        self.cv2 = Conv(16, 8, 1)
        self.m = nn.Sequential(Conv(8, 8, 3), Conv(8, 8, 3))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))


def test_a_split_that_cannot_be_rewritten_is_protected_and_the_rest_prunes():
    net = nn.Sequential(Conv(3, 8, 3), _SplitUsedTwice(), Conv(8, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    groups = {g.id: g for g in prunable_groups(net, x, include_protected=True)}
    assert type(net[1]) is _SplitUsedTwice  # no ModuleList chain: not rewritten
    assert not groups["1.cv1.conv"].prunable and "split" in groups["1.cv1.conv"].reason
    assert groups["1.m.0.conv"].prunable
    plan = ChannelPlan.uniform(groups.values(), 0.5, align=1, input_shape=(1, 3, 16, 16))
    prune_(net, plan)
    assert net[1].m[0].conv.out_channels == 4 and net[1].cv1.conv.out_channels == 16
