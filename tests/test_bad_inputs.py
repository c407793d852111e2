"""Issue 23, section 2: a user's mistake is one line naming the option or file, a non-zero exit, never an
internal error, an exit 0 or a hang.

- Every numeric option of every command takes its range from one table (``edgeprune.validate.RANGES``):
  NaN, infinities and out-of-range values are refused where click parses them (exit 2, one line naming the
  option and the range), and the API refuses the same values with the same table before loading anything.
- Bad data (a table of files and factories), a class count that does not fit the model, ``.ept`` fields of
  the wrong type and a binary ``--plan`` are one line each.
"""

from __future__ import annotations

import math

import click
import pytest

from edgeprune.cli import COMMANDS, LazyGroup, _run
from edgeprune.cli._common import Number
from edgeprune.errors import EdgePruneError, OptionError
from edgeprune.validate import RANGES, Range, check

# -- numeric options ------------------------------------------------------------------------


def _commands() -> dict[str, click.Command]:
    group = LazyGroup()
    return {name: group.get_command(None, name) for name in COMMANDS}


def _bad_values(rng: Range) -> list[str]:
    """NaN, infinities, one step past each end, and a fraction where a whole number is wanted."""
    bad = ["nan", "inf", "-inf"]
    step = 1 if rng.integer else 1e-9 if rng.hi is not None and rng.hi <= 1 else 1e-6
    if rng.lo is not None:
        bad.append(repr(rng.lo if rng.lo_open else rng.lo - step))
    if rng.hi is not None:
        bad.append(repr(rng.hi if rng.hi_open else rng.hi + step))
    if rng.integer:
        bad.append("1.5")
    return bad


def _option_table() -> list[tuple[str, str, str, str]]:
    rows = []
    for name, cmd in _commands().items():
        for p in cmd.params:
            if isinstance(p, click.Option) and isinstance(p.type, Number):
                for value in _bad_values(p.type.range):
                    rows.append((name, p.opts[0], p.type.key, value))
    return rows


OPTION_TABLE = _option_table()


def test_every_numeric_option_takes_its_range_from_the_table():
    plain = [f"{name} {p.opts[0]} ({p.type.name})" for name, cmd in _commands().items() for p in cmd.params
             if isinstance(p, click.Option) and isinstance(p.type, (click.types.IntParamType,
                                                                      click.types.FloatParamType))]
    assert not plain, f"numeric options outside edgeprune.validate.RANGES: {plain}"
    covered = {(cmd, opt) for cmd, opt, _, _ in OPTION_TABLE}
    # the options the issue names are among them
    for cmd, opt in [("prune", "--speedup"), ("prune", "--latency-budget"), ("deploy", "--speedup"),
                     ("bench", "--timeout"), ("finetune", "--lr"), ("finetune", "--temperature"),
                     ("finetune", "--time-budget"), ("deploy", "--time-budget"), ("export", "--calib-count"),
                     ("quantize", "--calib-count"), ("rollback", "--wait"), ("finetune", "--seed")]:
        assert (cmd, opt) in covered, (cmd, opt)


@pytest.mark.parametrize("command, option, key, value", OPTION_TABLE,
                         ids=[f"{c}{o}={v}" for c, o, _, v in OPTION_TABLE])
def test_a_bad_number_is_one_line_naming_the_option_and_its_range(capsys, tmp_path, command, option, key, value):
    # only the bad option: click parses it (and fails) before it asks for the required ones
    code = _run([command, f"{option}={value}"], False)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: Invalid value for '{option}'") and RANGES[key].describe() in lines[0]
    assert "internal error" not in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_the_click_type_and_the_api_agree_on_every_key():
    for key, rng in RANGES.items():
        t = Number(key)
        for value in _bad_values(rng):
            with pytest.raises(click.BadParameter):
                t.convert(value, None, None)
            number = float(value) if not rng.integer or value in ("nan", "inf", "-inf", "1.5") else int(value)
            with pytest.raises(OptionError, match="--" + key.replace("_", "-")):
                check(key, number)
        for good in (rng.lo, rng.hi):
            if good is not None and not (rng.lo_open if good == rng.lo else rng.hi_open):
                assert t.convert(str(int(good) if rng.integer else good), None, None) == good
                assert check(key, good) == good


def _api_calls(tmp_path):
    import edgeprune as ep

    out = str(tmp_path / "out")
    nan, inf = math.nan, math.inf
    return [
        ("--speedup", lambda: ep.prune_model("digits-cnn", target="local", speedup=inf, output=out)),
        ("--speedup", lambda: ep.prune_model("digits-cnn", target="local", speedup=1e9, output=out)),
        ("--latency-budget", lambda: ep.prune_model("digits-cnn", target="local", latency_budget=inf, output=out)),
        ("--tolerance", lambda: ep.prune_model("digits-cnn", target="local", speedup=2, tolerance=nan, output=out)),
        ("--ratio", lambda: ep.prune_model("digits-cnn", target="local", ratio=nan, output=out)),
        ("--val-fraction", lambda: ep.prune_model("digits-cnn", target="local", ratio=0.3, val_fraction=nan,
                                                  output=out, data="digits")),
        ("--lr", lambda: ep.finetune_model("x.ept", data="digits", output=out, lr=nan)),
        ("--temperature", lambda: ep.finetune_model("x.ept", data="digits", output=out, temperature=nan)),
        ("--time-budget", lambda: ep.finetune_model("x.ept", data="digits", output=out, time_budget=nan)),
        ("--alpha", lambda: ep.finetune_model("x.ept", data="digits", output=out, alpha=1.5)),
        ("--threads", lambda: ep.finetune_model("x.ept", data="digits", output=out, threads=0)),
        ("--calib-count", lambda: ep.export_model("digits-cnn", target="local", output=out, calib_count=-1)),
        ("--max-accuracy-drop", lambda: ep.export_model("digits-cnn", target="local", output=out,
                                                        max_accuracy_drop=inf)),
        ("--min-agreement", lambda: ep.export_model("digits-cnn", target="local", output=out, min_agreement=nan)),
        ("--timeout", lambda: ep.bench_model("m.onnx", target="local", timeout=nan)),
        ("--runs", lambda: ep.bench_model("m.onnx", target="local", runs=0)),
        ("--speedup", lambda: ep.deploy_model("digits-cnn", target="local", output=out, speedup=inf)),
        ("--time-budget", lambda: ep.deploy_model("digits-cnn", target="local", output=out, ratio=0.3,
                                                  time_budget=nan)),
        ("--keep", lambda: ep.deploy_model("digits-cnn", target="local", output=out, ratio=0.3, keep=0)),
        ("--wait", lambda: ep.rollback("local", lock_wait_s=nan)),
    ]


@pytest.mark.parametrize("index", range(20))
def test_the_api_refuses_the_same_values_before_loading_anything(tmp_path, index):
    option, call = _api_calls(tmp_path)[index]
    with pytest.raises(OptionError) as info:
        call()
    assert str(info.value).startswith(option + " ") and "expected a" in str(info.value)
    assert isinstance(info.value, EdgePruneError) and info.value.exit_code == 2
    assert not (tmp_path / "out").exists()



# -- bad data: a table of files and factories ------------------------------------------------

FACTORIES = '''
import numpy as np


def raises():
    raise RuntimeError("no such bucket")


def strings():
    return ["a", "b"]


def no_images():
    return {"pixels": np.zeros((4, 16, 16), np.uint8)}


def wrong_shape():
    return np.zeros((4, 7), np.float32)


def bad_labels():
    return np.zeros((4, 16, 16), np.uint8), np.array([0, 1, 2, 99])


class _Items:
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return np.zeros((3, 5, 5), np.float32), 0


def wrong_items():
    return _Items()
'''


def _png_header(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` (Pillow checks the size when it opens the file)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    np = pytest.importorskip("numpy")
    from PIL import Image

    d = tmp_path_factory.mktemp("bad-data")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (20, 16, 16), dtype=np.uint8)
    y = np.arange(20) % 10
    np.savez(d / "good.npz", x=x, y=y)
    np.savez(d / "labels_high.npz", x=x, y=np.full(20, 12))
    np.savez(d / "labels_neg.npz", x=x, y=np.full(20, -1))
    for name, shape, value in [("inf_pixels", (20, 16, 16), np.inf), ("nan_pixels", (20, 16, 16), np.nan),
                               ("nan_inputs", (20, 1, 16, 16), np.nan)]:
        a = rng.random(shape).astype(np.float32)
        a.reshape(20, -1)[3, 5] = value
        np.savez(d / f"{name}.npz", x=a, y=y)
    objects = np.empty(3, dtype=object)
    objects[:] = [1, "a", None]
    np.savez(d / "object.npz", x=objects)
    np.savez(d / "strings.npz", x=np.array([["a"] * 16] * 16))
    np.save(d / "nan.npy", np.full((4, 1, 16, 16), np.nan, np.float32))
    np.save(d / "object.npy", objects, allow_pickle=True)
    (d / "bomb").mkdir()
    (d / "bomb" / "big.png").write_bytes(_png_header(20000, 20000))
    for c in "abc":
        (d / "three" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(d / "three" / c / f"{i}.png")
    (d / "garbage.py").write_text(FACTORIES)
    return d


DATA_TABLE = [
    # (command args after the model, words the one line says); {d}: the folder of bad files
    (["--data", "{d}/labels_high.npz"], "label 12 is out of range: the model outputs 10 classes"),
    (["--data", "{d}/labels_neg.npz"], "label -1 is out of range"),
    (["--data", "{d}/inf_pixels.npz"], "inf_pixels.npz: 1 value(s) are NaN or infinite (the first in sample 3"),
    (["--data", "{d}/nan_pixels.npz"], "nan_pixels.npz: 1 value(s) are NaN or infinite"),
    (["--data", "{d}/nan_inputs.npz"], "nan_inputs.npz: 1 value(s) are NaN or infinite"),
    (["--data", "{d}/good.npz", "--val-data", "{d}/nan_pixels.npz"], "nan_pixels.npz: 1 value(s) are NaN"),
    (["--data", "{d}/object.npz"], "object.npz:x.npy: an object array"),
    (["--data", "{d}/strings.npz"], "strings.npz: the images are <U1 values, not numbers"),
    (["--data", "{d}/bomb"], "big.png: this image is too large to decode (400000000 pixels"),
    (["--data", "{d}/three"], "three: 3 classes (a, b, c) but the model outputs 10"),
    (["--data", "digits", "--val-data", "{d}/three"], "three: 3 classes (a, b, c) but the model outputs 10"),
    (["--data", "garbage:raises"], "--data garbage:raises: your function raised RuntimeError: no such bucket"),
    (["--data", "garbage:strings"], "garbage:strings: item 0 is str of dtype <U1, not numbers"),
    (["--data", "garbage:no_images"], "garbage:no_images: returned a dict without images"),
    (["--data", "garbage:wrong_shape"], "array of shape (4, 7) is not a batch of images"),
    (["--data", "garbage:bad_labels"], "label 99 is out of range"),
    (["--data", "garbage:wrong_items"], "garbage:wrong_items: item 0 has shape (3, 5, 5), the model takes (1, 16, 16)"),
]
CALIB_TABLE = [
    ("{d}/nan.npy", "nan.npy: 1024 value(s) are NaN or infinite"),
    ("{d}/object.npy", "object.npy: an object array"),
    ("{d}/bomb", "big.png: this image is too large to decode"),
    ("garbage:raises", "--calib garbage:raises: your function raised RuntimeError: no such bucket"),
    ("garbage:strings", "garbage:strings: the samples are <U1 values, not numbers"),
]


def _one_line_run(capsys, args) -> str:
    code = _run(args, False)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code not in (0, None) and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "internal error" not in err and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("args, words", DATA_TABLE, ids=[" ".join(a) for a, _ in DATA_TABLE])
def test_bad_data_to_prune_is_one_line_naming_it(bad, capsys, monkeypatch, tmp_path, args, words):
    monkeypatch.syspath_prepend(str(bad))
    args = [a.format(d=bad) for a in args]
    line = _one_line_run(capsys, ["prune", "-t", "local", "-m", "digits-cnn", "--ratio", "0.3", *args,
                                  "-o", str(tmp_path / "o")])
    assert words in line, line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec, words", CALIB_TABLE, ids=[s for s, _ in CALIB_TABLE])
def test_bad_calibration_data_is_one_line_naming_it(bad, capsys, monkeypatch, tmp_path, spec, words):
    monkeypatch.syspath_prepend(str(bad))
    line = _one_line_run(capsys, ["export", "-t", "local", "-m", "digits-cnn", "--precision", "int8",
                                  "--calib", spec.format(d=bad), "-o", str(tmp_path / "o")])
    assert words in line, line
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    import edgeprune

    out = tmp_path_factory.mktemp("pruned")
    edgeprune.prune_model("digits-cnn", target="local", ratio=0.25, output=out)
    return out


def test_nan_data_to_finetune_is_one_line_before_training(bad, pruned, capsys, tmp_path):
    line = _one_line_run(capsys, ["finetune", "-m", str(pruned / "model.ept"), "--data", str(bad / "nan_pixels.npz"),
                                  "--steps", "1", "-o", str(tmp_path / "o")])
    assert "nan_pixels.npz: 1 value(s) are NaN or infinite" in line
    assert not (tmp_path / "o").exists()


# -- .ept fields and --plan files --------------------------------------------------------------

EPT_TABLE = [
    # (a dotted path into the file's meta, its new value, words)
    ("plans.0.align", "16", "plan field 'align' is '16' (str); expected a whole number"),
    ("plans.0.groups.1.keep", 20.5, "plan field 'groups[1].keep' is '20.5' (float)"),
    ("plans.0.groups.1.channels", 64.0, "plan field 'groups[1].channels' is '64.0' (float)"),
    ("plans.0.groups.0", "x", "plan field 'groups[0]' is 'x' (str); expected an object"),
    ("plans.0.rewrites", "abc", "plan field 'rewrites' is 'abc' (str)"),
    ("plans.0.input_shape", [1, 1, 16.5, 16], "plan field 'input_shape'"),
    ("plans.0.version", True, "plan version 'True'"),
    ("input_shape", ["1", 1, 16, 16], "input_shape ['1', 1, 16, 16] is not 4 sizes"),
    ("name", 5, "meta 'name' is not a short string"),
    ("plans", {}, "no plans"),
]


def _edit_ept(src, dst, key, value):
    import json

    import torch

    blob = torch.load(src, weights_only=True)
    meta = json.loads(blob["meta"])
    obj, parts = meta, key.split(".")
    for p in parts[:-1]:
        obj = obj[int(p)] if p.isdigit() else obj[p]
    obj[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    blob["meta"] = json.dumps(meta)
    torch.save(blob, dst)


@pytest.mark.parametrize("key, value, words", EPT_TABLE, ids=[k for k, _, _ in EPT_TABLE])
def test_an_ept_field_of_the_wrong_type_is_one_line(pruned, capsys, tmp_path, key, value, words):
    bad_ept = tmp_path / "bad.ept"
    _edit_ept(pruned / "model.ept", bad_ept, key, value)
    line = _one_line_run(capsys, ["export", "-t", "local", "-m", str(bad_ept), "-o", str(tmp_path / "o")])
    assert f"{bad_ept}: damaged or hostile .ept file" in line and words in line, line
    assert not (tmp_path / "o").exists()


PLAN_TABLE = [
    (b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00\x00binary", "not a text file"),
    (b'{"format": "edgeprune.channel-plan", "version": 1, "align": "x", "groups": []}', "plan field 'align'"),
    (b'{"format": "edgeprune.channel-plan", "version": 1, "groups": [{"id": "features.3", "channels": 32, '
     b'"keep": 16.5}]}', "plan field 'groups[0].keep' is '16.5' (float)"),
    (b'{"format": "edgeprune.channel-plan", "version": 1, "groups": {"a": 1}}', "plan field 'groups'"),
    (b"[1, 2", "not JSON"),
]


@pytest.mark.parametrize("content, words", PLAN_TABLE, ids=[w for _, w in PLAN_TABLE])
def test_a_bad_plan_file_is_one_line(capsys, tmp_path, content, words):
    plan = tmp_path / "plan.json"
    plan.write_bytes(content)
    line = _one_line_run(capsys, ["prune", "-t", "local", "-m", "digits-cnn", "--plan", str(plan),
                                  "-o", str(tmp_path / "o")])
    assert str(plan) in line and words in line, line
    assert not (tmp_path / "o").exists()
