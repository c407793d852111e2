"""Reading detection labels from files: YOLO ``.txt`` (with Ultralytics' ``data.yaml``) and COCO JSON, checked.

Every label is checked when a set is opened: a malformed line, a box
outside its image (beyond :data:`EDGE_TOLERANCE`), a class id the names do
not have, an image without its label file (a background image needs an
empty one, as Ultralytics writes them), a COCO annotation whose image or
category is not listed. All problems are collected; the first is the
error's one line, with how many more there are, and every problem is in
``error.details["problems"]``. Boxes are kept in source pixels,
``[class, x1, y1, x2, y2, crowd]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeprune.data.dataset import DataError
from edgeprune.errors import require
from edgeprune.tasks.detect_dataset import DetectionDataset

# Lazy imports: the imports inside functions below load yaml, which importing this module does not;
# they load only when a function that needs them runs.

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
EDGE_TOLERANCE = 0.01  # a box corner may pass the image edge by 1 % of its side (annotation tools round)


class _Problems:
    """Every bad label found while opening, reported as one line (the first) with the count."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        self.items.append(text)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        more = len(self.items) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''}: fix them all, see the error's details)" \
            if more else ""
        raise DataError(self.items[0] + tail, details={"problems": self.items[:1000]})


def _image_size(path: Path) -> tuple[int, int]:
    """(h, w) of the image as shown (EXIF orientation applied), from its header."""
    image_mod = require("PIL.Image", "detect", "reading image files")
    try:
        with image_mod.open(path) as im:
            w, h = im.size
            orient = im.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot decode this image ({type(exc).__name__}); remove or replace the file") from None
    return (w, h) if orient in (5, 6, 7, 8) else (h, w)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``images`` folder in the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_yolo_labels(path: Path, size: tuple[int, int], num_classes: int | None, problems: _Problems,
                     names_from: str) -> np.ndarray:
    """One label file -> ``(K, 6)`` source-pixel boxes; each problem is added to ``problems``."""
    h, w = size
    rows = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(f"{path}: cannot read this label file ({type(exc).__name__})")
        return np.zeros((0, 6))
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            vals = [float(v) for v in fields]
        except ValueError:
            vals = []
        polygon = len(vals) >= 7 and len(vals) % 2 == 1  # a segment label: its box, as Ultralytics reads it
        if not (len(vals) == 5 or polygon) or not all(np.isfinite(vals)):
            problems.add(f"{path} line {n}: expected 'class cx cy w h' (5 numbers) or 'class x1 y1 x2 y2 ...' "
                         f"(a polygon), got '{line.strip()[:60]}'")
            continue
        if polygon:
            xs, ys = np.asarray(vals[1::2]), np.asarray(vals[2::2])
            if xs.min() < 0 or ys.min() < 0 or xs.max() > 1 or ys.max() > 1:
                problems.add(f"{path} line {n}: polygon point outside the image (values must be within 0-1)")
                continue
            vals = [vals[0], (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, np.ptp(xs), np.ptp(ys)]
        c, cx, cy, bw, bh = vals
        if c != int(c) or c < 0 or (num_classes is not None and c >= num_classes):
            known = f"0-{num_classes - 1}" if num_classes else "whole numbers from 0"
            problems.add(f"{path} line {n}: class {fields[0]} is not in {names_from} ({known})")
            continue
        x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        if (min(cx, cy, bw, bh) < 0 or max(cx, cy, bw, bh) > 1 or min(x1, y1) < -EDGE_TOLERANCE
                or max(x2, y2) > 1 + EDGE_TOLERANCE):
            problems.add(f"{path} line {n}: box {cx:g} {cy:g} {bw:g} {bh:g} is outside the image "
                         "(YOLO boxes are centre x, y, width, height normalised to 0-1 by the image's size)")
            continue
        box = np.clip([x1 * w, y1 * h, x2 * w, y2 * h], 0, [w, h, w, h])
        if box[2] <= box[0] or box[3] <= box[1]:
            problems.add(f"{path} line {n}: box {cx:g} {cy:g} {bw:g} {bh:g} has no area")
            continue
        rows.append([c, *box, 0.0])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def _yolo_set(files: list[Path], *, num_classes: int | None, names_from: str, problems: _Problems,
              need_labels: bool = True) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    sizes, labels = [], []
    for f in files:
        size = _image_size(f)
        sizes.append(size)
        lp = label_path(f)
        if not lp.is_file():
            if need_labels:
                problems.add(f"{f}: no label file {lp}; an image without objects needs an empty one")
            labels.append(np.zeros((0, 6)))
            continue
        labels.append(read_yolo_labels(lp, size, num_classes, problems, names_from))
    return sizes, labels


def _names(value, where: str) -> list[str]:
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class ids 0..n-1") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{where}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids[:6]}")
        return [str(value.get(i, value.get(str(i)))) for i in ids]
    if isinstance(value, (list, tuple)) and value:
        return [str(v) for v in value]
    raise DataError(f"{where}: 'names' must list the class names (a list, or {{0: name, ...}})")


def _split_files(entry, root: Path, where: str, key: str) -> list[Path]:
    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    files: list[Path] = []
    for e in entries:
        p = Path(str(e)).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.exists() and str(e).startswith("../"):  # Roboflow's exports: '../train/images' beside the yaml
            p = root / str(e)[3:]
        if p.is_dir():
            found = _images_under(p)
            if not found:
                raise DataError(f"{where}: '{key}' folder {p} has no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
            files += found
        elif p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    q = q if q.is_absolute() else p.parent / q  # './images/x.jpg': beside the list, as Ultralytics
                    if not q.is_file():
                        raise DataError(f"{p}: lists {line.strip()}, which is not a file ({q})")
                    files.append(q)
        else:
            raise DataError(f"{where}: '{key}' is {e}: no such folder or .txt list (looked at {p})")
    return files


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not a readable YAML file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected keys path/train/val/names (Ultralytics' dataset file)")
    return data


def _from_yaml(path: Path, *, input_size, channels) -> dict[str, DetectionDataset]:
    data = _read_yaml(path)
    root = Path(str(data.get("path") or ".")).expanduser()
    root = root if root.is_absolute() else (path.parent / root)
    if "names" not in data:
        raise DataError(f"{path}: no 'names' (the class names, e.g. names: {{0: person, 1: car}})")
    names = _names(data["names"], str(path))
    if "nc" in data and int(data["nc"]) != len(names):
        raise DataError(f"{path}: nc is {data['nc']} but 'names' lists {len(names)} classes")
    for key in ("train", "val"):
        if not data.get(key):
            raise DataError(f"{path}: no '{key}' (an image folder or a .txt list, relative to {root})")
    problems = _Problems()
    parts: dict[str, DetectionDataset] = {}
    for key in ("train", "val", "test"):
        if not data.get(key):
            continue
        files = _split_files(data[key], root, str(path), key)
        sizes, labels = _yolo_set(files, num_classes=len(names), names_from=f"{path.name}'s names", problems=problems)
        parts[key] = DetectionDataset(files, sizes, labels, input_size=input_size, channels=channels, classes=names,
                                      source=f"{path} {key}")
    problems.raise_if_any()
    return parts


def _from_yolo_folder(folder: Path, *, input_size, channels, num_classes: int | None) -> DetectionDataset:
    files = _images_under(folder / "images")
    if not files:
        raise DataError(f"{folder / 'images'}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...)")
    names = None
    if (folder / "classes.txt").is_file():
        names = [n.strip() for n in (folder / "classes.txt").read_text().splitlines() if n.strip()]
    nc = len(names) if names else num_classes
    problems = _Problems()
    where = f"{folder / 'classes.txt'}" if names else ("the model's classes" if nc else "")
    sizes, labels = _yolo_set(files, num_classes=nc, names_from=where, problems=problems)
    problems.raise_if_any()
    if names is None:
        top = max((int(b[:, 0].max()) + 1 for b in labels if len(b)), default=1)
        names = [str(i) for i in range(max(top, nc or 0))]
    return DetectionDataset(files, sizes, labels, input_size=input_size, channels=channels, classes=names,
                            source=f"{folder} (YOLO labels)")


def _coco_image_root(path: Path, data: dict) -> Path:
    first = next((im.get("file_name") for im in data.get("images", []) if im.get("file_name")), None)
    stem = path.stem.split("_", 1)[1] if path.stem.startswith("instances_") else path.stem
    candidates = [path.parent, path.parent.parent / stem, path.parent / "images", path.parent.parent / "images",
                  path.parent / stem]
    for c in candidates:
        if first is None or (c / first).is_file():
            return c
    raise DataError(f"{path}: cannot find its images (looked for {first} in "
                    f"{', '.join(str(c) for c in candidates)}); put the JSON beside its image folder")


def _from_coco(path: Path, *, input_size, channels, images: Path | None = None) -> DetectionDataset:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(
            data.get("categories"), list):
        raise DataError(f"{path}: not a COCO instances file (expected 'images', 'annotations', 'categories')")
    try:
        cats = sorted(data["categories"], key=lambda c: int(c["id"]))
        cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
        names = [str(c.get("name", c["id"])) for c in cats]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: every category needs an integer 'id' (and a 'name')") from None
    root = images or _coco_image_root(path, data)
    problems = _Problems()
    ims: dict[int, dict] = {}
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            problems.add(f"{path}: an image entry without 'id' and 'file_name': {str(im)[:60]}")
            continue
        ims[im["id"]] = im
    files, sizes, labels, order = [], [], [], {}
    for iid, im in ims.items():
        f = root / str(im["file_name"])
        if not f.is_file():
            problems.add(f"{path}: image {iid} is {im['file_name']}, not found in {root}")
            continue
        order[iid] = len(files)
        files.append(f)
        sizes.append(_image_size(f))
        labels.append([])
    for k, a in enumerate(data.get("annotations") or []):
        where = f"{path} annotation {a.get('id', k) if isinstance(a, dict) else k}"
        if not isinstance(a, dict) or a.get("image_id") not in ims:
            problems.add(f"{where}: image_id {a.get('image_id') if isinstance(a, dict) else '?'} is not in 'images'")
            continue
        if a["image_id"] not in order:
            continue  # its image is missing: reported above
        try:
            cat = cat_index[int(a["category_id"])]
        except (KeyError, TypeError, ValueError):
            problems.add(f"{where}: category_id {a.get('category_id')} is not in 'categories'")
            continue
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            problems.add(f"{where}: bbox must be [x, y, width, height] in pixels, got {str(bbox)[:40]}")
            continue
        h, w = sizes[order[a["image_id"]]]
        x, y, bw, bh = (float(v) for v in bbox)
        tol_w, tol_h = EDGE_TOLERANCE * w, EDGE_TOLERANCE * h
        if bw <= 0 or bh <= 0 or x < -tol_w or y < -tol_h or x + bw > w + tol_w or y + bh > h + tol_h:
            problems.add(f"{where}: bbox {[round(v, 1) for v in bbox]} is outside its {w}x{h} image "
                         "(COCO boxes are [x, y, width, height] in pixels)")
            continue
        box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
        labels[order[a["image_id"]]].append([cat, *box, float(bool(a.get("iscrowd", 0)))])
    problems.raise_if_any()
    if not files:
        raise DataError(f"{path}: no images listed")
    arrays = [np.asarray(b, dtype=np.float64).reshape(-1, 6) for b in labels]
    return DetectionDataset(files, sizes, arrays, input_size=input_size, channels=channels, classes=names,
                            source=f"{path} (COCO)")


def _unlabelled(folder: Path, *, input_size, channels) -> DetectionDataset:
    files = _images_under(folder)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) and no labels")
    sizes = [_image_size(f) for f in files]
    return DetectionDataset(files, sizes, None, input_size=input_size, channels=channels,
                            source=f"{folder} (unlabelled images)")


__all__ = ["EDGE_TOLERANCE", "IMAGE_SUFFIXES", "label_path", "read_yolo_labels"]
