"""Device profiles: every shipped one loads; malformed ones fail naming file and key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from edgeprune.boards.profiles import list_profiles, load_profile, load_profile_file
from edgeprune.errors import ProfileError

SHIPPED = [
    "jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5",
    "pixel-8", "galaxy-s23", "coral-dev-board", "coral-usb", "local",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEPRUNE_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.delenv("EDGEPRUNE_PROFILES", raising=False)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads_with_sources(name):
    p = load_profile(name)
    assert p.name == name
    assert p.runtime in p.runtimes
    assert p.export_precision in p.precisions
    assert p.alignment() >= 1
    for section in ("cpu", "accelerator", "peak", "memory", "runtime", "alignment"):
        assert p.data[section]["source"].strip(), f"{name}: {section} has no source"


def test_the_list_is_exactly_the_shipped_boards():
    assert sorted(p.name for p in list_profiles()) == sorted(SHIPPED)


@pytest.mark.parametrize(
    ("name", "fmt", "precision"),
    [
        ("jetson-nano", "onnx", "fp16"),
        ("jetson-orin-nano", "onnx", "int8"),
        ("raspberry-pi-4", "tflite", "int8"),
        ("raspberry-pi-5", "tflite", "int8"),
        ("pixel-8", "tflite", "int8"),
        ("galaxy-s23", "tflite", "int8"),
        ("coral-dev-board", "tflite", "int8"),
        ("coral-usb", "tflite", "int8"),
        ("local", "onnx", "fp32"),
    ],
)
def test_export_defaults_match_what_each_board_runs_best(name, fmt, precision):
    p = load_profile(name)
    assert (p.export_format, p.export_precision) == (fmt, precision)


def test_jetson_nano_has_no_int8_and_says_why():
    p = load_profile("jetson-nano")
    assert "int8" not in p.precisions
    assert "INT8" in p.data["export"]["refuse_int8"]


def test_reach_and_python_of_stock_images():
    assert load_profile("jetson-nano").python == "3.6"
    assert load_profile("raspberry-pi-5").python == "3.11"
    assert load_profile("pixel-8").transport == "adb"
    assert load_profile("local").transport == "local"
    assert load_profile("jetson-orin-nano").alignment("int8") == 16


def test_unknown_target_suggests_the_nearest_names():
    with pytest.raises(ProfileError, match=r"unknown target 'raspbery-pi-5'.*did you mean raspberry-pi-5"):
        load_profile("raspbery-pi-5")
    with pytest.raises(ProfileError, match="edgeprune targets list"):
        load_profile("zzzzzz")


def test_local_figures_are_measured_positive_and_cached(tmp_path):
    p = load_profile("local")
    assert p.measured
    data = p.resolved()
    assert data["peak"]["fp32_gflops"] > 0
    assert data["memory"]["bandwidth_gbps"] > 0
    assert data["cpu"]["cores"] >= 1
    assert "measured" in data["peak"]["source"]
    cache = tmp_path / "cache" / "probe-local.json"
    assert cache.is_file()
    first = json.loads(cache.read_text())
    from edgeprune.boards.probe import probe_local

    again = probe_local()
    assert again["cached"] is True
    assert again["fp32_gflops"] == first["fp32_gflops"]


def test_a_damaged_probe_cache_is_measured_again(tmp_path):
    from edgeprune.boards.probe import probe_local

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "probe-local.json").write_text("{not json")
    result = probe_local()
    assert result["cached"] is False and result["fp32_gflops"] > 0
    json.loads((tmp_path / "cache" / "probe-local.json").read_text())


# -- malformed profiles ------------------------------------------------------

def _shipped_text(name: str) -> str:
    return load_profile(name).path.read_text()


def _write(tmp_path: Path, name: str, text: str, suffix: str = ".toml") -> Path:
    path = tmp_path / f"{name}{suffix}"
    path.write_text(textwrap.dedent(text))
    return path


def test_missing_key_names_file_and_key(tmp_path):
    text = _shipped_text("raspberry-pi-5").replace('default = "litert"\n', "")
    path = _write(tmp_path, "raspberry-pi-5", text)
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value) and "missing key 'runtime.default'" in str(err.value)


def test_wrong_type_names_key_and_expectation(tmp_path):
    text = _shipped_text("raspberry-pi-5").replace("bandwidth_gbps = 17.0", 'bandwidth_gbps = "fast"')
    path = _write(tmp_path, "raspberry-pi-5", text)
    with pytest.raises(ProfileError, match=r"key 'memory.bandwidth_gbps': expected a positive number.*'fast'"):
        load_profile_file(path)


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    text = _shipped_text("raspberry-pi-5").replace("[alignment]\n", "[alignment]\nchanels = 4\n")
    path = _write(tmp_path, "raspberry-pi-5", text)
    with pytest.raises(ProfileError, match=r"unknown key 'alignment.chanels' \(did you mean 'alignment.channels'\?\)"):
        load_profile_file(path)


def test_bad_choice_lists_the_allowed_values(tmp_path):
    text = _shipped_text("raspberry-pi-5").replace('transport = "ssh"', 'transport = "telnet"')
    path = _write(tmp_path, "raspberry-pi-5", text)
    with pytest.raises(ProfileError, match=r"'reach.transport': expected one of local, ssh, adb, got 'telnet'"):
        load_profile_file(path)


def test_inconsistent_default_precision_is_refused(tmp_path):
    text = _shipped_text("jetson-nano").replace('precision = "fp16"', 'precision = "int8"')
    path = _write(tmp_path, "jetson-nano", text)
    with pytest.raises(ProfileError, match=r"'export.precision': 'int8' is not in runtime.precisions"):
        load_profile_file(path)


def test_bad_toml_names_the_file(tmp_path):
    path = _write(tmp_path, "broken", "name = \n[cpu\n")
    with pytest.raises(ProfileError, match=rf"{path}: not valid TOML"):
        load_profile_file(path)


def test_bad_yaml_names_the_file_and_line(tmp_path):
    path = _write(tmp_path, "broken", "name: x\ncpu: [unclosed\n", suffix=".yaml")
    with pytest.raises(ProfileError, match=rf"{path}: not valid YAML at line"):
        load_profile_file(path)


def test_name_must_match_file(tmp_path):
    path = _write(tmp_path, "my-board", _shipped_text("raspberry-pi-5"))
    with pytest.raises(ProfileError, match="must match the file name 'my-board'"):
        load_profile_file(path)


def test_user_profiles_dir_adds_and_overrides(tmp_path, monkeypatch):
    import yaml

    board = load_profile("raspberry-pi-5").data | {"name": "lab-pi", "title": "Our lab's Pi"}
    user_dir = tmp_path / "boards"
    user_dir.mkdir()
    (user_dir / "lab-pi.yaml").write_text(yaml.safe_dump(board))
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(user_dir))
    p = load_profile("lab-pi")
    assert p.title == "Our lab's Pi" and p.path == user_dir / "lab-pi.yaml"
    assert "lab-pi" in {q.name for q in list_profiles()}


def test_user_profiles_dir_from_the_config_file(tmp_path, monkeypatch):
    user_dir = tmp_path / "boards"
    user_dir.mkdir()
    text = _shipped_text("raspberry-pi-5").replace('name = "raspberry-pi-5"', 'name = "pi-cm5"')
    (user_dir / "pi-cm5.toml").write_text(text)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'profiles_dirs = ["{user_dir}"]\n')
    monkeypatch.setenv("EDGEPRUNE_CONFIG", str(cfg))
    assert load_profile("pi-cm5").name == "pi-cm5"


def test_a_malformed_user_profile_fails_the_listing_naming_it(tmp_path, monkeypatch):
    user_dir = tmp_path / "boards"
    user_dir.mkdir()
    (user_dir / "bad.toml").write_text('schema = 1\nname = "bad"\n')
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(user_dir))
    with pytest.raises(ProfileError, match=r"bad.toml: missing key 'title'"):
        list_profiles()


def test_a_missing_profiles_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_PROFILES", str(tmp_path / "nope"))
    with pytest.raises(ProfileError, match="profiles folder does not exist"):
        list_profiles()
