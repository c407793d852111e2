"""Issue 8, item 6: the smaller holes, each through the CLI as a user meets it.

(``bench`` removing a model the board cannot load is in test_bench_local.py
and test_bench_farm.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

ROOT = Path(__file__).resolve().parent.parent

# Six groups of 8 channels (the raspberry-pi-5 alignment: they keep all) and two of 32.
NARROW = """
import torch.nn as nn
def net():
    layers, c = [], 3
    for out in (32, 8, 8, 8, 8, 8, 8, 32, 16):
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        c = out
    m = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 4))
    m.input_shape = (1, 3, 16, 16)
    return m
"""

# Every block adds 1 after its BatchNorm: a removed channel would carry 1, not 0 (convnext-like refusal).
OFFSET = """
import torch, torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)) for _ in range(6))
        self.mid = nn.ModuleList(nn.Conv2d(16, 16, 1) for _ in range(6))
        self.fc = nn.Linear(16, 3)
    def forward(self, x):
        h = torch.relu(self.stem(x))
        for blk, mid in zip(self.blocks, self.mid):
            h = mid(blk(h) + 1.0)
        return self.fc(h.mean((2, 3)))
def net():
    m = Net()
    m.input_shape = (1, 3, 8, 8)
    return m
"""


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(ROOT), str(cwd or "")] if p))
    env.pop("EDGEPRUNE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "edgeprune", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_ratio_that_cannot_be_reached_says_what_was_and_why(tmp_path):
    res = cli("prune", "-t", "raspberry-pi-5", "-m", "digits-cnn", "--ratio", "0.999", "-o", str(tmp_path / "o"),
              "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    note = next(n for n in doc["notes"] if "asked to remove 99.9 %" in n)
    assert f"removed {100 * doc['removed_fraction']:.1f} %" in note
    assert "at least 8 channels" in note and "alignment" in note
    human = cli("prune", "-t", "raspberry-pi-5", "-m", "digits-cnn", "--ratio", "0.999", "-o", str(tmp_path / "h"))
    assert "note: asked to remove 99.9 %" in human.stdout


def test_groups_narrower_than_the_alignment_are_named_in_the_summary(tmp_path):
    (tmp_path / "narrowzoo.py").write_text(textwrap.dedent(NARROW))
    res = cli("prune", "-t", "raspberry-pi-5", "-m", "narrowzoo:net", "--ratio", "0.5", "-o", str(tmp_path / "o"),
              "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["groups_pruned"] < doc["groups_total"]
    note = next(n for n in doc["notes"] if "groups pruned" in n)
    assert f"{doc['groups_pruned']} of {doc['groups_total']} groups pruned" in note
    assert "6 groups have 8 channels or fewer" in note and "--no-align" in note


def test_surgery_refusal_lists_every_group_and_says_what_to_pass(tmp_path):
    (tmp_path / "offzoo.py").write_text(textwrap.dedent(OFFSET))
    args = ["prune", "-t", "local", "-m", "offzoo:net", "--ratio", "0.5", "--no-align"]
    res = cli(*args, "-o", str(tmp_path / "o"), "--json", cwd=tmp_path)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    err = doc["error"]
    assert err["kind"] == "prune" and "pass verify=False" not in err["message"]
    assert len(err["groups"]) >= 6 and all(isinstance(g, str) for g in err["groups"])  # the whole list
    line = res.stderr.strip()
    assert line.count("\n") == 0 and f"{len(err['groups'])} pruned groups" in line
    assert "more" in line and "--protect" in line and "--no-verify" in line
    ok = cli(*args, "--no-verify", "-o", str(tmp_path / "o"), "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    protect = [a for g in err["groups"] for a in ("--protect", g)]
    ok = cli(*args, *protect, "-o", str(tmp_path / "p"), "--json", cwd=tmp_path)
    assert ok.returncode in (0, 1), ok.stderr
    assert "differs from the original" not in ok.stderr


def test_empty_output_is_refused(tmp_path):
    res = cli("prune", "-t", "local", "-m", "digits-cnn", "--ratio", "0.3", "-o", "", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip() == (
        "error: --output is empty; give a folder for the results, e.g. --output out/")
    assert os.listdir(tmp_path) == []
    res = cli("export", "-t", "local", "-m", "digits-cnn", "-o", "", cwd=tmp_path)
    assert res.returncode == 1 and "--output is empty" in res.stderr and os.listdir(tmp_path) == []


def test_weights_given_a_folder_says_it_is_a_folder(tmp_path):
    res = cli("prune", "-t", "local", "-m", "digits-cnn", "--weights", str(tmp_path), "--ratio", "0.3",
              "-o", str(tmp_path / "o"))
    assert res.returncode == 1
    assert res.stderr.strip() == (f"error: --weights {tmp_path}: is a folder; give the weights file inside it "
                                  "(a state_dict .pt or a .ept)")


def test_min_agreement_failure_names_the_option_to_relax(tmp_path):
    args = ["export", "-t", "local", "--precision", "int8", "-m", "digits-cnn", "-o", str(tmp_path / "o")]
    res = cli(*args, "--min-agreement", "top1=1.0,cosine=0.99999999")
    assert res.returncode == 2
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "relax the check with --min-agreement top1=" in line
    value = line.split("--min-agreement ")[1].split()[0]
    again = cli(*args, "--min-agreement", value)
    assert again.returncode == 0, again.stderr  # the value it names is one the export passes
