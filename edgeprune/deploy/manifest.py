"""The run manifest (``run.json``): what each stage of a deploy did, and whether a rerun may reuse it.

One manifest per board folder. Each stage records:

- ``state``: ``done``, ``skipped`` (nothing to do, e.g. no data to fine-tune
  on), ``failed`` (with ``error``), ``interrupted`` (Ctrl-C, a killed
  process leaves ``running``);
- ``key``: a hash of the stage's own arguments chained with the previous
  stage's key and the sha256 of the previous stage's outputs, so changing an
  argument of stage k, or any file stage k read, invalidates k and every
  later stage, and nothing before it;
- ``outputs``: the files it wrote (relative path and sha256);
- ``seconds``, ``board_measurements``, ``note`` and ``result`` (the small
  figures the report needs).

A stage is reused when its state is done/skipped, its key matches, and every
output still exists with the recorded sha256 (a file edited or removed by
hand is noticed). The manifest is rewritten atomically after every change,
so a deploy killed at any point leaves a manifest a rerun can trust.

Example::

    m = RunManifest.load_or_new(Path("out/run.json"), args={"model": "digits-cnn"})
    if not m.reusable("prune", key):
        ...
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune import __version__
from edgeprune._paths import atomic_write_text, sha256_file

REUSABLE = ("done", "skipped")
# The stages of a deploy, in order (edgeprune.deploy.pipeline runs them, edgeprune.deploy.report reads them).
STAGES = ("measure", "prune", "finetune", "export", "verify", "measure-final", "ship", "report")


def digest(value: Any) -> str:
    """A stable sha256 of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class RunManifest:
    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load_or_new(cls, path: Path, *, args: dict[str, Any], command: list[str] | None = None) -> RunManifest:
        """The manifest at ``path`` (a damaged one is started over), with this run's arguments recorded."""
        data: dict[str, Any] = {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict) and isinstance(loaded.get("stages"), dict):
                data = loaded
        except (OSError, ValueError):
            pass
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data.setdefault("created", now)
        data.setdefault("stages", {})
        data["runs"] = int(data.get("runs", 0)) + 1
        data.update({"edgeprune_version": __version__, "updated": now, "args": args, "command": command})
        m = cls(Path(path), data)
        m.save()
        return m

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str) + "\n")

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name) or {}

    def reusable(self, name: str, key: str, root: Path) -> bool:
        """Whether stage ``name`` completed with this ``key`` and its outputs are unchanged under ``root``."""
        rec = self.stage(name)
        if rec.get("state") not in REUSABLE or rec.get("key") != key:
            return False
        for out in (rec.get("outputs") or {}).values():
            path = root / out["path"]
            if not path.is_file() or sha256_file(path) != out["sha256"]:
                return False
        return True

    def start(self, name: str, key: str) -> None:
        self.data["stages"][name] = {"state": "running", "key": key, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.save()

    def finish(self, name: str, *, state: str, root: Path, outputs: dict[str, Path] | None = None,
               seconds: float, **info: Any) -> dict[str, Any]:
        rec = self.data["stages"].setdefault(name, {})
        rec.update(state=state, seconds=round(seconds, 2), **{k: v for k, v in info.items() if v is not None})
        rec["outputs"] = {label: {"path": str(Path(p).relative_to(root)), "sha256": sha256_file(p)}
                          for label, p in (outputs or {}).items()}
        self.save()
        return rec

    def fail(self, name: str, *, state: str, error: str, seconds: float, kind: str | None = None) -> None:
        rec = self.data["stages"].setdefault(name, {})
        rec.update(state=state, error=error, seconds=round(seconds, 2))
        if kind:
            rec["error_kind"] = kind
        rec.pop("outputs", None)
        self.save()

    def forget_after(self, names: list[str]) -> None:
        """Drop the records of ``names`` (the stages after one that ran again)."""
        for n in names:
            self.data["stages"].pop(n, None)
        self.save()

    def output_sha(self, name: str) -> dict[str, str]:
        return {k: v["sha256"] for k, v in (self.stage(name).get("outputs") or {}).items()}
