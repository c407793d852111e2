"""The real timm ConvNeXt (``convnext_atto``) through `edgeprune prune` and `edgeprune export`.

timm's own model code: ``LayerNorm2d`` (an ``nn.LayerNorm`` subclass that
normalises dim 1 of an NCHW map), channels-last ``LayerNorm`` in its blocks,
layer scale, and its classifier head. The surgery check once sliced the wrong
dimension of ``LayerNorm2d`` (``internal error (IndexError: index out of range
in self)``) while the zoo's copy of ConvNeXt passed.

Skipped when timm is not installed (``bash scripts/setup.sh`` with the
``test`` extra installs it with ``--no-deps``); timm imports torchvision,
which this machine lacks: tests/zoo/timm_real.py imports it with a narrow
stand-in that fails loudly on any path that really needs torchvision.
"""

from __future__ import annotations

import json
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

from tests.zoo import timm_real  # noqa: E402

if not timm_real.available():
    pytest.skip("timm is not installed: bash scripts/setup.sh (test extra) installs it with --no-deps",
                allow_module_level=True)

from edgeprune.api import export_model  # noqa: E402
from edgeprune.cli import main  # noqa: E402
from edgeprune.errors import PruneError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPEC = "tests.zoo.timm_real:convnext_atto"
SHAPE = (1, 3, 64, 64)


def test_timm_imports_without_torchvision_and_fails_loudly_where_it_needs_it():
    timm_real.import_timm()
    assert "torchvision" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        import torchvision  # noqa: F401
    from timm.data import transforms

    with pytest.raises(ModuleNotFoundError, match="torchvision"):
        transforms.MaybeToTensor()


@pytest.mark.parametrize("spec", [SPEC, "tests.zoo.timm_real:convnext_atto_channels_last"])
def test_prune_and_export_cli_on_timm_convnext(spec, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["prune", "-t", "local", "-m", spec, "--input-shape", "1,3,64,64", "--ratio", "0.5",
              "-o", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert exc.value.code == 0, err
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["groups_pruned"] == summary["groups_total"] >= 10  # every stage's stream and MLP
    assert summary["macs_after"] < 0.5 * summary["macs_before"]
    reasons = {e["reason"] for e in summary["protected"]}
    assert reasons <= {"input stem", "its channels are a model output"}, reasons
    report = export_model(summary["model"], target="local", output=tmp_path / "e", trust_factory=spec,
                          verify_count=8)
    assert report.passed and report.final.agreement["cosine"] > 0.9999


def test_surgery_check_on_timm_layernorm2d_still_catches_a_wrong_cut(monkeypatch):
    """LayerNorm2d compared on its kept channels (dim 1): swapping two kept channels must fail."""
    import copy

    import edgeprune.prune.apply as apply_mod
    from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_
    from edgeprune.prune.check import check_surgery

    model = timm_real.convnext_atto()
    x = example_input(SHAPE)
    groups = prunable_groups(model, x)
    stage = next(g for g in groups if g.id == "stages.1.downsample.1")  # stage 2's stream: LayerNorm2d in every block
    plan = ChannelPlan.from_keep(groups, {stage.id: stage.channels // 2}, input_shape=SHAPE)
    seen = {}

    def spy(reference, pruned, removed, xx, **kw):
        seen.update(reference=copy.deepcopy(reference), removed=removed, kw=kw)
        return check_surgery(reference, pruned, removed, xx, **kw)

    monkeypatch.setattr(apply_mod, "check_surgery", spy)
    prune_(model, plan)
    assert {"stages.1.blocks.0.norm", "stages.2.downsample.0"} <= set(seen["kw"]["normalised"])
    with torch.no_grad():
        w = model.stages[2].downsample[0].weight  # a LayerNorm2d on that stream
        w[[0, 1]] = w[[1, 0]] + 0.5
    with pytest.raises(PruneError, match="differs from the original"):
        check_surgery(seen["reference"], model, seen["removed"], x, **seen["kw"])
