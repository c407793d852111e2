"""The real Ultralytics package: YOLOv8n and YOLO11n built from its YAML (random weights), pruned.

Skipped when ``ultralytics`` is not installed; ``bash scripts/setup.sh`` with
the ``test`` extra installs it with ``--no-deps`` (its declared dependencies
include torchvision and would pull a CUDA torch; see tests/zoo/ultralytics_real.py
for the one metadata line it needs from torchvision). The same checks as the
zoo's own YOLO code: pruned at 50 % aligned to 8, runs through Ultralytics'
own forward loop, keeps its outputs' shapes, passes the surgery check,
matches its ONNX export, and saves/loads as an ``.ept`` bit for bit.
"""

from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

from tests.zoo import ultralytics_real  # noqa: E402

if not ultralytics_real.available():
    pytest.skip(
        "ultralytics is not installed: bash scripts/setup.sh (test extra) installs it with --no-deps",
        allow_module_level=True,
    )

import numpy as np  # noqa: E402

from edgeprune.export.onnx import export_onnx, run_onnx  # noqa: E402
from edgeprune.load import load_model  # noqa: E402
from edgeprune.models.stats import count_macs_params  # noqa: E402
from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_, save_pruned  # noqa: E402
from edgeprune.prune.groups import flat_tensors  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 3, 128, 128)


def _outs(model, x):
    with torch.no_grad():
        return [o.clone() for o in flat_tensors(model(x))]


@pytest.mark.parametrize("name", ["yolov8n", "yolo11n"])
def test_real_ultralytics_model_prunes_runs_and_round_trips(name, tmp_path):
    factory = getattr(ultralytics_real, name)
    model = factory()
    assert "torchvision" not in sys.modules
    x = example_input(SHAPE)
    before = [o.shape for o in _outs(model, x)]
    macs0, _ = count_macs_params(model, SHAPE)
    stamps = {n: (m.i, m.f, m.type, m.np) for n, m in model.named_modules() if hasattr(m, "f")}
    groups = prunable_groups(model, x, include_protected=True)
    plan = ChannelPlan.uniform(groups, 0.5, align=8, input_shape=SHAPE, base=f"tests.zoo.ultralytics_real:{name}")
    prune_(model, plan)
    assert plan.rewrites  # its C2f / C3k2 blocks
    for n in plan.rewrites:  # what DetectionModel._predict_once reads survives the rewrite
        m = model.get_submodule(n)
        assert (m.i, m.f, m.type, m.np) == stamps[n]
    ref = _outs(model, x)
    assert [o.shape for o in ref] == before
    assert count_macs_params(model, SHAPE)[0] < 0.6 * macs0
    if name == "yolo11n":
        psa = [g for g in groups if any(".attn." in layer for layer in g.layers)]
        assert psa and all(not g.prunable and g.reason for g in psa)
    onnx_out = run_onnx(export_onnx(model, SHAPE, tmp_path / "m.onnx"), x.numpy())
    scale = max(1.0, max(float(r.abs().max()) for r in ref))
    err = max(float(np.abs(r.numpy() - o).max()) for r, o in zip(ref, onnx_out, strict=True))
    assert err <= 1e-4 * scale, (err, scale)
    save_pruned(model, plan, tmp_path / "m.ept", name=name, task="detect")
    again = load_model(str(tmp_path / "m.ept"), trust_factory=f"tests.zoo.ultralytics_real:{name}")
    for a, b in zip(ref, _outs(again.module, x), strict=True):
        assert torch.equal(a, b)
