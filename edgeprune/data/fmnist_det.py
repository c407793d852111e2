"""``fmnist-det``: a semi-synthetic detection set that installs offline, built from real images.

What it is, honestly: real Fashion-MNIST garments (the 28x28 grey photos
of :mod:`edgeprune.data.fashion_mnist`, 10 classes), tinted and
composited at random scales and positions onto crops of real photographs
and textures that ship inside scikit-image and scikit-learn. The objects
and the backgrounds are real pictures; the scenes are not: no lighting,
perspective, motion blur or occlusion of a real camera, every object is
whole and upright. A detector's mAP on it tells whether a pipeline keeps a
detector working (pruning, INT8, export), not how it would do on street
scenes. No real labelled detection set of useful size installs here (see
FACTS.md), which is why this one exists.

=====  ======  ================================================  ===================
split  images  backgrounds (each only in its split)              garments from
=====  ======  ================================================  ===================
train  4,000   astronaut, brick, camera, cell, coins, hubble,    fashion-mnist train
               motorcycle left/right, text, china, retina, moon
val    500     coffee, gravel, ihc                               fashion-mnist val
test   1,000   chelsea, rocket, grass, page, flower              fashion-mnist test
=====  ======  ================================================  ===================

Each image: a random crop of a background (40-100 % of its shorter side,
flipped at random, brightness x0.7-1.2) resized to one of 256x256,
192x256, 256x192, 144x256 (h x w: several aspects, so letterboxing is
exercised); 1-5 garments, each scaled to a 24-112 px square, its grey
values used as shading (``colour * (0.35 + 0.65 v / 255)``) of a random
colour, alpha ``min(1, v / 48)``; placed wholly inside the image, never
covering more than 10 % of another (a garment too faint to see, opaque on
under 10 % of its square or 30 % of its side, is skipped). Boxes are exact: the extent of the
pixels where the garment's alpha is >= 0.5. Seeded per image from
``(SEED, split, index)``, so the first ``n`` images of a split are the same
however many are generated.

Written as a YOLO-format folder (what Ultralytics users have) in the data
folder (:func:`edgeprune.data.builtin.data_home`) as ``fmnist-det-v1/``:
``images/{train,val,test}/*.jpg`` (JPEG quality 90), ``labels/...txt``,
``data.yaml``, ``README.txt``, ``info.json`` (counts, seed, backgrounds,
``content_sha256`` over every image's pixels and label text, which is the
same on every machine with the same NumPy and Pillow) and ``SHA256SUMS``
(the files, checked by ``python -m edgeprune.data.fmnist_det check``).
It is generated on first use (about a minute; needs Fashion-MNIST
fetched and scikit-image installed) or by
``bash scripts/fetch-data.sh fmnist-det``; built in a staging folder and
renamed into place, so a half-written set is never read.

Example::

    path = builtin_path("fmnist-det")       # generates on first use
    split = open_detection(path / "data.yaml", input_shape=(1, 3, 160, 160))
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from edgeprune._paths import data_home
from edgeprune.data import fashion_mnist as fm
from edgeprune.data.dataset import DataError
from edgeprune.errors import EdgePruneError

# Lazy imports: the imports inside functions below load PIL, which importing this module does not;
# they load only when a function that needs them runs.

NAME = "fmnist-det"
VERSION = "v1"
SEED = 20261202
COUNTS = {"train": 4000, "val": 500, "test": 1000}
SIZES = ((256, 256), (192, 256), (256, 192), (144, 256))  # (h, w)
OBJECTS = (1, 5)
OBJECT_PX = (24, 112)
JPEG_QUALITY = 90
FETCH = "bash scripts/fetch-data.sh fmnist-det"

# (package, file): real photographs and textures shipped inside the wheels; each in one split only.
BACKGROUNDS = {
    "train": [("skimage", "astronaut.png"), ("skimage", "brick.png"), ("skimage", "camera.png"),
              ("skimage", "cell.png"), ("skimage", "coins.png"), ("skimage", "hubble_deep_field.jpg"),
              ("skimage", "motorcycle_left.png"), ("skimage", "motorcycle_right.png"), ("skimage", "text.png"),
              ("sklearn", "china.jpg"), ("skimage", "retina.jpg"), ("skimage", "moon.png")],
    "val": [("skimage", "coffee.png"), ("skimage", "gravel.png"), ("skimage", "ihc.png")],
    "test": [("skimage", "chelsea.png"), ("skimage", "rocket.jpg"), ("skimage", "grass.png"),
             ("skimage", "page.png"), ("sklearn", "flower.jpg")],
}
_FOLDERS = {"skimage": "data", "sklearn": "datasets/images"}
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}


def folder(dest: Path | None = None) -> Path:
    return dest or data_home() / f"{NAME}-{VERSION}"


def _background_file(pkg: str, name: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        extra = "scikit-image" if pkg == "skimage" else "scikit-learn"
        raise DataError(f"{NAME}: its backgrounds ship with {extra}, which is not installed; "
                        f"pip install 'edgeprune[detect]'")
    path = Path(spec.origin).parent / _FOLDERS[pkg] / name
    if not path.is_file():
        raise DataError(f"{NAME}: {path} is missing from the installed {pkg}; reinstall it")
    return path


def _load_backgrounds(split: str) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for pkg, name in BACKGROUNDS[split]:
        with Image.open(_background_file(pkg, name)) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return out


def _garments(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x, y, classes = fm.arrays()
    idx = fm.split_indices(len(y))[split]
    return x[idx], y[idx], classes


def _resize(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.BILINEAR), dtype=np.uint8)


def compose(rng: np.random.Generator, backgrounds: list[np.ndarray], garments: np.ndarray,
            labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(image (h, w, 3) uint8, boxes (K, 5) [class, x1, y1, x2, y2] in pixels)``."""
    h, w = SIZES[int(rng.integers(len(SIZES)))]
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    side = int(rng.uniform(0.4, 1.0) * min(bg.shape[:2]))
    ch, cw = (side, min(bg.shape[1], round(side * w / h))) if w >= h else (min(bg.shape[0], round(side * h / w)), side)
    y0, x0 = int(rng.integers(bg.shape[0] - ch + 1)), int(rng.integers(bg.shape[1] - cw + 1))
    crop = bg[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = _resize(np.ascontiguousarray(crop), (h, w)).astype(np.float64) * rng.uniform(0.7, 1.2)
    owner = np.full((h, w), -1, dtype=np.int64)  # which garment is on top at each pixel
    placed: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))):
        k = int(rng.integers(len(labels)))
        s = int(rng.integers(OBJECT_PX[0], min(OBJECT_PX[1], h, w) + 1))
        v = _resize(garments[k], (s, s)).astype(np.float64)
        alpha = np.minimum(1.0, v / 48.0)
        solid = alpha >= 0.5
        rows, cols = np.nonzero(solid)
        if solid.sum() < 0.1 * s * s or np.ptp(rows) < 0.3 * s or np.ptp(cols) < 0.3 * s:
            continue  # a garment too faint to be seen (mostly dark pixels) is not placed
        colour = rng.uniform(0.0, 1.0, 3) * 255.0
        shade = (0.35 + 0.65 * v / 255.0)[:, :, None] * colour
        for _try in range(20):
            ty, tx = int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1))
            under = owner[ty : ty + s, tx : tx + s][solid]
            ok = True
            for j, area in ((j, a) for j, a in placed):
                hit = int((under == j).sum())
                if hit > 0.1 * area or hit > 0.1 * solid.sum():
                    ok = False
                    break
            if ok:
                break
        else:
            continue
        region = img[ty : ty + s, tx : tx + s]
        region[:] = alpha[:, :, None] * shade + (1 - alpha[:, :, None]) * region
        owner[ty : ty + s, tx : tx + s][solid] = len(placed)
        placed.append((int(labels[k]), int(solid.sum())))
    boxes = []
    for j, (cls, _) in enumerate(placed):
        ys, xs = np.nonzero(owner == j)
        if len(ys):
            boxes.append([cls, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.clip(img, 0, 255).round().astype(np.uint8), np.asarray(boxes, dtype=np.float64).reshape(-1, 5)


def _label_text(boxes: np.ndarray, h: int, w: int) -> str:
    lines = []
    for c, x1, y1, x2, y2 in boxes:
        lines.append(f"{int(c)} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


README = """fmnist-det {version}: a SEMI-SYNTHETIC detection set (generated by edgeprune.data.fmnist_det, seed {seed}).
Real Fashion-MNIST garments (10 classes), tinted, composited at random scales and positions onto crops of
real photographs and textures shipped with scikit-image and scikit-learn; each background in one split only,
each garment image from the matching Fashion-MNIST split. Boxes are exact (the garment's opaque pixels).
Not a substitute for real camera images: no lighting, perspective, blur or real occlusion.
Fashion-MNIST: Zalando Research (MIT). Backgrounds: scikit-image and scikit-learn sample images (see their licences).
"""


def generate(dest: Path | None = None, *, counts: dict[str, int] | None = None, seed: int = SEED) -> Path:
    """Write the set (see the module docstring) into ``dest``, atomically; returns ``dest``."""
    from PIL import Image

    dest = folder(dest)
    counts = dict(COUNTS if counts is None else counts)
    stage = dest.with_name(f".{dest.name}.staging-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    content = hashlib.sha256()
    sums: list[str] = []
    boxes_total = {}
    classes: list[str] = []
    try:
        for split, n in counts.items():
            backgrounds = _load_backgrounds(split)
            garments, labels, classes = _garments(split)
            (stage / "images" / split).mkdir(parents=True)
            (stage / "labels" / split).mkdir(parents=True)
            boxes_total[split] = 0
            for i in range(n):
                rng = np.random.default_rng([seed, _SPLIT_ID[split], i])
                img, boxes = compose(rng, backgrounds, garments, labels)
                text = _label_text(boxes, *img.shape[:2])
                content.update(img.tobytes())
                content.update(text.encode())
                stem = f"{split}_{i:05d}"
                Image.fromarray(img).save(stage / "images" / split / f"{stem}.jpg", quality=JPEG_QUALITY)
                (stage / "labels" / split / f"{stem}.txt").write_text(text)
                boxes_total[split] += len(boxes)
        import yaml

        (stage / "data.yaml").write_text(yaml.safe_dump(
            {"path": ".", **{s: f"images/{s}" for s in counts}, "names": dict(enumerate(classes))},
            sort_keys=False))
        (stage / "README.txt").write_text(README.format(version=VERSION, seed=seed))
        info = {"name": NAME, "version": VERSION, "seed": seed, "semi_synthetic": True, "counts": counts,
                "boxes": boxes_total, "classes": classes,
                "backgrounds": {s: [f"{p}:{f}" for p, f in BACKGROUNDS[s]] for s in counts},
                "content_sha256": content.hexdigest(), "generator": "edgeprune.data.fmnist_det"}
        (stage / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        for p in sorted(stage.rglob("*")):
            if p.is_file():
                sums.append(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(stage)}")
        (stage / "SHA256SUMS").write_text("\n".join(sums) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        stage.rename(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


def check(dest: Path | None = None) -> str | None:
    """None when the set is present and every file matches ``SHA256SUMS``, else why not."""
    dest = folder(dest)
    sums = dest / "SHA256SUMS"
    if not sums.is_file():
        return f"{dest} not generated yet"
    for line in sums.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        p = dest / rel
        if not p.is_file():
            return f"{p} is missing"
        if hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return f"{p}: sha256 differs from SHA256SUMS (damaged)"
    return None


def can_generate() -> bool:
    """Are its sources here (Fashion-MNIST fetched, scikit-image and scikit-learn installed)?"""
    return all(importlib.util.find_spec(p) is not None for p in _FOLDERS) and fm.npz_path().is_file()


def builtin_path(name: str = NAME) -> Path:
    """The generated set's folder; generated now if it is not there (about a minute)."""
    if name != NAME:
        raise DataError(f"unknown built-in detection set '{name}' (there is {NAME})")
    dest = folder()
    if (dest / "SHA256SUMS").is_file() and (dest / "data.yaml").is_file():
        return dest
    if not fm.npz_path().is_file():
        raise DataError(f"{NAME} is built from Fashion-MNIST, which is not fetched yet; run once: {fm.FETCH}")
    for pkg in _FOLDERS:
        _background_file(pkg, BACKGROUNDS["train"][0][1] if pkg == "skimage" else "china.jpg")  # one line if absent
    return generate(dest)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["check"]:
            why = check()
            print(f"{NAME}: present and intact ({folder()})" if why is None else f"{NAME}: {why}")
            return 0 if why is None else 1
        if argv[:1] == ["generate"]:
            path = generate()
            info = json.loads((path / "info.json").read_text())
            print(f"{NAME}: {info['counts']} images, {info['boxes']} boxes -> {path} "
                  f"(content sha256 {info['content_sha256'][:16]}...)")
            return 0
    except EdgePruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m edgeprune.data.fmnist_det check | generate", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
