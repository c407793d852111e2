"""Issue 18: a user's own classifier, weights and image folder go through the commands a user runs.

Nothing here is a built-in: the model is a factory module this test writes
(``usernet:build``), trained here on PNG files this test writes (sklearn's
digits, upscaled to 32x32 RGB, in three folders: train, val, test). The model
was trained on [0, 1] pixels, so edgeprune's ImageNet default would mis-feed
it. The test measures accuracy itself (its own PIL + torch / ONNX Runtime
loops), and the test folder is never given to edgeprune.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")

REPO = Path(__file__).resolve().parent.parent

USERNET = '''
import torch
from torch import nn


class UserNet(nn.Module):
    """A user's classifier: it does not say its input size; a fixed-size Linear after flatten decides it."""

    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 96, 3, padding=1, stride=2), nn.BatchNorm2d(96), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Linear(96 * 4 * 4, classes)

    def forward(self, x):
        return self.head(self.features(x))


class FreeNet(UserNet):
    """The same, but size-free (global pooling): only the data can say its input size."""

    def __init__(self, classes=10):
        super().__init__(classes)
        self.features[-2] = nn.AdaptiveAvgPool2d(4)


def build():
    return UserNet()


def build_free():
    return FreeNet()
'''


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0  # [0, 1], the user's way


def _folder_arrays(root: Path) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    xs, ys = [], []
    for k, name in enumerate(classes):
        for f in sorted((root / name).glob("*.png")):
            xs.append(_pixels(f))
            ys.append(k)
    return np.stack(xs), np.array(ys)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's project: usernet.py, weights.pt trained on [0, 1] pixels, images/{train,val,test}/."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("user")
    (root / "usernet.py").write_text(USERNET)
    digits = load_digits()
    rng = np.random.default_rng(7)
    order = rng.permutation(len(digits.target))
    parts = {"train": order[:1100], "val": order[1100:1450], "test": order[1450:]}
    for part, idx in parts.items():
        for i in idx:
            img = np.kron(digits.images[i] / 16.0, np.ones((4, 4)))  # 32x32
            rgb = np.stack([img, img * 0.8, img * 0.6], -1)
            dest = root / "images" / part / f"digit_{digits.target[i]}" / f"{i:04d}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rgb * 255).round().astype(np.uint8)).save(dest)
    sys.path.insert(0, str(root))
    try:
        import usernet
    finally:
        sys.path.remove(str(root))
    x, y = _folder_arrays(root / "images" / "train")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = usernet.build()
        opt = torch.optim.Adam(model.parameters(), 2e-3)
        for _ in range(12):
            perm = torch.randperm(len(xt))
            for i in range(0, len(xt), 64):
                b = perm[i:i + 64]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
                opt.step()
    model.eval()
    torch.save(model.state_dict(), root / "weights.pt")
    xv, yv = _folder_arrays(root / "images" / "val")
    with torch.no_grad():
        val_top1 = float((model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())
    assert val_top1 > 0.9, f"the user's model trained badly here ({val_top1:.3f}); the test needs a real model"
    return {"root": root, "val_top1": val_top1}


def _cli(user, *args, timeout=1200):
    env = {**os.environ, "PYTHONPATH": f"{user['root']}{os.pathsep}{REPO}"}
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          cwd=user["root"], env=env, timeout=timeout)


def _deploy_args(user, *extra):
    r = user["root"]
    return ["deploy", "-t", "local", "-m", "usernet:build", "--weights", str(r / "weights.pt"),
            "--data", str(r / "images" / "train"), "--val-data", str(r / "images" / "val"),
            "--speedup", "1.3", "--epochs", "6", "--threads", "1", *extra]


@pytest.mark.slow
def test_a_user_model_deploys_and_passes_the_gate_on_its_own_weights(user):
    """The done-when: no --force, no --trust-factory, the gate measured against the user's own weights."""
    p = _cli(user, *_deploy_args(user, "--normalize", "unit", "-o", "out"))
    assert p.returncode == 0, p.stderr[-3000:]
    out = user["root"] / "out"
    gate = json.loads((out / "verify" / "gate.json").read_text())
    assert gate["passed"] and not gate["forced"], gate
    # the original in the gate is the user's weights, on the val folder, as this test measures it
    assert gate["original"] == pytest.approx(user["val_top1"], abs=1e-4), gate
    assert gate["samples"] == 350
    # the shipped file, run by this test's own ONNX Runtime loop on images edgeprune never saw
    import onnxruntime as ort

    report = json.loads((out / "report" / "deploy.json").read_text())
    release = report["release"]
    shipped = Path(release["deploy_dir"]) / "current" / "model.onnx"  # what the board runs now
    from edgeprune._paths import sha256_file

    assert sha256_file(shipped) == release["sha256"]
    sess = ort.InferenceSession(str(shipped), providers=["CPUExecutionProvider"])
    x, y = _folder_arrays(user["root"] / "images" / "test")
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0].argmax(1) for i in range(len(x))])
    shipped_top1 = float((pred == y).mean())
    import torch as _t

    sys.path.insert(0, str(user["root"]))
    try:
        import usernet

        original = usernet.build()
        original.load_state_dict(_t.load(user["root"] / "weights.pt", weights_only=True))
        with _t.no_grad():
            original_top1 = float((original.eval()(_t.from_numpy(x)).argmax(1).numpy() == y).mean())
    finally:
        sys.path.remove(str(user["root"]))
    assert shipped_top1 >= original_top1 - 0.02, (shipped_top1, original_top1)  # 1 point + test-set noise
    # what the user said is recorded truthfully
    ft = json.loads((out / "finetune" / "finetune.json").read_text())
    assert "unit" in ft["data"]["preprocess"] and "imagenet" not in ft["data"]["preprocess"]
    assert ft["teacher"].startswith("usernet:build") and "weights.pt" in ft["teacher"]
    exp = json.loads((out / "export" / "export.json").read_text())
    assert exp["accuracy"]["original"] == gate["original"]
    assert exp["pruning"]["base_weights"].endswith("weights.pt")

    # a completed run, asked again with --json and --trust-factory: every stage reused
    p2 = _cli(user, *_deploy_args(user, "--normalize", "unit", "-o", "out", "--trust-factory", "usernet:build",
                                  "--json"))
    assert p2.returncode == 0, p2.stderr[-2000:]
    rep = json.loads(p2.stdout)
    assert rep["run"]["reused"] == ["measure", "prune", "finetune", "export", "verify", "measure-final", "ship"], rep["run"]

    # the .ept alone, from that factory, still never imports code
    p3 = _cli(user, "export", "-t", "local", "-m", str(out / "prune" / "model.ept"), "-o", "x")
    assert p3.returncode != 0
    assert "--trust-factory usernet:build" in p3.stderr and len(p3.stderr.strip().splitlines()) == 1, p3.stderr
    # with the factory named, it loads, and finds its original (the recorded weights file) to compare with
    p4 = _cli(user, "export", "-t", "local", "-m", str(out / "finetune" / "model.ept"), "--trust-factory",
              "usernet:build", "--data", str(user["root"] / "images" / "val"), "-o", "x", "--json")
    assert p4.returncode == 0, p4.stderr[-2000:]
    acc = json.loads(p4.stdout)["accuracy"]
    assert acc["original"] is not None and acc["model"] is not None


@pytest.mark.slow
def test_a_user_model_deploys_fine_tuned_in_two_processes(user):
    """deploy --nproc-per-node 2: the fine-tune stage trains under torchrun (gloo, DDP) on the user's folder,
    distilled from the user's own weights, and the gate and the ship stage take its model as they take one
    process's."""
    r = user["root"]
    args = ["deploy", "-t", "local", "-m", "usernet:build", "--weights", str(r / "weights.pt"), "--data",
            str(r / "images" / "train"), "--val-data", str(r / "images" / "val"), "--ratio", "0.25", "--epochs",
            "2", "--threads", "1", "--normalize", "unit", "--nproc-per-node", "2", "-o", "ddp"]
    p = _cli(user, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    out = r / "ddp"
    ft = json.loads((out / "finetune" / "finetune.json").read_text())
    assert ft["distributed"]["world_size"] == 2 and ft["distributed"]["backend"] == "gloo", ft["distributed"]
    assert ft["distributed"]["effective_batch"] == 64
    assert ft["teacher"].startswith("usernet:build") and "weights.pt" in ft["teacher"]
    assert "unit" in ft["data"]["preprocess"]
    assert ft["accuracy"]["original"] == pytest.approx(user["val_top1"], abs=1e-4)
    assert sorted(x.name for x in (out / "finetune" / "checkpoints").iterdir()) == ["best.pt", "last.pt",
                                                                                    "prelude.json"]
    gate = json.loads((out / "verify" / "gate.json").read_text())
    assert gate["passed"] and gate["original"] == pytest.approx(user["val_top1"], abs=1e-4), gate
    # the shipped file is the fine-tuned model: this test's own ONNX Runtime loop on the test folder
    import onnxruntime as ort

    release = json.loads((out / "report" / "deploy.json").read_text())["release"]
    sess = ort.InferenceSession(str(Path(release["deploy_dir"]) / "current" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    x, y = _folder_arrays(r / "images" / "test")
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 1]})[0].argmax(1) for i in range(len(x))])
    assert float((pred == y).mean()) >= user["val_top1"] - 0.03
    # what cannot be honoured in several processes is refused in one line, before any work
    i = args.index("--epochs")
    bad = _cli(user, *args[:i], *args[i + 2:-1], "ddp-bad", "--time-budget", "1")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: --time-budget with 2 processes: each would stop at a different step; give --steps or --epochs"]
    assert not (r / "ddp-bad").exists()


def test_a_model_fed_the_wrong_normalisation_is_found_and_nothing_ships(user):
    p = _cli(user, *_deploy_args(user, "-o", "wrong"))
    assert p.returncode == 2, p.stderr[-2000:]
    line = p.stderr.strip().splitlines()[-1]
    assert "imagenet normalisation" in line and "--normalize unit" in line, line
    assert not (user["root"] / "wrong" / "ship").exists()


def _cli_on_a_terminal(user, *args) -> tuple[int, str]:
    """The CLI with stderr on a pseudo-terminal, as a user at a terminal sees it: (exit code, stderr text)."""
    import pty
    import re

    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": f"{user['root']}{os.pathsep}{REPO}", "COLUMNS": "300"}
    proc = subprocess.Popen([sys.executable, "-m", "edgeprune", *args], stdout=subprocess.DEVNULL,
                            stderr=follower, cwd=user["root"], env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    code = proc.wait(timeout=600)
    os.close(leader)
    text = b"".join(chunks).decode("utf-8", "replace")
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")


def test_the_input_size_is_said_and_where_it_came_from(user):
    r = user["root"]
    code, err = _cli_on_a_terminal(user, "prune", "-t", "local", "-m", "usernet:build", "--weights",
                                   str(r / "weights.pt"), "--ratio", "0.25", "-o", "p1")
    assert code == 0, err[-2000:]
    assert "input 1x3x32x32 (the model itself: it runs on 32x32" in err, err[-2000:]
    summary = json.loads((r / "p1" / "summary.json").read_text())
    assert summary["input_shape"] == [1, 3, 32, 32] and summary["input_shape_source"].startswith("the model itself")
    # a size-free model: the data says it
    p = _cli(user, "prune", "-t", "local", "-m", "usernet:build_free", "--ratio", "0.25",
             "--data", str(r / "images" / "val"), "--normalize", "unit", "-o", "p2")
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((r / "p2" / "summary.json").read_text())
    assert summary["input_shape"] == [1, 3, 32, 32]
    assert summary["input_shape_source"].startswith("the data: the common size of the images"), summary
    # nothing says it: 224 with a warning line naming --input-shape, even in a log (not a terminal)
    p = _cli(user, "prune", "-t", "local", "-m", "usernet:build_free", "--ratio", "0.25", "-o", "p3")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "warning: input size 1x3x224x224" in p.stderr and "--input-shape" in p.stderr, p.stderr[-2000:]


def test_io_precision_int8_on_local_gives_the_pis_file(user):
    pytest.importorskip("onnx2tf")
    from edgeprune.export.tflite import tensor_report

    r = user["root"]
    p = _cli(user, "export", "-t", "local", "-m", "usernet:build", "--weights", str(r / "weights.pt"),
             "--format", "tflite", "--precision", "int8", "--io-precision", "int8", "--normalize", "unit",
             "--data", str(r / "images" / "val"), "-o", "tfl", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    final = [a for a in json.loads(p.stdout)["artifacts"] if a["final"]][0]
    rep = tensor_report(r / final["path"])  # a path relative to where the command ran
    assert rep["input_dtypes"] == ["int8"] and rep["output_dtypes"] == ["int8"], rep


def test_the_api_takes_the_clis_shape_string(user):
    import edgeprune
    from edgeprune.errors import ModelError

    sys.path.insert(0, str(user["root"]))
    try:
        lm = edgeprune.load_model("usernet:build", input_shape="1,3,32,32")
        assert lm.input_shape == (1, 3, 32, 32) and lm.input_shape_source == "--input-shape"
        with pytest.raises(ModelError, match=r"give 4 whole numbers N,C,H,W"):
            edgeprune.load_model("usernet:build", input_shape="1,3,thirty-two,32")
        with pytest.raises(ModelError, match=r"boards run batch 1"):
            edgeprune.load_model("usernet:build", input_shape=(8, 3, 32, 32))
    finally:
        sys.path.remove(str(user["root"]))


@pytest.mark.farm
def test_a_user_model_deploys_to_a_farm_board(user, farm, tmp_path):
    """The same user's model to a real sshd board (tests/farm), shipped and checked on it."""
    import uuid

    folder = f"/tmp/deploy-user-{uuid.uuid4().hex[:8]}" if farm.privileged else str(tmp_path / "deploy-b1")
    targets = tmp_path / "targets.toml"
    targets.write_text(farm.targets_toml(extra={"user-b1": {"board": "b1", "deploy_dir": folder}}))
    r = user["root"]
    env_extra = {"EDGEPRUNE_TARGETS": str(targets)}
    args = ["deploy", "-t", "user-b1", "-m", "usernet:build", "--weights", str(r / "weights.pt"),
            "--data", str(r / "images" / "train"), "--val-data", str(r / "images" / "val"), "--normalize", "unit",
            "--ratio", "0.25", "--epochs", "3", "--threads", "1", "--format", "onnx", "--precision", "fp32",
            "-o", str(tmp_path / "out"), "--json"]
    env = {**os.environ, **env_extra, "PYTHONPATH": f"{r}{os.pathsep}{REPO}"}
    p = subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True, cwd=r,
                       env=env, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(p.stdout)
    assert rep["ok"] and rep["gate"]["passed"] and rep["gate"]["original"] == pytest.approx(user["val_top1"], abs=1e-4)
    assert rep["release"]["verification"]["passed"] is True  # the held-out inputs ran on the board and matched
