"""Issue 8, item 2: an output folder holds either the old complete result or the new complete one.

Runs of ``export`` and ``prune`` are interrupted (KeyboardInterrupt, as
Ctrl-C raises) at every progress step and while the result is swapped in;
each time the folder must be byte-for-byte the earlier result, with no
staging folder left beside it. A finished run's ``export.json`` names files
whose sha256 match, and every path it records is in the final folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgeprune import progress
from edgeprune._paths import sha256_file, staged_output
from edgeprune.errors import OutputError


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name]


class Interrupt:
    """Raise KeyboardInterrupt at the n-th progress step (a listener, as the CLI's spinner is)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def __call__(self, message: str, kind: str = "step") -> None:
        if kind != "step":  # count updates and notes belong to the step under way
            return
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt(f"at step {self.n}: {message}")

    def __enter__(self):
        progress._listener = self
        return self

    def __exit__(self, *exc):
        progress._listener = None


# -- the helper itself --------------------------------------------------------------


def test_new_folder_appears_only_when_complete(tmp_path):
    out = tmp_path / "out"
    with staged_output(out) as stage:
        (stage / "a.txt").write_text("a")
        assert not out.exists() and stage.parent == tmp_path and stage.name.startswith(".out.staging-")
    assert snapshot(out) == {"a.txt": sha256_file(out / "a.txt")} and not leftovers(tmp_path)


def test_existing_folder_is_swapped_and_other_files_kept(tmp_path):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "result.json").write_text("old")
    (out / "mine.txt").write_text("the user's")
    (out / "sub" / "deep.txt").write_text("deep")
    with staged_output(out) as stage:
        (stage / "result.json").write_text("new")
        assert (out / "result.json").read_text() == "old"
    assert (out / "result.json").read_text() == "new"
    assert (out / "mine.txt").read_text() == "the user's" and (out / "sub" / "deep.txt").read_text() == "deep"
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_leaves_the_old_folder_untouched(tmp_path, exc):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").write_text("old")
    before = snapshot(out)
    with pytest.raises(type(exc)):
        with staged_output(out) as stage:
            (stage / "result.json").write_text("half")
            raise exc
    assert snapshot(out) == before and not leftovers(tmp_path)


def test_interrupted_while_carrying_old_files_over(tmp_path, monkeypatch):
    import edgeprune._paths as paths

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    (out / "result.json").write_text("old")
    before = snapshot(out)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(paths, "_carry_over", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out) as stage:
            (stage / "result.json").write_text("new")
    assert snapshot(out) == before and not leftovers(tmp_path)


@pytest.mark.parametrize("bad", ["", "."])
def test_empty_or_current_folder_is_refused(tmp_path, monkeypatch, bad):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="--output"):
        with staged_output(bad):
            pass


def test_stale_staging_of_a_dead_run_is_removed(tmp_path):
    stale = tmp_path / ".out.staging-999999999-abcdef"
    stale.mkdir()
    (stale / "x").write_text("half")
    with staged_output(tmp_path / "out") as stage:
        (stage / "y").write_text("ok")
    assert not stale.exists()


# -- real stages, interrupted at every step -----------------------------------------

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _steps_of(run) -> int:
    with Interrupt(10**9) as counter:
        run()
    return counter.seen


def test_export_interrupted_at_every_step_keeps_the_earlier_export(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from edgeprune.api import export_model as export

    out = tmp_path / "export"

    def run():
        return export("digits-cnn", target="jetson-nano", output=out)  # onnx fp32 then fp16

    total = _steps_of(run)
    assert total >= 5
    first = json.loads((out / "export.json").read_text())
    before = snapshot(out)
    for n in range(1, total + 1):
        with pytest.raises(KeyboardInterrupt), Interrupt(n):
            run()
        assert snapshot(out) == before, f"interrupted at step {n} of {total}"
        assert not leftovers(tmp_path)
    import edgeprune._paths as paths

    real_write = paths.atomic_write_text

    def interrupted_report(path, text):
        if Path(path).name == "export.json":
            raise KeyboardInterrupt("while writing export.json")
        real_write(path, text)

    paths.atomic_write_text = interrupted_report
    try:
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        paths.atomic_write_text = real_write
    assert snapshot(out) == before and not leftovers(tmp_path)
    report = run()
    data = json.loads((out / "export.json").read_text())
    assert data["output_dir"] == str(out) and report.output_dir == out
    assert data["artifacts"] != first["artifacts"]  # a new result (new timestamps inside)
    for art in data["artifacts"]:
        path = Path(art["path"])
        assert path.parent == out and sha256_file(path) == art["sha256"]
    assert not leftovers(tmp_path)


def test_prune_interrupted_at_every_step_keeps_the_earlier_prune(tmp_path):
    pytest.importorskip("torch_pruning")
    from edgeprune.api import prune_model

    out = tmp_path / "pruned"

    def run(ratio=0.5):
        return prune_model("digits-cnn", target="local", output=out, ratio=ratio, align=False)

    total = _steps_of(run)
    before = snapshot(out)
    for n in range(1, total + 1):
        with pytest.raises(KeyboardInterrupt), Interrupt(n):
            run(0.25)
        assert snapshot(out) == before, f"interrupted at step {n} of {total}"
    summary = run(0.25)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary and on_disk["ratio"] == 0.25
    for key in ("model", "plan", "onnx", "summary"):
        assert Path(summary[key]).parent == out and Path(summary[key]).is_file()
    assert not leftovers(tmp_path)


def test_a_new_folder_interrupted_does_not_appear(tmp_path):
    pytest.importorskip("torch_pruning")
    from edgeprune.api import prune_model

    out = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt), Interrupt(4):
        prune_model("digits-cnn", target="local", output=out, ratio=0.5)
    assert not out.exists() and not leftovers(tmp_path)
    assert os.listdir(tmp_path) == []
