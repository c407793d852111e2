"""Issue 8, item 1: a model file never decides what code runs.

Hostile ``.ept`` files (a factory base, a base naming a module with side
effects at import, a state_dict holding a non-tensor, a plan that does not
fit, an absurd input shape) and a plain pickle: nothing runs, one line each.
A factory base is built only when the user names that factory.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from edgeprune.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent

TINY_ZOO = """
import torch.nn as nn
def tiny():
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    m.input_shape = (1, 3, 16, 16)
    return m
def other():
    return tiny()
"""


def cli(*args, cwd, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    return subprocess.run(
        [sys.executable, "-m", "edgeprune", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits_ept(tmp_path_factory) -> Path:
    """A real pruned digits-cnn .ept (built-in base)."""
    from edgeprune.models import build
    from edgeprune.prune import ChannelPlan, example_input, prunable_groups, prune_, save_pruned

    model = build("digits-cnn", pretrained=False)
    x = example_input((1, 1, 16, 16))
    plan = ChannelPlan.uniform(prunable_groups(model, x), 0.5, input_shape=(1, 1, 16, 16), base="digits-cnn")
    prune_(model, plan)
    return save_pruned(model, plan, tmp_path_factory.mktemp("ept") / "model.ept")


def rewrite(src: Path, dst: Path, *, meta=None, state=None) -> Path:
    blob = torch.load(src, weights_only=True)
    m = json.loads(blob["meta"])
    if meta:
        m.update(meta)
    blob["meta"] = json.dumps(m)
    if state:
        blob["state_dict"] = {**blob["state_dict"], **state}
    torch.save(blob, dst)
    return dst


def test_factory_base_in_a_file_is_not_called(digits_ept, tmp_path):
    """The reproduction from the issue: base "tempfile:mkdtemp" made a folder in $TMPDIR."""
    hostile = rewrite(digits_ept, tmp_path / "hostile.ept", meta={"base": "tempfile:mkdtemp"})
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    res = cli("export", "-t", "local", "-m", str(hostile), "-o", str(tmp_path / "out"), cwd=tmp_path,
              env_extra={"TMPDIR": str(tmpdir)})
    line = one_line(res)
    assert "never imports code named inside a model file" in line
    assert "--trust-factory tempfile:mkdtemp" in line
    assert list(tmpdir.iterdir()) == [], "the file made edgeprune call tempfile.mkdtemp"
    assert not (tmp_path / "out").exists()


def test_os_abort_base_does_not_kill_the_process(digits_ept, tmp_path):
    hostile = rewrite(digits_ept, tmp_path / "abort.ept", meta={"base": "os:abort"})
    res = cli("prune", "-t", "local", "-m", str(hostile), "--ratio", "0.3", "-o", str(tmp_path / "o"),
              cwd=tmp_path)
    assert res.returncode == 1, res.stderr  # SIGABRT would be -6
    assert "factory 'os:abort'" in one_line(res)


def test_base_module_with_side_effects_is_never_imported(digits_ept, tmp_path):
    marker = tmp_path / "imported"
    (tmp_path / "sidefx.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef build():\n    raise SystemExit(9)\n"
    )
    hostile = rewrite(digits_ept, tmp_path / "sidefx.ept", meta={"base": "sidefx:build"})
    from edgeprune.load import load_model

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(ModelError, match="--trust-factory sidefx:build"):
            load_model(str(hostile))
        with pytest.raises(ModelError, match="you trusted 'other:fn', a different factory"):
            load_model(str(hostile), trust_factory="other:fn")
    finally:
        sys.path.remove(str(tmp_path))
    res = cli("export", "-t", "local", "-m", str(hostile), "-o", str(tmp_path / "out"), cwd=tmp_path)
    one_line(res)
    assert not marker.exists(), "a module named inside the file was imported"


def test_state_dict_with_a_non_tensor_is_one_line(digits_ept, tmp_path):
    from edgeprune.load import load_model

    bad = rewrite(digits_ept, tmp_path / "obj.ept", state={"features.0.weight": "not a tensor"})
    with pytest.raises(ModelError, match=r"obj.ept: damaged or hostile .ept file \(its state_dict entry") as exc:
        load_model(str(bad))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"plans": [{"format": "edgeprune.channel-plan", "version": 1, "groups": [
            {"id": "nosuch.layer", "channels": 16, "keep": 8}]}]}, "is not a channel group of this model"),
        ({"plans": "everything"}, "no plans"),
        ({"input_shape": [1, 1, 100000, 100000]}, "input_shape"),
        ({"base": ["digits-cnn"]}, "meta 'base' is not a short string"),
        ({"base": "../../etc/passwd"}, "unknown base architecture"),
    ],
)
def test_a_plan_or_meta_that_does_not_fit_is_one_line(digits_ept, tmp_path, change, words):
    from edgeprune.load import load_model

    bad = rewrite(digits_ept, tmp_path / "bad.ept", meta=change)
    with pytest.raises(ModelError, match=words) as exc:
        load_model(str(bad))
    assert "\n" not in str(exc.value)


def test_plain_pickle_is_refused_not_called_not_a_model(tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    res = cli("export", "-t", "local", "-m", str(path), "-o", str(tmp_path / "out"), cwd=tmp_path)
    line = one_line(res)
    assert "refused" in line and "plain Python pickle, protocol 4" in line
    assert "Warning" not in res.stderr and "not a model" not in line


def test_a_named_factory_loads_its_ept_only_when_trusted(tmp_path):
    (tmp_path / "myzoo.py").write_text(textwrap.dedent(TINY_ZOO))
    out = tmp_path / "pruned"
    res = cli("prune", "-t", "local", "-m", "myzoo:tiny", "--ratio", "0.5", "--no-align", "-o", str(out),
              "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    ept = out / "model.ept"
    export = ["export", "-t", "local", "-o"]
    refused = cli(*export, str(tmp_path / "e0"), "-m", str(ept), cwd=tmp_path)
    assert "--trust-factory myzoo:tiny" in one_line(refused)
    by_option = cli(*export, str(tmp_path / "e1"), "-m", str(ept), "--trust-factory", "myzoo:tiny", "--json",
                    cwd=tmp_path)
    assert by_option.returncode == 0, by_option.stderr
    assert json.loads(by_option.stdout)["pruning"]["base"] == "myzoo:tiny"
    by_weights = cli(*export, str(tmp_path / "e2"), "-m", "myzoo:tiny", "--weights", str(ept), "--json",
                     cwd=tmp_path)
    assert by_weights.returncode == 0, by_weights.stderr
    a, b = (json.loads(r.stdout)["artifacts"][0]["metadata"]["source_sha256"] for r in (by_option, by_weights))
    assert a == b  # the same pruned weights either way
    wrong = cli(*export, str(tmp_path / "e3"), "-m", "myzoo:other", "--weights", str(ept), cwd=tmp_path)
    assert "was pruned from 'myzoo:tiny', not 'myzoo:other'" in one_line(wrong)


# -- issue 23: no code from any file: every pickle in it is checked before a library loader sees it ----------

class _Payload:
    """Pickles as ``fn(*args)``: what a hostile file's pickle asks the unpickler to call."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(marker: Path) -> dict[str, tuple[object, str]]:
    """name -> (object whose pickle runs code, the global it asks for)."""
    import builtins

    m = str(marker)
    sneaky = (f"(open({m!r}, 'w').close(), ((__import__('torch').zeros(1, 3, 16, 16),), {{}}))[1]")
    return {
        "os.system": (_Payload(os.system, f"touch '{m}'"), "posix.system"),
        "eval": (_Payload(builtins.eval, f"open({m!r}, 'w').close()"), "builtins.eval"),
        "exec": (_Payload(builtins.exec, f"open({m!r}, 'w').close()"), "builtins.exec"),
        "Popen": (_Payload(subprocess.Popen, ["touch", m]), "subprocess.Popen"),
        # returns what torch expects (sample inputs) after running: the file would load normally
        "returns-expected": (_Payload(builtins.eval, sneaky), "builtins.eval"),
    }


def _torch_bytes(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _rezip(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """``src`` (a zip) copied to ``dst`` with the members ending in a key of ``replace`` replaced."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = next((v for k, v in replace.items() if info.filename.endswith(k)), None)
            zout.writestr(info.filename, zin.read(info) if data is None else data)
    return dst


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x)) * torch.tensor(2.0)  # a tensor constant: data/constants/tensor_0
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, Path]:
    """A harmless ExportedProgram and TorchScript file of a small conv net (16x16 input)."""
    root = tmp_path_factory.mktemp("good")
    model = _Tiny().eval()
    x = torch.zeros(1, 3, 16, 16)
    torch.export.save(torch.export.export(model, (x,)), root / "good.pt2")
    torch.jit.save(torch.jit.trace(model, x, check_trace=False), root / "good.ts")
    return {"pt2": root / "good.pt2", "ts": root / "good.ts"}


def _pt2_with_pickled_entry(good: Path, dst: Path, folder: str, blob: bytes) -> Path:
    """``good`` with its first weight (``weights``) or constant (``constants``) stored as a pickle: ``blob``."""
    import zipfile

    with zipfile.ZipFile(good) as z:
        cfg_name = next(n for n in z.namelist() if n.endswith(f"data/{folder}/model_{folder}_config.json"))
        cfg = json.loads(z.read(cfg_name))
    entry = next(iter(cfg["config"].values()))
    entry["use_pickle"] = True
    return _rezip(good, dst, {cfg_name.split("/", 1)[1]: json.dumps(cfg).encode(),
                              f"data/{folder}/{entry['path_name']}": blob})


def _nested(blob: bytes) -> bytes:
    """``blob`` as a member of a zip inside a zip: an archive entry hidden two archives deep."""
    import io
    import zipfile

    for _ in range(2):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("inner/data.pkl" if _ == 0 else "outer/model.pt", blob)
        blob = buf.getvalue()
    return blob


def _hostile(kind: str, good_files, payload, tmp_path: Path) -> Path:
    if kind == "pt2-sample-inputs":
        return _rezip(good_files["pt2"], tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": _torch_bytes(payload)})
    if kind == "pt2-constant":
        return _pt2_with_pickled_entry(good_files["pt2"], tmp_path / "evil.pt2", "constants", _torch_bytes(payload))
    if kind == "pt2-weight":
        return _pt2_with_pickled_entry(good_files["pt2"], tmp_path / "evil.pt2", "weights", _torch_bytes(payload))
    if kind == "pt2-nested":
        blob = _nested(pickle.dumps(payload, protocol=2))
        return _rezip(good_files["pt2"], tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": blob})
    if kind == "torchscript":
        return _rezip(good_files["ts"], tmp_path / "evil.ts", {"/constants.pkl": pickle.dumps(payload, protocol=2)})
    if kind == "pt":
        (tmp_path / "evil.pt").write_bytes(_torch_bytes({"w": torch.zeros(2), "x": payload}))
        return tmp_path / "evil.pt"
    if kind == "pt-legacy":
        torch.save({"x": payload}, tmp_path / "evil.pt", _use_new_zipfile_serialization=False)
        return tmp_path / "evil.pt"
    if kind == "ept":
        from edgeprune.prune.io import FORMAT

        (tmp_path / "evil.ept").write_bytes(_torch_bytes({"format": FORMAT, "version": 1, "meta": payload,
                                                          "state_dict": {}}))
        return tmp_path / "evil.ept"
    raise AssertionError(kind)


KINDS = ["pt2-sample-inputs", "pt2-constant", "pt2-weight", "pt2-nested", "torchscript", "pt", "pt-legacy", "ept"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["os.system", "eval", "exec", "Popen", "returns-expected"])
def test_a_file_whose_pickle_calls_code_is_refused_naming_the_global(good_files, tmp_path, kind, how):
    from edgeprune.load import load_model

    marker = tmp_path / "marker"
    payload, wanted = _payloads(marker)[how]
    path = _hostile(kind, good_files, payload, tmp_path)
    with pytest.raises(ModelError) as exc:
        load_model(str(path))
    line = str(exc.value)
    assert "\n" not in line and str(path) in line
    assert f"asks for the global {wanted}" in line, line
    assert not marker.exists(), f"{kind}: the file's pickle ran"


def test_the_hole_was_real_torch_alone_runs_the_sample_inputs_pickle(good_files, tmp_path):
    """The reproduction from the issue: torch.export.load unpickles sample_inputs with weights_only=False."""
    from edgeprune.safeload import check_file, quiet

    marker = tmp_path / "marker"
    path = _hostile("pt2-sample-inputs", good_files, _payloads(marker)["returns-expected"][0], tmp_path)
    with pytest.raises(ModelError, match="builtins.eval"):
        check_file(path)
    assert not marker.exists()
    with quiet():  # torch mis-formats its log record of the fallback ("--- Logging error ---")
        torch.export.load(str(path))  # what edgeprune no longer does: torch loads it and runs the payload
    assert marker.exists()


@pytest.mark.parametrize("command", ["export", "prune", "finetune-teacher"])
def test_hostile_pt2_through_the_cli_is_one_line_and_runs_nothing(good_files, tmp_path, command):
    marker = tmp_path / "marker"
    evil = _hostile("pt2-sample-inputs", good_files, _payloads(marker)["os.system"][0], tmp_path)
    args = {
        "export": ["export", "-t", "local", "-m", str(evil), "-o", str(tmp_path / "out")],
        "prune": ["prune", "-t", "local", "-m", str(evil), "--ratio", "0.3", "-o", str(tmp_path / "out")],
        "finetune-teacher": ["finetune", "-m", "digits-cnn", "--data", "fashion-mnist", "--teacher", str(evil),
                             "-o", str(tmp_path / "out"), "--steps", "1"],
    }[command]
    res = cli(*args, cwd=tmp_path)
    line = one_line(res)
    assert "evil.pt2" in line and "posix.system" in line, line
    assert "Logging error" not in res.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_hostile_npz_is_refused_naming_the_global(tmp_path):
    np = pytest.importorskip("numpy")
    from edgeprune.data import DataError
    from edgeprune.safeload import check_file, np_load

    marker = tmp_path / "marker"
    arr = np.empty(1, dtype=object)
    arr[0] = _Payload(os.system, f"touch '{marker}'")
    np.savez(tmp_path / "evil.npz", x=np.zeros((2, 1, 16, 16), np.float32), y=arr)
    for call in (lambda: check_file(tmp_path / "evil.npz", error=DataError),
                 lambda: np_load(tmp_path / "evil.npz", error=DataError)):
        with pytest.raises(DataError, match=r"evil.npz:y.npy: refused: its pickle asks for the global posix.system"):
            call()
    plain = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "objects.npy", plain)
    with pytest.raises(DataError, match="objects.npy: an object array"):
        check_file(tmp_path / "objects.npy", error=DataError)
    res = cli("prune", "-t", "local", "-m", "digits-cnn", "--data", str(tmp_path / "evil.npz"), "--ratio", "0.3",
              "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert "posix.system" in one_line(res)
    assert not marker.exists()


def test_a_pickle_before_a_zip_and_a_duplicated_member_are_refused(good_files, tmp_path):
    from edgeprune.safeload import check_file

    marker = tmp_path / "marker"
    polyglot = tmp_path / "polyglot.pt"  # torch reads a file not starting with PK as a pickle
    polyglot.write_bytes(pickle.dumps(_Payload(os.system, f"touch '{marker}'"), protocol=2)
                         + good_files["pt2"].read_bytes())
    with pytest.raises(ModelError, match="posix.system"):
        check_file(polyglot)
    harmless_front = tmp_path / "front.pt2"  # a plain pickle in front: torch.export.load would still read the zip
    harmless_front.write_bytes(pickle.dumps(1, protocol=2) + good_files["pt2"].read_bytes())
    with pytest.raises(ModelError, match="front.pt2: refused: a zip archive with other data in front of it"):
        check_file(harmless_front)
    import zipfile

    dup = tmp_path / "dup.pt2"
    with zipfile.ZipFile(good_files["pt2"]) as zin, zipfile.ZipFile(dup, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
        zout.writestr(next(n for n in zin.namelist() if n.endswith("sample_inputs/model.pt")), b"x")
    with pytest.raises(ModelError, match="holds '.*model.pt' twice"):
        check_file(dup)
    assert not marker.exists()


@pytest.mark.parametrize("change, words", [
    (("torch.ops.aten.relu.default", "torch.serialization.os.system"), "its graph calls 'torch.serialization.os"),
    (("torch.ops.aten.relu.default", "_operator.attrgetter"), "its graph calls '_operator.attrgetter'"),
])
def test_a_pt2_graph_calling_anything_but_operators_is_refused(good_files, tmp_path, change, words):
    import zipfile

    from edgeprune.safeload import check_graph

    with zipfile.ZipFile(good_files["pt2"]) as z:
        name = next(n for n in z.namelist() if n.endswith("models/model.json"))
        text = z.read(name).decode()
    assert change[0] in text
    bad = _rezip(good_files["pt2"], tmp_path / "bad.pt2", {name.split("/", 1)[1]: text.replace(*change).encode()})
    with pytest.raises(ModelError, match=words):
        check_graph(bad)


def test_the_safe_expressions_of_a_dynamic_pt2_pass_and_an_eval_does_not():
    from edgeprune.safeload import _safe_expr

    assert _safe_expr("Mul(Integer(32), Symbol('s53', positive=True, integer=True))")
    assert _safe_expr("Max(2, s0) + FloorDiv(s1, 2)")
    for bad in ("__import__('os').system('x')", "exec(chr(111))", "Symbol('x').__class__", "lambda: 1"):
        assert not _safe_expr(bad), bad


def test_harmless_files_pass_the_scan(good_files, digits_ept, tmp_path):
    np = pytest.importorskip("numpy")
    from edgeprune.safeload import check_file

    torch.save(_Tiny().state_dict(), tmp_path / "sd.pt")
    torch.save(_Tiny().state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save({"p": torch.nn.Parameter(torch.ones(2)), "h": torch.ones(2).half(), "i": torch.arange(3),
                "size": torch.Size([1, 2]), "dev": torch.device("cpu")}, tmp_path / "misc.pt")
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((2, 3), np.float32), y=np.arange(2))
    for path in [*good_files.values(), digits_ept, *(tmp_path / n for n in ("sd.pt", "legacy.pt", "misc.pt",
                                                                          "d.npz"))]:
        assert check_file(path) in ("zip", "pickle"), path


def test_a_harmless_pt2_exports_end_to_end(good_files, tmp_path):
    res = cli("export", "-t", "local", "-m", str(good_files["pt2"]), "-o", str(tmp_path / "out"), "--json",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["input_shape"] == [1, 3, 16, 16]  # the program's own sample input
    assert (tmp_path / "out" / "good.fp32.onnx").is_file()


def test_terminal_escapes_from_a_file_are_shown_escaped(digits_ept, tmp_path):
    from edgeprune.progress import printable

    assert printable("a\x1b]0;owned\x07b\nerror: forged") == "a\\x1b]0;owned\\x07b\\nerror: forged"
    forged = "evil\x1b]0;owned\x07\x1b[2J\nerror: forged line"
    bad = rewrite(digits_ept, tmp_path / "esc.ept", meta={"name": forged})
    res = cli("export", "-t", "local", "-m", str(bad), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    for text in (res.stdout, res.stderr):
        assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text
        assert not any(line.startswith("error: forged") for line in text.splitlines())
    assert all(p.name.isprintable() for p in (tmp_path / "out").iterdir())
    # an error naming the file's name: one line, escaped
    bad2 = rewrite(digits_ept, tmp_path / "esc2.ept", meta={"name": forged, "task": "evil\x1b[31m\nerror: x"})
    line = one_line(cli("export", "-t", "local", "-m", str(bad2), "-o", str(tmp_path / "o2"), cwd=tmp_path))
    assert "\x1b" not in line
