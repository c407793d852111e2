"""A phone's deploy folder without Python: the agent's ``release`` actions as one shell script.

NOT YET RUN AGAINST A REAL PHONE (a FAKE adb and FAKE run-as in tests/).

:class:`PhoneFolder` is a :class:`~edgeprune.ship.board.Board` whose
``release(ACTION, ...)`` runs :data:`DEPLOY_SCRIPT` with ``adb shell`` instead
of ``agent.py release``, with the same layout and the same answers
(``targets/PROTOCOL.md``, "release"), so :class:`~edgeprune.ship.lock.BoardLock`
and the ship's staging and gc work on a phone unchanged:

- ``releases/ID/``, ``staging/ID/``, ``current`` and ``previous`` (relative
  symlinks ``releases/ID``), ``lock.json`` (made with ``ln``: link(2), whole or
  not at all; its mtime is its heartbeat);
- ``current`` is switched by making a new link and renaming it over the old
  one (``mv -T``: rename(2) on the same file system, never following the old
  link). A toybox without ``-T`` (older Android) gets remove-then-rename,
  which is NOT atomic: the answer says so (``notes``) and the ship reports it;
- release ids are checked here (:data:`~edgeprune.ship.board.RELEASE_ID`) and
  again in the script; every name reaches the shell as an argument, never in
  the script's text; nothing outside the folder is removed.

Where: ``/data/local/tmp/edgeprune-deploy`` (the adb transport's default), the
targets file's ``deploy_dir``, or with ``run_as = "PKG"`` the app's own
``files/edgeprune-deploy`` through ``run-as PKG`` (a debuggable app: then the
script runs as the app, and files go in through a pipe, since the app cannot
read ``/data/local/tmp`` and the shell user cannot write the app's folder).

Example::

    folder = PhoneFolder(reach, transport)
    folder.prepare()["current"]          # '20261128-101502-3f2a9c1d' or None
    folder.put(Path("model.tflite"), "model.tflite", folder=staged)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeprune._paths import sha256_file
from edgeprune.errors import AgentError, ShipError
from edgeprune.ship.board import RELEASE_ID, Board

MAX_REPLY = 16 * 2**20
_TOKEN = re.compile(r"^(-|[A-Za-z0-9]{1,100})$")
DEPLOY_SCRIPT = r"""
act=$1 root=$2 tok=$3 arg=$4
say() { printf '%s=%s\n' "$1" "$2"; }
err() { echo "@@err $1 $2"; exit 2; }
id_ok() { case "$1" in ""|.*|*[!A-Za-z0-9._-]*) err bad_release "not a release id: $1";; esac; }
rel() { l=$(readlink "$1" 2>/dev/null) || return 0; case "$l" in releases/*) echo "${l#releases/}";; esac; }
holds() { [ -f lock.json ] && grep -qF "\"token\": \"$tok\"" lock.json; }
need_lock() { holds || err lock_lost "this deploy no longer holds the deploy lock"; }
seq_of() {  # a release's sequence number (0: made before they were recorded)
  s=$(head -c 20 "releases/$1/release.seq" 2>/dev/null | tr -d ' \n')
  case "$s" in ""|*[!0-9]*) echo 0;; *) echo "$s";; esac
}
ordered() {  # "SEQ ID" per release, oldest first: by sequence number, never by the id's hex part
  for d in releases/*/; do
    [ -d "$d" ] || continue
    i=${d#releases/}; i=${i%/}
    case "$i" in .*|*[!A-Za-z0-9._-]*) continue;; esac
    [ -L "releases/$i" ] && continue
    echo "$(seq_of "$i") $i"
  done | sort -k1,1n -k2,2
}
lockinfo() {
  [ -f lock.json ] || return 0
  echo "@@lock $(( $(date +%s) - $(stat -c %Y lock.json) ))"
  head -c 65536 lock.json | tr '\n' ' '; echo
}
swap() {  # rename the new link $1 over $2 without following $2 (it points at a folder)
  if mv -fT "$1" "$2" 2>/dev/null; then return 0; fi
  [ -e "$1" ] || [ -L "$1" ] || return 1
  rm -f "$2" && mv -f "$1" "$2" && echo "@@note nonatomic"
}
switch_to() {
  old=$(rel current)
  if [ "$old" = "$1" ]; then say current "$1"; say previous "$(rel previous)"; say changed 0; return 0; fi
  ln -s "releases/$1" ".current.$$" || err os_error "cannot make a link in $root"
  swap ".current.$$" current || { rm -f ".current.$$"; err os_error "cannot switch current in $root"; }
  if [ -n "$old" ]; then ln -s "releases/$old" ".previous.$$" && swap ".previous.$$" previous; fi
  sync
  say current "$(rel current)"; say previous "$(rel previous)"; say changed 1
}
case "$tok" in *[!A-Za-z0-9-]*) err bad_args "bad token";; esac
if [ "$act" = list ] && [ ! -d "$root" ]; then say exists 0; say deploy_dir "$root"; exit 0; fi
mkdir -p "$root" 2>/dev/null
cd "$root" 2>/dev/null || err os_error "cannot enter $root"
case "$act" in
init)
  mkdir -p releases staging || err os_error "cannot create releases/ and staging/ in $root"
  if [ -L releases ] || [ -L staging ]; then err os_error "releases/ or staging/ in $root is a symlink; refused"; fi
  say deploy_dir "$(pwd -P)"; say current "$(rel current)"; say previous "$(rel previous)" ;;
list)
  say deploy_dir "$(pwd -P)"; say exists 1; say current "$(rel current)"; say previous "$(rel previous)"
  for d in releases/*/; do
    [ -d "$d" ] || continue
    i=${d#releases/}; i=${i%/}
    echo "@@rel $i $(cat "releases/$i"/model.* 2>/dev/null | wc -c) $(seq_of "$i")"
    head -c 1048576 "releases/$i/manifest.json" 2>/dev/null | tr '\n' ' '; echo
  done
  lockinfo ;;
lock)
  printf '%s' "$arg" > ".lock.$tok" || err os_error "cannot write in $root"
  if ln ".lock.$tok" lock.json 2>/dev/null; then rm -f ".lock.$tok"; say acquired 1
  else rm -f ".lock.$tok"; say acquired 0; lockinfo; fi ;;
refresh) if holds; then touch lock.json; say held 1; else say held 0; fi ;;
unlock) if holds; then rm -f lock.json; say released 1; else say released 0; fi ;;
break)
  if mv lock.json ".brk.$$" 2>/dev/null; then
    if [ "$tok" = "-" ] || grep -qF "\"token\": \"$tok\"" ".brk.$$"; then rm -f ".brk.$$"; say broken 1
    else ln ".brk.$$" lock.json 2>/dev/null; rm -f ".brk.$$"; say broken 0; fi
  else say broken 0; fi ;;
stage)
  need_lock; id_ok "$arg"
  [ -e "releases/$arg" ] && err bad_release "release $arg already exists"
  for s in staging/* staging/.[!.]*; do
    [ -e "$s" ] || [ -L "$s" ] || continue
    rm -rf "$s" && echo "@@removed ${s#staging/}"
  done
  mkdir "staging/$arg" || err os_error "cannot create staging/$arg in $root"
  say staging "$(pwd -P)/staging/$arg"; say current "$(rel current)"; say previous "$(rel previous)" ;;
activate)
  need_lock; id_ok "$arg"
  [ -d "staging/$arg" ] || err bad_release "no staging/$arg to activate"
  [ -e "releases/$arg" ] && err bad_release "release $arg already exists"
  top=$(ordered | tail -n 1); n=${top%% *}; [ -n "$top" ] || n=0
  echo $((n + 1)) > "staging/$arg/release.seq" || err os_error "cannot write staging/$arg/release.seq"
  sync
  mv "staging/$arg" "releases/$arg" || err os_error "cannot move staging/$arg into releases/"
  switch_to "$arg" ;;
switch)
  need_lock; id_ok "$arg"
  [ -d "releases/$arg" ] || err bad_release "no release $arg"
  switch_to "$arg" ;;
discard) need_lock; id_ok "$arg"; rm -rf "staging/$arg"; say removed 1 ;;
gc)
  need_lock
  case "$arg" in ""|*[!0-9]*) err bad_args "keep must be a number";; esac
  cur=$(rel current); prev=$(rel previous); n=0
  for i in $(ordered | sort -k1,1nr -k2,2r | cut -d' ' -f2); do
    n=$((n + 1))
    [ "$n" -le "$arg" ] && continue
    if [ "$i" = "$cur" ] || [ "$i" = "$prev" ]; then continue; fi
    rm -rf "releases/$i" && echo "@@removed $i"
  done
  say kept "$arg" ;;
*) err bad_args "unknown action $act" ;;
esac
"""
# A file into the app's folder: the shell user reads it, the app (run-as) writes it.
PIPE_IN = 'cat -- "$1" | run-as "$2" sh -c \'cat > "$1.part" && mv -f "$1.part" "$1"\' edgeprune-put "$3"'
PIPE_OUT = 'run-as "$1" cat -- "$2" > "$3"'
DIGEST = 'test -f "$1" || exit 3; wc -c < "$1"; sha256sum -- "$1"'
_BOOLS = ("acquired", "held", "released", "broken", "changed", "exists")


def _json(text: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(text[: 1 << 20])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class PhoneFolder(Board):
    """The deploy folder of one phone without Python (``transport`` open); see the module docstring."""

    def __init__(self, reach, transport) -> None:
        super().__init__(reach, transport)
        self.run_as = reach.run_as
        if self.run_as and not reach.deploy_dir:
            self.spec = "files/edgeprune-deploy"  # relative to the app's data folder (run-as starts there)

    def _as_app(self) -> list[str]:
        return ["run-as", self.run_as] if self.run_as else []

    def prepare(self) -> dict[str, Any]:
        self.t.ensure_workdir()
        doc = self.release("init", timeout=60)
        root = doc.get("deploy_dir")
        if not isinstance(root, str) or not root.startswith("/"):
            raise AgentError(f"{self.name}: the deploy folder did not answer with an absolute path")
        self.root = root
        return doc

    def agent(self, *args: str, timeout: float) -> dict[str, Any]:
        raise ShipError(f"{self.name}: this phone has no Python: there is no agent to run")

    def release(self, action: str, *args: str, timeout: float = 60) -> dict[str, Any]:
        """The agent's ``release ACTION`` (same options, same answer), as :data:`DEPLOY_SCRIPT`."""
        opts = dict(zip(args[::2], args[1::2], strict=False))
        token = opts.get("--token", "")
        if token and not _TOKEN.match(token):
            raise ShipError(f"{self.name}: a lock token must be letters and digits, got {token[:40]!r}")
        arg = opts.get("--id") or opts.get("--keep") or ""
        if "--id" in opts and not RELEASE_ID.match(arg):
            raise ShipError(f"{self.name}: {arg[:100]!r} is not a release id")
        if action == "lock":
            owner = json.loads(opts.get("--owner") or "{}")
            arg = json.dumps({**owner, "token": token})
        argv = [*self._as_app(), "sh", "-c", DEPLOY_SCRIPT, "edgeprune-deploy", action, self.root or self.spec,
                token, arg]
        res = self.t.run(argv, timeout=timeout, max_output=MAX_REPLY)
        return self._answer(action, res)

    def _answer(self, action: str, res) -> dict[str, Any]:
        where = f"{self.name} (deploy folder)"
        if res.overflow:
            raise AgentError(f"{where}: the answer passed {MAX_REPLY // 2**20} MiB; refused")
        lines = res.stdout.decode("utf-8", "replace").splitlines()
        doc: dict[str, Any] = {"action": action, "removed": [], "notes": []}
        releases, i = [], 0
        while i < len(lines):
            line = lines[i]
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line.startswith("@@err "):
                _, kind, *msg = line.split(" ", 2)
                exc = AgentError(f"{self.name}: {(msg or ['failed'])[0][:300]}")
                exc.kind = kind[:40]
                raise exc
            if line.startswith("@@rel ") and len(line.split()) in (3, 4):
                rid, size, *seq = line.split()[1:]
                if RELEASE_ID.match(rid):
                    releases.append({"id": rid, "bytes": int(size) if size.isdigit() else None,
                                     "manifest": _json(nxt), "seq": int(seq[0]) if seq and seq[0].isdigit() else 0})
                i += 2
                continue
            if line.startswith("@@lock ") and len(line.split()) == 2:
                age = line.split()[1]
                owner = _json(nxt) or {"unreadable": True}
                doc["lock"] = {"owner": owner, "age_s": float(age) if age.lstrip("-").isdigit() else None}
                i += 2
                continue
            if line.startswith("@@removed "):
                doc["removed"].append(line[len("@@removed "):][:120])
            elif line.startswith("@@note nonatomic"):
                doc["notes"].append(f"{self.name}: this phone's mv has no -T: current was replaced by removing "
                                    "the old link, then renaming the new one (not atomic)")
            elif "=" in line and not line.startswith("@@"):
                key, _, value = line.partition("=")
                doc[key] = value[:4096]
            i += 1
        if res.rc not in (0, None) or ("deploy_dir" not in doc and action in ("init", "list")):
            tail = (res.stderr or res.stdout).decode("utf-8", "replace").strip()[-300:] or "(no output)"
            hint = (f"; {self.run_as} must be an installed debuggable app, or remove run_as to ship under "
                    "/data/local/tmp" if self.run_as and "run-as" in tail else "")
            raise AgentError(f"{where}: the deploy script failed (exit {res.rc}): {tail}{hint}")
        for key in _BOOLS:
            if key in doc:
                doc[key] = doc[key] == "1"
        for key in ("current", "previous"):
            if key in doc:
                doc[key] = doc[key] if RELEASE_ID.match(doc[key] or "") else None
        if "lock" in doc:
            doc["owner"], doc["age_s"] = doc["lock"]["owner"], doc["lock"]["age_s"]
        doc["releases"] = sorted(releases, key=lambda r: (r["seq"], r["id"]))  # oldest first, as the agent
        return doc

    # -- files into and out of the folder ---------------------------------------------------
    def put(self, local: Path, name: str, *, folder: str, keep_copy: bool = False) -> str | None:
        """``local`` at ``folder/name``: the transport's checked upload, or for an app a pipe into run-as
        (after a checked upload to the workdir) and the sha256 checked again as the app sees it.

        ``keep_copy``: leave that workdir copy (for benchmark_model, which cannot read the app's folder)
        and return its name; the caller removes it.
        """
        if not self.run_as:
            self.t.upload(local, name, folder=folder)
            return None
        tmp = self.workdir_copy(local)
        dst = f"{folder}/{name}"
        try:
            res = self.t.run(["sh", "-c", PIPE_IN, "edgeprune-pipe", self.t.path(tmp), self.run_as, dst],
                             timeout=600)
            want = (local.stat().st_size, sha256_file(local))
            if res.rc != 0 or self.digest(dst) != want:
                raise ShipError(f"{self.name}: {local.name} did not arrive whole in {self.run_as}'s folder ({dst}): "
                                f"{res.stderr.decode('utf-8', 'replace').strip()[:200] or 'sha256 differs'}")
        except BaseException:
            self.t.remove(tmp)
            raise
        if not keep_copy:
            self.t.remove(tmp)
            return None
        return tmp

    def workdir_copy(self, local: Path) -> str:
        """``local`` in the workdir under a name made from its sha256 (checked upload); returns the name."""
        name = f"ship-{sha256_file(local)[:24]}{local.suffix.lower()}"
        self.t.upload(local, name)
        return name

    def digest(self, path: str) -> tuple[int, str] | None:
        """(size, sha256) of ``path`` in the folder as the phone (or the app) sees it; None when absent."""
        if not self.run_as:
            return self.t.remote_digest(path)
        res = self.t.run([*self._as_app(), "sh", "-c", DIGEST, "edgeprune-sha", path], timeout=120)
        if res.rc == 3:
            return None
        words = res.stdout.decode("utf-8", "replace").split()
        if res.rc != 0 or len(words) < 2 or not words[0].isdigit() or len(words[1]) != 64:
            raise ShipError(f"{self.name}: cannot checksum {path} as {self.run_as}")
        return int(words[0]), words[1]

    def readable_copy(self, path: str, sha256: str) -> tuple[str, str | None]:
        """(a path benchmark_model, the shell user, can read holding the bytes of ``path``, the name of
        the workdir copy to remove after): ``path`` itself, or for an app a copy piped out into the
        workdir and checked against ``sha256``."""
        if not self.run_as:
            return path, None
        name = f"check-{sha256[:24]}.tflite"
        dst = self.t.path(name)
        res = self.t.run(["sh", "-c", PIPE_OUT, "edgeprune-pipe", self.run_as, path, dst], timeout=600)
        got = self.t.remote_digest(dst)
        if res.rc != 0 or got is None or got[1] != sha256:
            self.t.remove(name)
            raise ShipError(f"{self.name}: cannot read {path} back out of {self.run_as}'s folder to check it")
        return dst, name
