"""One board's deploy folder, driven through the agent (``targets/agent.py``).

Every change on the board is an agent command with its arguments as argv:
``release ACTION DEPLOY_DIR --token ... --id ...`` (lock, stage, activate,
switch, gc, list) and ``run MODEL --inputs X.npy`` (the on-board check). No
shell line is ever built from a name; release ids are checked on both sides.
The agent's answers are parsed as untrusted JSON (size cap, protocol, types).

Where the deploy folder is: the targets file's ``deploy_dir``, else the
profile's ``reach.deploy_dir``, else the transport's ``default_deploy_dir`` for the
transport. It is separate from the agent's benchmark workdir, so clearing
benchmark files never touches a shipped model.

Example::

    with open_transport(reach) as t:
        board = Board(reach, t)
        board.prepare()                      # agent uploaded, folder made
        board.release("list")["current"]     # '20261128-101502-3f2a9c1d'
"""

from __future__ import annotations

import json
import re
from typing import Any

from edgeprune._paths import cache_dir
from edgeprune.bench.result import decode_agent_output
from edgeprune.bench.runner import AGENT_NAME, agent_path
from edgeprune.errors import AgentError, ShipError
from edgeprune.transport import transport_class

# Keep in step with the agent's RELEASE_ID.
RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

def deploy_dir_for(reach) -> str:
    """The deploy folder for ``reach`` as configured (may start with ``~``: the board expands it).

    Without a targets-file or profile ``deploy_dir``, the transport's
    ``default_deploy_dir`` (SSH ``~/edgeprune-deploy``, adb
    ``/data/local/tmp/edgeprune-deploy``; local: ``<cache>/local-deploy``).
    """
    if reach.deploy_dir:
        return reach.deploy_dir
    default = transport_class(reach.transport).default_deploy_dir
    if default is None:
        return str(cache_dir() / "local-deploy")
    return default


def check_release_id(rid: str, *, target: str) -> str:
    if not isinstance(rid, str) or not RELEASE_ID.match(rid):
        raise ShipError(
            f"{target}: {rid!r} is not a release id (letters, digits, '.', '_', '-'); "
            f"see `edgeprune releases --target {target}`"
        )
    return rid


class Board:
    """The deploy folder of one connected board (``transport`` must be open)."""

    def __init__(self, reach, transport) -> None:
        self.reach = reach
        self.t = transport
        self.spec = deploy_dir_for(reach)
        self.root: str | None = None  # absolute, after prepare()
        self.python = reach.python or transport.default_python

    @property
    def name(self) -> str:
        return self.reach.name

    def prepare(self) -> dict[str, Any]:
        """Workdir and agent in place, deploy folder created; returns the agent's ``init`` answer."""
        self.t.ensure_workdir()
        self.t.upload(agent_path(), AGENT_NAME)
        doc = self.release("init", timeout=60)
        root = doc.get("deploy_dir")
        if not isinstance(root, str) or not root.startswith("/") or "\n" in root:
            raise AgentError(f"agent on {self.name}: no valid deploy_dir in its answer")
        self.root = root
        return doc

    def path(self, *parts: str) -> str:
        if self.root is None:
            raise ShipError(f"{self.name}: the deploy folder is not prepared")
        return "/".join([self.root, *parts])

    def agent(self, *args: str, timeout: float) -> dict[str, Any]:
        """Run ``agent.py ARGS`` on the board; its JSON document, checked, or AgentError.

        A failure the agent reports carries its ``kind`` (e.g. ``lock_lost``,
        ``bad_release``, ``os_error``) as the exception's ``kind`` attribute.
        """
        argv = [self.python, AGENT_NAME, *args, "--deadline-s", str(int(timeout) + 5)]
        res = self.t.run(argv, timeout=timeout)
        where = f"agent on {self.name}"
        if res.overflow:
            raise AgentError(f"{where}: output passed the size limit; refused, and the agent was stopped")
        if not res.stdout.strip():
            tail = res.stderr.decode("utf-8", "replace").strip()[-300:] or "(no stderr)"
            if res.rc in (126, 127):
                raise AgentError(
                    f"{where}: cannot run '{self.python}' on the board ({tail}); "
                    f'set python = "/path/to/python3" in [{self.name}] of your targets file'
                )
            raise AgentError(f"{where}: exited with status {res.rc} and no result: {tail}")
        try:
            return decode_agent_output(res.stdout, target=self.name)
        except AgentError as exc:
            exc.kind = _error_kind(res.stdout)
            raise

    def release(self, action: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        """``agent.py release ACTION DEPLOY_DIR ARGS``; the answer must name the same action."""
        doc = self.agent("release", action, self.root or self.spec, *args, timeout=timeout)
        if doc.get("action") != action:
            raise AgentError(f"agent on {self.name}: answered {str(doc.get('action'))[:20]!r} to {action!r}")
        return doc

    def listing(self) -> dict[str, Any]:
        """The deploy folder's releases, current and previous ids, and lock (checked)."""
        doc = self.release("list")
        rels = doc.get("releases")
        if not isinstance(rels, list):
            raise AgentError(f"agent on {self.name}: 'releases' must be a list")
        clean = []
        for r in rels[:10000]:
            if not isinstance(r, dict) or not RELEASE_ID.match(str(r.get("id", ""))):
                continue
            manifest = r.get("manifest") if isinstance(r.get("manifest"), dict) else None
            size = r.get("bytes") if isinstance(r.get("bytes"), int) else None
            clean.append({"id": r["id"], "bytes": size, "manifest": manifest})
        ids = {r["id"] for r in clean}
        lock = doc.get("lock") if isinstance(doc.get("lock"), dict) else None
        return {
            "deploy_dir": str(doc.get("deploy_dir", self.spec))[:4096],
            "exists": doc.get("exists") is not False,
            "releases": clean,
            "current": doc.get("current") if doc.get("current") in ids else None,
            "previous": doc.get("previous") if doc.get("previous") in ids else None,
            "lock": lock,
        }


def _error_kind(stdout: bytes) -> str | None:
    try:
        doc = json.loads(stdout[: 1 << 20])
        kind = doc["error"]["kind"]
        return kind if isinstance(kind, str) and len(kind) < 40 else None
    except (ValueError, KeyError, TypeError):
        return None
