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

