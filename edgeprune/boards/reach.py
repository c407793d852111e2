"""How a target is reached: ``--target NAME`` -> a :class:`Reach` (profile + where the board is).

``NAME`` is an entry of your targets file or a profile name. Where the board
is comes from, first found wins, key by key:

1. ``--host user@addr[:port]`` on the command line (IPv6: ``user@[::1]:2222``;
   for adb targets the host is the device serial, e.g. ``--host 1A2B3C`` or
   ``--host 192.168.1.20:5555``);
2. your targets file: ``$EDGEPRUNE_TARGETS``, else ``targets_file`` in the
   config file, else ``~/.config/edgeprune/targets.toml``;
3. the ``Host NAME`` entry of ``~/.ssh/config``.

Whatever address results is then looked up in ``~/.ssh/config`` as ``ssh``
would (``HostName``, ``User``, ``Port``, ``IdentityFile``,
``UserKnownHostsFile`` fill what is still unset), so aliases work everywhere.
``--target local`` needs no host. The targets file is TOML, one table per
board; the table name is what you pass to ``--target`` and may differ from
the profile's name::

    [lab-nano]                      # edgeprune bench --target lab-nano m.onnx
    profile = "jetson-nano"         # a profile (`edgeprune targets list`); default: the table name
    host = "10.0.0.12"              # address, or an alias of ~/.ssh/config
    user = "nvidia"                 # default: ~/.ssh/config's User, else your login name
    port = 22
    key = "~/.ssh/id_ed25519"       # default: ssh-agent and ~/.ssh/id_* keys
    workdir = "~/edgeprune"         # the board's working folder (default: the profile's, else ~/.edgeprune)
    deploy_dir = "~/models"         # where releases are shipped (default: the profile's, else ~/edgeprune-deploy)
    python = "/home/nvidia/venv/bin/python3"   # the board's interpreter (default: python3)
    known_hosts = "~/.ssh/known_hosts"         # default: ~/.ssh/config's UserKnownHostsFile, else this

    [my-pixel]                      # a phone without a Python: measured with LiteRT's benchmark_model
    profile = "pixel-8"
    host = "1A2B3C4D"               # the adb serial (`adb devices`)
    benchmark_model = "~/android/benchmark_model"   # default: litert-cli's cache
    delegate = "gpu"                # cpu, gpu, nnapi, external or a delegate .so on the phone
    run_as = "com.example.app"      # ship into this debuggable app's files (default /data/local/tmp)

A group names several boards; ``--target lab`` (or ``-t lab``) then means
all of them, in this order (bench, ship and deploy; see ``--parallel`` and
``--canary``)::

    [lab]
    targets = ["lab-nano", "lab-pi", "my-pixel"]

``--targets-from FILE`` reads names the same way, one a line (``#`` starts a
comment): :func:`expand_targets`.

Every error names the file and the key. Example::

    reach = resolve_target("lab-nano")
    reach.hostname, reach.user, reach.port, reach.sources["hostname"]
    # ('10.0.0.12', 'nvidia', 22, 'targets file /home/me/.config/edgeprune/targets.toml')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgeprune._paths import config_dir, config_file
from edgeprune.boards.config import read_config
from edgeprune.boards.profiles import load_profile
from edgeprune.errors import EdgePruneError, ProfileError, did_you_mean
from edgeprune.transport import transport_class
from edgeprune.transport.ssh import parse_host

__all__ = ["TARGET_KEYS", "Reach", "expand_targets", "load_targets", "parse_host", "resolve_target", "targets_file"]

# key -> (type, description)
TARGET_KEYS: dict[str, tuple[type, str]] = {
    "profile": (str, "a profile name"),
    "host": (str, "an address or ~/.ssh/config alias"),
    "user": (str, "a user name"),
    "port": (int, "a port number 1-65535"),
    "key": (str, "a path to a private key"),
    "workdir": (str, "a folder on the board"),
    "deploy_dir": (str, "a folder on the board for shipped releases"),
    "python": (str, "the board's Python interpreter"),
    "known_hosts": (str, "a known_hosts file"),
    "benchmark_model": (str, "a path on this computer to LiteRT's Android benchmark_model binary"),
    "delegate": (str, "cpu, gpu, nnapi, external, or the path of an external delegate on the phone"),
    "run_as": (str, "the package name of a debuggable app (ship into its files with run-as)"),
}


@dataclass
class Reach:
    """Everything needed to reach one board; ``sources`` says where each value came from."""

    name: str
    profile: Any  # edgeprune.boards.profiles.Profile
    transport: str
    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    key_filename: str | None = None
    workdir: str | None = None
    known_hosts: str | None = None
    python: str | None = None
    deploy_dir: str | None = None  # where edgeprune.ship keeps releases (None: ship's default)
    benchmark_model: str | None = None  # adb phones without a Python: LiteRT's binary on this computer
    delegate: str | None = None  # adb phones: the delegate benchmark_model runs with (default: the profile's)
    run_as: str | None = None  # adb phones: ship into this debuggable app's own files
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``user@host:port`` (or the serial for adb, ``local`` for this machine): the transport's way."""
        return transport_class(self.transport).address(self)

    @property
    def runner(self) -> str:
        """What runs models on the board: ``agent`` (edgeprune's Python agent) or ``benchmark_model``
        (an adb phone without a Python: LiteRT's own binary). The transport class decides."""
        return transport_class(self.transport).runner(self)

    def put(self, attr: str, value: Any, source: str) -> None:
        """Set ``attr`` unless already set (first found wins), and say where it came from."""
        if value is not None and getattr(self, attr) is None:
            setattr(self, attr, value)
            self.sources[attr] = source


def targets_file() -> Path:
    """The targets file in use (it need not exist)."""
    env = os.environ.get("EDGEPRUNE_TARGETS")
    if env:
        return Path(env).expanduser()

    if config_file().is_file():
        configured = read_config().get("targets_file")
        if configured:
            return Path(configured).expanduser()
    return config_dir() / "targets.toml"


def load_targets(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The validated entries of the targets file (``{}`` when it does not exist)."""
    path = path or targets_file()
    if not path.is_file():
        if os.environ.get("EDGEPRUNE_TARGETS"):
            raise ProfileError(f"{path}: targets file not found (from $EDGEPRUNE_TARGETS)")
        return {}

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read targets file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ProfileError(
                f"{path}: '{name}' must be a table [{name}] of keys ({', '.join(TARGET_KEYS)})"
            )
        if GROUP_KEY in entry:
            _check_group(path, name, entry, data)
            continue
        for key, value in entry.items():
            if key not in TARGET_KEYS:
                hint = did_you_mean(key, TARGET_KEYS, n=1, cutoff=0.6, quote=True) or (
                    f"known keys: {', '.join(TARGET_KEYS)}"
                )
                raise ProfileError(f"{path}: [{name}] unknown key '{key}' ({hint})")
            typ, desc = TARGET_KEYS[key]
            bad = not isinstance(value, typ) or isinstance(value, bool)
            if not bad and key == "port":
                bad = not 1 <= value <= 65535
            if not bad and typ is str:
                bad = not value.strip() or "\n" in value or "\x00" in value
            if bad:
                raise ProfileError(f"{path}: [{name}] key '{key}': expected {desc}, got {value!r}")
    return data


GROUP_KEY = "targets"  # [lab] targets = ["a", "b"]: a group of boards


def _check_group(path: Path, name: str, entry: dict[str, Any], data: dict[str, Any]) -> None:
    members = entry[GROUP_KEY]
    if set(entry) != {GROUP_KEY}:
        others = ", ".join(sorted(set(entry) - {GROUP_KEY}))
        raise ProfileError(f"{path}: [{name}] is a group (key 'targets'): it takes no other keys (got {others})")
    if not isinstance(members, list) or not members or not all(
            isinstance(m, str) and m.strip() and "\n" not in m for m in members):
        raise ProfileError(f"{path}: [{name}] key 'targets': expected a list of target names, got {members!r}")
    nested = [m for m in members if isinstance(data.get(m), dict) and GROUP_KEY in data[m]]
    if nested:
        raise ProfileError(f"{path}: [{name}] key 'targets': {nested[0]} is a group; groups do not nest, "
                           "list its boards")


def _targets_from(file: str) -> list[str]:
    path = Path(file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"--targets-from {file}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [n for n in names if n]
    bad = [n for n in names if any(c.isspace() for c in n)]
    if bad:
        raise ProfileError(f"--targets-from {file}: one target name a line, got {bad[0]!r}")
    if not names:
        raise ProfileError(f"--targets-from {file}: no target names in it (one a line, # starts a comment)")
    return names


def expand_targets(names: list[str] | tuple[str, ...], *, targets_from: str | None = None) -> list[str]:
    """The boards ``-t`` (repeated) and ``--targets-from FILE`` name, groups expanded, each once, in order.

    Example::

        expand_targets(["lab", "local"])          # ['lab-nano', 'lab-pi', 'my-pixel', 'local']
        expand_targets([], targets_from="boards.txt")
    """
    given = [*names, *(_targets_from(targets_from) if targets_from else [])]
    if not given:
        raise ProfileError("give the boards: --target NAME (repeat it), or --targets-from FILE")
    entries = load_targets()
    out: list[str] = []
    for name in given:
        entry = entries.get(name)
        out.extend(entry[GROUP_KEY] if isinstance(entry, dict) and GROUP_KEY in entry else [name])
    return list(dict.fromkeys(out))


def resolve_target(name: str, *, host: str | None = None, board: bool = True, delegate: str | None = None) -> Reach:
    """Where ``--target name`` is: profile, transport, address, user, key, workdir.

    ``delegate``: ``--delegate`` (phones measured with ``benchmark_model``), over
    the targets file's and the profile's; refused in one line for a board that
    edgeprune's agent measures.

    ``board=False``: only the profile is needed (a ``--ratio`` prune, an
    export), so a board without a known address resolves too; its Reach
    then has no address.

    Example::

        resolve_target("raspberry-pi-5", host="pi@10.0.0.7").address   # 'pi@10.0.0.7:22'
        resolve_target("raspberry-pi-5", board=False).profile.name      # 'raspberry-pi-5'
    """
    tfile = targets_file()
    entries = load_targets(tfile)
    entry = entries.get(name, {})
    if GROUP_KEY in entry:
        raise ProfileError(f"{tfile}: [{name}] is a group of boards ({', '.join(entry[GROUP_KEY])}); "
                           "this command takes one board: name one of them")
    src_file = f"targets file {tfile}"
    profile_name = entry.get("profile", name)
    try:
        profile = load_profile(profile_name)
    except ProfileError as exc:
        if entry:
            raise ProfileError(f"{tfile}: [{name}] key 'profile': {exc}") from None
        if entries:
            near = did_you_mean(name, entries, n=2, cutoff=0.5)
            if near:
                raise ProfileError(f"{exc}; in {tfile}: {near}") from None
        raise
    reach = Reach(name=name, profile=profile, transport=profile.transport)
    reach.sources["profile"] = src_file if "profile" in entry else "target name"
    # What --host means, where else the address comes from, the default workdir: the transport's.
    try:
        transport_class(reach.transport).locate(reach, host=host, entry=entry, source=src_file, tfile=tfile)
    except EdgePruneError:
        if board:
            raise
        return reach  # only the profile was needed
    # The deploy folder (edgeprune.ship) is separate from the agent's workdir, for every transport.
    reach.put("deploy_dir", entry.get("deploy_dir"), src_file)
    reach.put("deploy_dir", profile.data["reach"].get("deploy_dir"), f"profile {profile.name}")
    for attr in ("key_filename", "known_hosts"):
        if getattr(reach, attr):
            setattr(reach, attr, str(Path(getattr(reach, attr)).expanduser()))
    if delegate:
        if reach.runner != "benchmark_model":
            raise ProfileError(f"--delegate: {name} is measured by edgeprune's agent, not benchmark_model; "
                               "--delegate applies to phones without a Python")
        reach.delegate, reach.sources["delegate"] = delegate, "--delegate"
    return reach
