"""A user's trained Ultralytics detector through ``edgeprune deploy``, to ``local`` and to a farm board (issue 19).

The benchmark plays the user who trained a YOLOv8n with Ultralytics and has its ``best.pt``: the
checkpoint is the reference detector's trained weights (``yolov8n-fmnist-det``, Ultralytics'
``yolov8n.yaml`` with nc=10 trained at 160 px by ``benchmarks/train_reference.py`` with
Ultralytics' own loss), written as Ultralytics' trainer writes ``best.pt`` (its dict, half-precision
EMA, then its ``strip_optimizer``; tests/zoo/ultralytics_real.py). The user's factory is
``YOLO("best.pt").model``, their data the YOLO folder's ``data.yaml`` (fmnist-det, semi-synthetic:
train / val / test). Then, as a user types it::

    edgeprune deploy -t TARGET -m userdet:build --data data.yaml --input-shape 1,3,160,160 \\
        --speedup 1.3 --steps 150 --format onnx --precision fp32 --threads 1

The benchmark then runs the file the board holds with its own ONNX Runtime loop on all 1,000 test
images (the gate read 500 of them) and measures its mAP50-95 with pycocotools itself.

    python benchmarks/bench_user_detector.py                 # local, then a farm board (root: the SSH farm)
    python benchmarks/bench_user_detector.py --targets local
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_line, write_section  # noqa: E402

from edgeprune._paths import sha256_file  # noqa: E402

NAME = "yolov8n-fmnist-det"
SIZE = 160
FACTORY = '''
from ultralytics import YOLO


def build():
    return YOLO({path!r}).model
'''


def write_project(root: Path) -> Path:
    """best.pt (as Ultralytics writes it) and userdet.py; returns the data.yaml the user gives."""
    from edgeprune.data.fmnist_det import folder
    from edgeprune.models import build
    from tests.zoo.ultralytics_real import save_checkpoint

    model = build(NAME, pretrained=True)
    save_checkpoint(model, root / "best.pt", cfg="yolov8n.yaml", imgsz=SIZE)
    (root / "userdet.py").write_text(FACTORY.format(path=str(root / "best.pt")))
    return folder() / "data.yaml"


def shipped_map(path: Path, data: Path) -> dict:
    """The benchmark's own measurement of the shipped file: ONNX Runtime, every test image, pycocotools."""
    import onnxruntime as ort
    import torch

    from edgeprune.tasks.detect_data import open_detection
    from edgeprune.tasks.detect_eval import evaluate

    split = open_detection(data, input_shape=(1, 3, SIZE, SIZE), num_classes=10)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    fig = evaluate(lambda x: [torch.from_numpy(o) for o in sess.run(None, {name: x.numpy()})], split.test,
                   num_classes=10, batch_size=1)
    return {"map50_95": round(fig["map50_95"], 4), "map50": round(fig["map50"], 4), "images": len(split.test)}


def deploy(root: Path, data: Path, target: str, env: dict, speedup: float, steps: int) -> dict:
    """One deploy as a child process (:func:`bench_zoo._timed`: exit, wall, the child's own peak RSS)."""
    from bench_zoo import _timed

    out = root / f"out-{target}"
    args = ["deploy", "-t", target, "-m", "userdet:build", "--data", str(data), "--input-shape",
            f"1,3,{SIZE},{SIZE}", "--speedup", str(speedup), "--steps", str(steps), "--format", "onnx",
            "--precision", "fp32", "--threads", "1", "-o", str(out)]
    run = _timed(args, root, env)
    if run["code"] != 0:
        print((root / "log.txt").read_text()[-3000:])
    row = {"target": target, "rc": run["code"], "wall_s": round(run["seconds"]),
           "peak_rss_gib": round(run["rss_mib"] / 1024, 2),
           "command": "edgeprune " + " ".join(a if a != str(data) else "data.yaml" for a in args[:-2]),
           "headline": run["error"][:300]}
    report = out / "report" / "deploy.json"
    rep = json.loads(report.read_text()) if report.is_file() else {}
    if rep.get("shipped"):
        gate, rel = rep["gate"], rep["release"]
        # the file shipped is the export stage's (a farm board's folder is in the board's own /tmp)
        shipped = next(p for p in (out / "export").glob("*.onnx") if sha256_file(p) == rel["sha256"])
        row.update(gate={k: gate.get(k) for k in ("original", "final", "drop", "samples", "passed", "metric")},
                   speedup=(rep.get("latency") or {}).get("speedup"), own=shipped_map(shipped, data),
                   shipped_file=shipped.name)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", nargs="+", default=["local", "farm"])
    ap.add_argument("--speedup", type=float, default=1.3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    from edgeprune.models import ultra

    ultra.import_ultralytics()
    rows = []
    with tempfile.TemporaryDirectory(prefix="userdet-") as tmp:
        root = Path(tmp)
        data = write_project(root)
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}"}
        for target in a.targets:
            if target != "farm":
                rows.append(deploy(root, data, target, env, a.speedup, a.steps))
                print(json.dumps(rows[-1], default=str), flush=True)
                continue
            from tests.farm.farm import BoardSpec, Farm, can_use_namespaces

            if not can_use_namespaces():
                print("farm skipped: needs root")
                continue
            with Farm([BoardSpec("d0")]) as farm:
                toml = root / "farm.toml"
                toml.write_text(farm.targets_toml(extra={"farm-d0": {"deploy_dir": f"/tmp/deploy-userdet-{os.getpid()}"}}))
                rows.append(deploy(root, data, "farm-d0", {**env, "EDGEPRUNE_TARGETS": str(toml)}, a.speedup, a.steps))
                print(json.dumps(rows[-1], default=str), flush=True)
    if a.no_write:
        return
    lines = ["## A user's trained YOLOv8n through `deploy`, to `local` and a farm board (issue 19)", "",
             "Command: `python benchmarks/bench_user_detector.py` (its docstring says what the user has: "
             "`best.pt` as Ultralytics' trainer writes it, `YOLO(\"best.pt\").model` as the factory, the YOLO "
             "folder's `data.yaml`). Own mAP: the benchmark's ONNX Runtime loop over the shipped file on all 1,000 "
             "test images (pycocotools); the gate's: deploy's, on 500 of them. fmnist-det is semi-synthetic.", "",
             f"Machine: {machine_line()}", "",
             "| target | exit | original mAP50-95 (gate) | shipped (gate) | drop (gate, pts) | shipped, own measurement "
             "(1,000 images) | board's speedup | wall | peak RSS |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        g, own = r.get("gate") or {}, r.get("own") or {}
        sp = r.get("speedup")
        lines.append(f"| {r['target']} | {r['rc']} | {g.get('original', '-')} | {g.get('final', '-')} | "
                     f"{g.get('drop', '-')} | {own.get('map50_95', '-')} | "
                     f"{f'{sp:.2f}x' if isinstance(sp, (int, float)) else sp or '-'} | {r['wall_s']} s | "
                     f"{r['peak_rss_gib']} GiB |")
    lines += ["", *[f"- {r['target']}: `{r['command']}`" + (f"; {r['headline']}" if r["headline"] else "")
                    for r in rows]]
    write_section("user-detector", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
