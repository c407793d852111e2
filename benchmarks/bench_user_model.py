"""A user's own classifier through ``edgeprune deploy``, as a new user would run it (issue 18's figures).

The benchmark plays the user: it writes a model factory (``benchnet:build``,
not a built-in), writes a labelled image folder of Fashion-MNIST PNGs (RGB,
32x32, a few hundred per class: train / val / test), trains the model on
[0, 1] pixels, then runs ``edgeprune deploy --target local`` with
``--weights``, ``--data train/``, ``--val-data val/``, ``--normalize unit``,
``--speedup S`` for ONNX Runtime fp32 and LiteRT full INT8. It measures the
original and the shipped file itself on the test folder edgeprune never saw
(its own PIL + ONNX Runtime / LiteRT loops), and the speedup the deploy
measured on the board. Writes its section of benchmarks/RESULTS.md.

    python benchmarks/bench_user_model.py                 # 300/60/100 images per class, --speedup 1.3
    python benchmarks/bench_user_model.py --per-class 500 --speedup 1.5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_line, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FACTORY = '''
from torch import nn


class BenchNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        c = [32, 64, 96, 128]
        layers, cin = [], 3
        for i, cout in enumerate(c):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, stride=1 if i == 0 else 2), nn.BatchNorm2d(cout),
                       nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(self.features(x))


def build():
    return BenchNet()
'''


def write_folders(root: Path, per_class: tuple[int, int, int]) -> None:
    from PIL import Image

    from edgeprune.data.builtin import data_home

    npz = np.load(data_home() / "fashion-mnist-v1.npz")
    x, y = npz["x"], npz["y"]
    rng = np.random.default_rng(11)
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    for k in range(10):
        idx = rng.permutation(np.flatnonzero(y == k))
        start = 0
        for part, n in zip(("train", "val", "test"), per_class, strict=True):
            for i in idx[start:start + n]:
                img = Image.fromarray(x[i]).resize((32, 32), Image.BILINEAR).convert("RGB")
                dest = root / part / f"{k}-{names[k]}" / f"{i:05d}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                img.save(dest)
            start += n


def arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for k, d in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for f in sorted(d.glob("*.png")):
            with Image.open(f) as im:
                xs.append(np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0)
            ys.append(k)
    return np.stack(xs), np.array(ys)


def train(root: Path, epochs: int) -> float:
    import torch

    sys.path.insert(0, str(root))
    import benchnet

    x, y = arrays(root / "images" / "train")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = benchnet.build()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model.eval()
    torch.save(model.state_dict(), root / "weights.pt")
    xs, ys = arrays(root / "images" / "test")
    with torch.no_grad():
        return float((model(torch.from_numpy(xs)).argmax(1).numpy() == ys).mean())


def shipped_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """The shipped file on the test folder, by this benchmark's own runtime loop (quantizing I/O itself)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        pred = [sess.run(None, {name: x[i:i + 1]})[0].argmax(1)[0] for i in range(len(x))]
        return float((np.array(pred) == y).mean())
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    pred = []
    for i in range(len(x)):
        a = x[i:i + 1].transpose(0, 2, 3, 1)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            a = np.clip(np.round(a / scale + zero), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
        it.set_tensor(inp["index"], a.astype(inp["dtype"]))
        it.invoke()
        pred.append(it.get_tensor(out["index"]).astype(np.float32).argmax(1)[0])
    return float((np.array(pred) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=300, help="training images per class (val: 1/5, test: 1/3)")
    ap.add_argument("--speedup", type=float, default=1.3)
    ap.add_argument("--epochs", type=int, default=6, help="the user's own training epochs")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    per = (args.per_class, max(args.per_class // 5, 20), max(args.per_class // 3, 30))
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-bench-user-") as tmp:
        root = Path(tmp)
        (root / "benchnet.py").write_text(FACTORY)
        write_folders(root / "images", per)
        original_top1 = train(root, args.epochs)
        xs, ys = arrays(root / "images" / "test")
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}"}
        for label, extra in (("ONNX Runtime fp32", []),
                             ("LiteRT full INT8", ["--format", "tflite", "--precision", "int8"])):
            out = root / f"out-{len(rows)}"
            cmd = ["edgeprune", "deploy", "-t", "local", "-m", "benchnet:build", "--weights", "weights.pt",
                   "--data", "images/train", "--val-data", "images/val", "--normalize", "unit",
                   "--speedup", f"{args.speedup:g}", "--epochs", "4", "--threads", "1", *extra,
                   "-o", out.name, "--json"]
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "edgeprune", *cmd[1:]], cwd=root, env=env,
                               capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                rows.append({"runtime": label, "error": p.stderr.strip().splitlines()[-1][:300], "wall_s": wall})
                continue
            rep = json.loads(p.stdout)
            rel = rep["release"]
            art = Path(rel["deploy_dir"]) / "current" / f"model{Path(rel['artifact']).suffix}"
            rows.append({"runtime": label, "command": " ".join(cmd), "wall_s": round(wall, 1),
                         "gate": rep["gate"], "speedup_measured": rep["latency"].get("speedup"),
                         "final_ms": rep["latency"].get("final_ms"), "unpruned_ms": rep["latency"].get("unpruned_ms"),
                         "shipped_top1_test": shipped_top1(art, xs, ys)})
    lines = [f"Machine: {machine_line()}; load average at the end {os.getloadavg()[0]:.2f}.",
             "",
             f"A user's own model (a factory, not a built-in: 8 convs, {args.epochs} epochs of the user's own "
             f"training on [0, 1] pixels) and image folders of Fashion-MNIST PNGs (32x32 RGB; {per[0]} / {per[1]} / "
             f"{per[2]} per class for train / val / test). `--val-data` is the gate's held-out set; the test "
             "folder is never given to edgeprune: both top-1 columns on it are this benchmark's own loops. "
             f"Original top-1 on the test folder: **{original_top1:.4f}**.",
             "",
             "| runtime | speedup asked | speedup measured (same batch) | gate (val, edgeprune) | shipped top-1 on test (own loop) | wall |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['runtime']} | {args.speedup:g}x | - | FAILED: {r['error']} | - | {r['wall_s']:.0f} s |")
            continue
        g = r["gate"]
        lines.append(f"| {r['runtime']} | {args.speedup:g}x | {r['speedup_measured']:.2f}x "
                     f"({r['final_ms']:.4g} vs {r['unpruned_ms']:.4g} ms) | {g['final']:.4f} vs original "
                     f"{g['original']:.4f} ({'passed' if g['passed'] else 'FAILED'}) | {r['shipped_top1_test']:.4f} | "
                     f"{r['wall_s']:.0f} s |")
    cmds = [r["command"] for r in rows if "command" in r]
    lines += ["", "Commands (run by the benchmark in its own folder):", ""] + [f"    {c}" for c in cmds]
    lines += ["", f"Reproduce: `python benchmarks/bench_user_model.py --per-class {args.per_class} "
              f"--speedup {args.speedup:g}`"]
    body = "## A user's own model through deploy (issue 18)\n\n" + "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("user-model", body)


if __name__ == "__main__":
    main()
