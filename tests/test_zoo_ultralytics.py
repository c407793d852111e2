"""The real Ultralytics package through the commands a user runs: `edgeprune prune` and `edgeprune export`.

YOLOv8n, YOLO11n and YOLO26n (NMS-free end-to-end head) from ultralytics
8.4's own YAML and code, given as a user gives them: a factory module
``userdet.py`` written by the test (``--model userdet:build``), at the size
the user names (``--input-shape 1,3,320,320``), and from a user's own
checkpoint: a ``best.pt`` written the way Ultralytics' trainer writes one
and loaded with ``YOLO("best.pt").model`` inside the factory.

Skipped when ``ultralytics`` is not installed; ``bash scripts/setup.sh`` with
the ``test`` extra installs it with ``--no-deps`` (its declared dependencies
include torchvision and would pull a CUDA torch). This machine has no
torchvision; the factories import Ultralytics as a user's do (``from
ultralytics.nn.tasks import DetectionModel``), and edgeprune answers the one
torchvision metadata query Ultralytics makes at import
(:mod:`edgeprune.models.ultra`).

The checkpoint's weights are trained-like, not trained
(:func:`tests.zoo.ultralytics_real.trained_like`: BatchNorm statistics of
real photos, class biases centred), so that the INT8 and end-to-end checks
compare scores that mean something.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")
pytest.importorskip("onnxruntime")

from tests.zoo import ultralytics_real  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

if not ultralytics_real.available():
    pytest.skip(
        "ultralytics is not installed: bash scripts/setup.sh (test extra) installs it with --no-deps",
        allow_module_level=True,
    )

import numpy as np  # noqa: E402

from edgeprune.api import export_model  # noqa: E402
from edgeprune.checks.heads import shipping_form  # noqa: E402
from edgeprune.checks.outputs import compared, flatten_numpy  # noqa: E402
from edgeprune.cli import main  # noqa: E402
from edgeprune.export.onnx import run_onnx  # noqa: E402
from edgeprune.load import load_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 3, 320, 320)
ARGS = ["--input-shape", "1,3,320,320"]

FROM_YAML = '''
from ultralytics.nn.tasks import DetectionModel


def build():
    return DetectionModel("{cfg}", verbose=False)
'''

FROM_CHECKPOINT = '''
from ultralytics import YOLO


def build():
    return YOLO("{path}").model
'''


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write the user's factory module ``userdet.py`` (fresh for each test) and put it on the path."""

    def write(text: str) -> str:
        (tmp_path / "userdet.py").write_text(text)
        return "userdet:build"

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userdet", raising=False)
    yield write
    sys.modules.pop("userdet", None)


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
def test_prune_cli_on_a_user_factory_at_the_size_the_user_names(cfg, user_module, tmp_path, capsys):
    spec = user_module(FROM_YAML.format(cfg=cfg))
    code, out, err = _cli(["prune", "-t", "local", "-m", spec, *ARGS, "--ratio", "0.3", "-o", str(tmp_path / "p")],
                          capsys)
    assert code == 0, err
    assert "internal error" not in err
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["input_shape"] == list(SHAPE) and summary["task"] == "detect"
    assert summary["groups_pruned"] >= 0.6 * summary["groups_total"]
    assert summary["macs_after"] < 0.75 * summary["macs_before"]
    assert summary["onnx_check"]["passed"]
    whole = {layer: e["reason"] for e in summary["protected"] for layer in e["layers"]}
    assert all(whole.values())
    lines = [line for line in out.splitlines() if "kept whole" in line]
    assert len(lines) == 1  # one line naming what was kept whole and why
    # what is kept whole as "a model output" is the head's own last layers: the maps it takes as input
    # (P3-P5, returned beside its predictions for the training loss) are no outputs, and the neck prunes
    head = f"model.{len(_build(cfg).model) - 1}."
    outputs = [layer for layer, why in whole.items() if why.startswith("its channels are a model output")]
    assert outputs and all(layer.startswith(head) for layer in outputs), outputs
    if cfg == "yolo26n.yaml":  # C3k2 with attention: the stream its Attention reads its size from is kept whole
        assert any("read back in model.22.m.0.1.attn" in r for r in whole.values()), whole
    if cfg == "yolo11n.yaml":
        assert any(layer.startswith("model.10.m.0.attn.") for layer in whole)
    pruned = load_model(str(tmp_path / "p" / "model.ept"), trust_factory=spec)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = [t.shape for t in compared(_build(cfg), x)]
        assert [t.shape for t in compared(pruned.module, x)] == want


WRAPPED = FROM_YAML + '''

import torch


class FirstOutput(torch.nn.Module):
    """What users write to get one tensor out: the decoded predictions, the rest dropped."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def wrapped():
    return FirstOutput(build())
'''


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_prune_a_wrapper_that_returns_only_the_predictions(cfg, user_module, tmp_path):
    """Issue 19: YOLOv8n ended in IndexError (its DFL's view cut channels unseen), YOLO26n in 'no longer runs'
    (its one-to-one branch runs but reaches no output, so torch-pruning never saw its inputs)."""
    from edgeprune.api import prune_model

    user_module(WRAPPED.format(cfg=cfg))
    summary = prune_model("userdet:wrapped", target="local", ratio=0.3, input_shape=SHAPE, output=tmp_path / "p")
    assert summary["groups_pruned"] > 0.6 * summary["groups_total"] and summary["onnx_check"]["passed"]
    pruned = load_model(summary["model"], trust_factory="userdet:wrapped").module
    with torch.no_grad():
        assert pruned(torch.zeros(SHAPE)).shape == (1, 84, 2100)


def _build(cfg: str):
    return getattr(ultralytics_real, cfg.split(".")[0])()  # seeded


@pytest.fixture(scope="module")
def checkpoint_runs(tmp_path_factory):
    """Per architecture: a user's best.pt, its factory module, and `edgeprune prune` run on it once."""
    made: dict = {}

    def get(cfg: str, monkeypatch, capsys):
        if cfg not in made:
            root = tmp_path_factory.mktemp(cfg.split(".")[0])
            model = ultralytics_real.trained_like(_build(cfg), SHAPE)
            ultralytics_real.save_checkpoint(model, root / "best.pt", cfg=cfg, imgsz=320)
            mod = f"user_{cfg.split('.')[0]}"
            (root / f"{mod}.py").write_text(FROM_CHECKPOINT.format(path=root / "best.pt"))
            made[cfg] = (root, f"{mod}:build")
        root, spec = made[cfg]
        monkeypatch.syspath_prepend(str(root))
        if not (root / "p" / "model.ept").is_file():
            code, _, err = _cli(["prune", "-t", "local", "-m", spec, *ARGS, "--ratio", "0.3", "-o", str(root / "p")],
                                capsys)
            assert code == 0, err
        return root, spec

    return get


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_export_onnx_of_a_pruned_user_checkpoint_holds_what_ultralytics_ships(cfg, checkpoint_runs, monkeypatch,
                                                                               capsys, tmp_path):
    root, spec = checkpoint_runs(cfg, monkeypatch, capsys)
    summary = json.loads((root / "p" / "summary.json").read_text())
    assert summary["groups_pruned"] > 0 and summary["source"] == spec
    pruned = load_model(str(root / "p" / "model.ept"), trust_factory=spec)
    # prune's own model.onnx: every eval-mode output, ONNX output k == flattened PyTorch output k
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    with torch.no_grad():
        ref = flatten_numpy(pruned.module(torch.from_numpy(x)))
    got = run_onnx(root / "p" / "model.onnx", x)
    assert len(got) == len(ref) >= 6
    for k, (r, g) in enumerate(zip(ref, got, strict=True)):
        assert r.shape == g.shape and np.abs(r - g).max() <= 1e-4 * max(1.0, np.abs(r).max()), k

    report = export_model(str(root / "p" / "model.ept"), target="local", output=tmp_path / "e", trust_factory=spec,
                          verify_count=8)
    assert report.passed and report.final.format == "onnx" and report.final.precision == "fp32"
    ship = shipping_form(pruned.module, fmt="onnx", precision="fp32", input_shape=SHAPE)
    with torch.no_grad():
        want = ship(torch.from_numpy(x)).numpy()
    onnx_out = run_onnx(report.final.path, x)
    assert len(onnx_out) == 1  # the decoded predictions alone, as Ultralytics' exporter writes them
    if cfg == "yolov8n.yaml":
        assert onnx_out[0].shape == (1, 84, 2100)
        assert np.abs(onnx_out[0] - want).max() <= 1e-4 * np.abs(want).max()
        assert [o["role"] for o in report.outputs] == ["boxes", "scores"]
        return
    # YOLO26: the NMS-free one-to-one branch, top-300 rows (x1, y1, x2, y2, score, class)
    assert onnx_out[0].shape == (1, 300, 6) and [o["role"] for o in report.outputs] == ["detections"]
    assert report.final.extra["end2end"]["tied_at_cut"] < 0.5  # real, distinct scores: the check means something
    assert report.final.extra["detection"]["recall"] >= 0.98
    # the test's own comparison, row by row in any order: same class, score and box
    found = 0
    for row in onnx_out[0][0]:
        same = (want[0][:, 5] == row[5]) & (np.abs(want[0][:, 4] - row[4]) <= 1e-4) \
            & (np.abs(want[0][:, :4] - row[:4]).max(1) <= 0.05)
        found += bool(same.any())
    assert found >= 297, found  # rows tied at the 300th score may differ


def test_export_tflite_full_int8_of_a_pruned_yolo26_checkpoint(checkpoint_runs, monkeypatch, capsys, tmp_path):
    """`edgeprune export --format tflite --precision int8` (its API, with fewer samples than the CLI's 128/64)."""
    pytest.importorskip("onnx2tf")
    pytest.importorskip("ai_edge_litert")
    root, spec = checkpoint_runs("yolo26n.yaml", monkeypatch, capsys)
    report = export_model(str(root / "p" / "model.ept"), target="local", output=tmp_path / "t", trust_factory=spec,
                          fmt="tflite", precision="int8", calib_count=16, verify_count=8)
    assert report.passed
    final = report.final
    assert (final.format, final.precision) == ("tflite", "int8")
    tensors = final.extra["tensors"]  # full INT8 inside; local's I/O is float32 (its profile's io_precision)
    assert "int8" in tensors["dtypes"] and final.extra["float_tensors"] <= len(tensors["input_dtypes"]) + len(
        tensors["output_dtypes"])
    # full INT8: Ultralytics exports the one-to-many branch (no end-to-end top-k), boxes and scores apart
    assert [o["role"] for o in report.outputs] == ["boxes", "scores"]
    assert report.verification["outputs_split"] and len(final.extra["outputs"]) == 2
    assert min(r["cosine"] for r in final.extra["outputs"]) >= 0.93
    assert final.extra["detection"]["recall"] >= 0.5


LONG = "EDGEPRUNE_LONG_TESTS"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(LONG) != "1", reason=f"opt-in ({LONG}=1): about 15 minutes a model on 2 cores")
@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
def test_deploy_cli_of_a_user_checkpoint_at_320(cfg, tmp_path):
    """Issue 19: `edgeprune deploy --target local` on the real YOLOv8n / YOLO11n / YOLO26n at 320 px, as a
    user runs it (a subprocess, their `best.pt` loaded by `YOLO("best.pt").model` in their factory), with a
    YOLO folder (fmnist-det's generator at small counts) for the fine-tune and the gate.

    Opt-in: one such deploy took 941 s here (yolov8n, 2 cores, load 2-3: measure 299 s, prune 211 s,
    fine-tune 255 s, export 165 s), too long for the CI run of every stop. The weights are trained-like,
    not trained (the figures are those of a model that finds nothing: mAP 0 against 0); what this holds is
    that the command goes through on the real code and ships a file that runs and says what it kept whole.
    The user's trained detector with a meaningful mAP gate is tests/test_detector_deploy.py (64 px)."""
    import subprocess

    import onnxruntime as ort

    from edgeprune._paths import sha256_file
    from edgeprune.data.fmnist_det import generate

    model = ultralytics_real.trained_like(_build(cfg), SHAPE)
    ultralytics_real.save_checkpoint(model, tmp_path / "best.pt", cfg=cfg, imgsz=320)
    (tmp_path / "userdet.py").write_text(FROM_CHECKPOINT.format(path=tmp_path / "best.pt"))
    generate(tmp_path / "data", counts={"train": 16, "val": 8, "test": 16})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    p = subprocess.run([sys.executable, "-m", "edgeprune", "deploy", "-t", "local", "-m", "userdet:build",
                        "--data", str(tmp_path / "data" / "data.yaml"), *ARGS, "--speedup", "1.3",
                        "--max-rounds", "1", "--steps", "2", "--format", "onnx", "--precision", "fp32",
                        "--threads", "1", "-o", str(tmp_path / "out"), "--json"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=3000)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "internal error" not in p.stderr
    rep = json.loads(p.stdout)
    assert rep["ok"] and rep["shipped"], rep
    assert all(r["metric"] == "map50_95" for r in rep["accuracy"]), rep["accuracy"]
    summary = json.loads((tmp_path / "out" / "prune" / "summary.json").read_text())
    assert summary["task"] == "detect" and summary["input_shape"] == list(SHAPE)
    assert all(e["reason"] for e in summary["protected"])  # what was kept whole, each with its reason
    release = rep["release"]
    shipped = Path(release["deploy_dir"]) / "current" / "model.onnx"
    assert sha256_file(shipped) == release["sha256"]
    sess = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: np.zeros(SHAPE, np.float32)})
    assert out[0].shape == ((1, 300, 6) if cfg == "yolo26n.yaml" else (1, 84, 2100))


def test_the_surgery_check_compares_a_pruned_yolo26_in_float64(user_module, monkeypatch, tmp_path):
    """Issue 19: a deploy of YOLO26n at 320 px stopped at the surgery check with 'relative 0.00012 > 0.0001':
    float32 rounding alone (summing fewer channels in another order, boxes in pixels). In float64 the same
    comparison of a correct cut is near 1e-12, far under the tolerance, and a wrong cut still fails."""
    import copy

    import edgeprune.prune.apply as apply_mod
    from edgeprune.errors import PruneError
    from edgeprune.prune.check import TOL, check_surgery

    seen: dict = {}

    def spy(reference, pruned, removed, x, **kw):
        seen.update(reference=copy.deepcopy(reference), removed=removed, x=x, kw=kw)
        seen["err"] = check_surgery(reference, pruned, removed, x, **kw)
        return seen["err"]

    monkeypatch.setattr(apply_mod, "check_surgery", spy)
    from edgeprune.api import prune_model

    spec = user_module("from tests.zoo import ultralytics_real\n\n\ndef build():\n"
                       "    return ultralytics_real.trained_like(ultralytics_real.yolo26n(), (1, 3, 320, 320))\n")
    summary = prune_model(spec, target="local", ratio=0.5, input_shape=SHAPE, output=tmp_path / "p")
    assert summary["groups_pruned"] > 0
    assert seen["err"] < 1e-3 * TOL, seen["err"]  # float64: rounding is no longer near the tolerance
    pruned = load_model(summary["model"], trust_factory=spec).module
    with torch.no_grad():  # a wrong cut: one kept conv row of a pruned group scaled
        conv = next(m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels > 8)
        conv.weight[0] *= 1.5
    with pytest.raises(PruneError, match="differs from the original"):
        check_surgery(seen["reference"], pruned, seen["removed"], seen["x"], **seen["kw"])


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_the_original_in_the_shipping_form_of_a_model_that_has_run_builds_its_own_anchors(cfg):
    """Issue 19: the export of a pruned, fine-tuned YOLOv8n stopped in Ultralytics' decode ('size of tensor a (0)
    must match ... 525'): the unpruned original, put in the shipping form of the pruned model after that one had
    run, was given its ``shape`` (anchors built) while its own anchors were empty. It now builds its own."""
    import torch

    from edgeprune.checks.heads import same_form, shipping_form
    from edgeprune.checks.outputs import flatten

    x = torch.zeros(1, 3, 160, 160)
    original, pruned = _build(cfg).eval(), _build(cfg).eval()
    ship = shipping_form(pruned, fmt="onnx", precision="fp32", input_shape=tuple(x.shape))
    with torch.no_grad():
        want = flatten(shipping_form(original, fmt="onnx", precision="fp32", input_shape=tuple(x.shape))(x))
        ship(x)  # the pruned model's shipping form has run: its head says its anchors are built for 160 px
        got = flatten(same_form(original, ship)(x))
    assert [t.shape for t in got] == [t.shape for t in want]
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
