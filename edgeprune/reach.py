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

Every error names the file and the key. Example::

    reach = resolve_target("lab-nano")
    reach.hostname, reach.user, reach.port, reach.sources["hostname"]
    # ('10.0.0.12', 'nvidia', 22, 'targets file /home/me/.config/edgeprune/targets.toml')
"""

from __future__ import annotations

import difflib
import fnmatch
import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeprune.errors import ProfileError

DEFAULT_WORKDIR = {"ssh": "~/.edgeprune", "adb": "/data/local/tmp/edgeprune", "local": None}

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
}


@dataclass
class Reach:
    """Everything needed to reach one board; ``sources`` says where each value came from."""

    name: str
    profile: Any  # edgeprune.profiles.Profile
    transport: str
    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    key_filename: str | None = None
    workdir: str | None = None
    known_hosts: str | None = None
    python: str | None = None
    deploy_dir: str | None = None  # where edgeprune.ship keeps releases (None: ship's default)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """``user@host:port`` (or the serial for adb, ``local`` for this machine)."""
        if self.transport == "local":
            return "local"
        if self.transport == "adb":
            return f"adb:{self.hostname}"
        host = f"[{self.hostname}]" if self.hostname and ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"


def targets_file() -> Path:
    """The targets file in use (it need not exist)."""
    env = os.environ.get("EDGEPRUNE_TARGETS")
    if env:
        return Path(env).expanduser()
    from edgeprune._paths import config_dir, config_file

    if config_file().is_file():
        from edgeprune.config import read_config

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
    import tomllib

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
        for key, value in entry.items():
            if key not in TARGET_KEYS:
                near = difflib.get_close_matches(key, list(TARGET_KEYS), n=1)
                hint = (
                    f"did you mean '{near[0]}'?"
                    if near
                    else f"known keys: {', '.join(TARGET_KEYS)}"
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


_HOST_RE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\s\[\]]+))(?::(?P<port>\d+))?$"
)


def parse_host(text: str) -> tuple[str | None, str, int | None]:
    """``user@addr[:port]`` -> (user or None, addr, port or None).

    Example::

        parse_host("pi@10.0.0.5:2222")   # ('pi', '10.0.0.5', 2222)
    """
    m = _HOST_RE.match(text.strip())
    port = int(m.group("port")) if m and m.group("port") else None
    if not m or (port is not None and not 1 <= port <= 65535):
        raise ProfileError(
            f"--host '{text}': expected user@addr[:port], e.g. pi@192.168.1.20 or nvidia@nano.local:22"
        )
    return m.group("user"), m.group("v6") or m.group("host"), port


def _ssh_config():
    path = Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return None, path
    import paramiko

    try:
        return paramiko.SSHConfig.from_path(str(path)), path
    except Exception as exc:  # paramiko raises several kinds for bad files
        raise ProfileError(f"{path}: cannot parse: {exc}") from None


def _has_host_entry(cfg, name: str) -> bool:
    return any(
        p not in ("*",) and not p.startswith("!") and fnmatch.fnmatch(name, p)
        for p in cfg.get_hostnames()
    )


def _no_host_error(name: str, transport: str, tfile: Path) -> ProfileError:
    if transport == "adb":
        return ProfileError(
            f"target '{name}' is reached with adb but no device is given; give one with "
            f'--host SERIAL (see `adb devices`), or host = "SERIAL" in [{name}] of {tfile}'
        )
    return ProfileError(
        f"target '{name}' is reached over SSH but no host is given; give one with "
        f'--host user@addr[:port], or a [{name}] entry with host = "..." in {tfile}, '
        f"or a `Host {name}` entry in ~/.ssh/config"
    )


def resolve_target(name: str, *, host: str | None = None) -> Reach:
    """Where ``--target name`` is: profile, transport, address, user, key, workdir.

    Example::

        resolve_target("raspberry-pi-5", host="pi@10.0.0.7").address   # 'pi@10.0.0.7:22'
    """
    from edgeprune.profiles import load_profile

    tfile = targets_file()
    entries = load_targets(tfile)
    entry = entries.get(name, {})
    src_file = f"targets file {tfile}"
    profile_name = entry.get("profile", name)
    try:
        profile = load_profile(profile_name)
    except ProfileError as exc:
        if entry:
            raise ProfileError(f"{tfile}: [{name}] key 'profile': {exc}") from None
        if entries:
            near = difflib.get_close_matches(name, list(entries), n=2, cutoff=0.5)
            if near:
                raise ProfileError(
                    f"{exc}; entries in {tfile} that are close: {', '.join(near)}"
                ) from None
        raise
    reach = Reach(name=name, profile=profile, transport=profile.transport)
    reach.sources["profile"] = src_file if "profile" in entry else "target name"

    def put(attr: str, value: Any, source: str) -> None:
        if value is not None and getattr(reach, attr) is None:
            setattr(reach, attr, value)
            reach.sources[attr] = source

    if reach.transport == "local":
        if host:
            raise ProfileError(
                f"target '{name}' is this machine (transport local); --host is not used with it"
            )
        put("python", entry.get("python"), src_file)
        put("deploy_dir", entry.get("deploy_dir"), src_file)
        put("deploy_dir", profile.data["reach"].get("deploy_dir"), f"profile {profile.name}")
        return reach

    if host and reach.transport == "adb":
        put("hostname", host.strip(), "--host")  # an adb serial, e.g. 1A2B3C or 192.168.1.20:5555
    elif host:
        user, addr, port = parse_host(host)
        put("hostname", addr, "--host")
        put("user", user, "--host")
        put("port", port, "--host")
    put("hostname", entry.get("host"), src_file)
    put("user", entry.get("user"), src_file)
    put("port", entry.get("port"), src_file)
    put("key_filename", entry.get("key"), src_file)
    put("workdir", entry.get("workdir"), src_file)
    put("python", entry.get("python"), src_file)
    put("known_hosts", entry.get("known_hosts"), src_file)

    if reach.transport == "ssh":
        cfg, cfg_path = _ssh_config()
        if reach.hostname is None and cfg is not None and _has_host_entry(cfg, name):
            put("hostname", name, f"Host {name} in {cfg_path}")
        if reach.hostname is None:
            raise _no_host_error(name, reach.transport, tfile)
        if cfg is not None and _has_host_entry(cfg, reach.hostname):
            found = cfg.lookup(reach.hostname)
            where = f"Host {reach.hostname} in {cfg_path}"
            alias = reach.hostname
            if found.get("hostname") and found["hostname"] != alias:
                reach.hostname = found["hostname"]
                reach.sources["hostname"] += f" -> HostName in {cfg_path}"
            put("user", found.get("user"), where)
            put("port", int(found["port"]) if found.get("port") else None, where)
            ids = found.get("identityfile") or []
            put("key_filename", ids[0] if ids else None, where)
            kh = found.get("userknownhostsfile")
            put("known_hosts", kh.split()[0] if kh else None, where)
        put("user", getpass.getuser(), "your login name")
        put("port", 22, "default")
        put("known_hosts", "~/.ssh/known_hosts", "default")
    elif reach.hostname is None:
        raise _no_host_error(name, reach.transport, tfile)

    put("workdir", profile.data["reach"].get("workdir"), f"profile {profile.name}")
    put("workdir", DEFAULT_WORKDIR[reach.transport], "default")
    put("deploy_dir", entry.get("deploy_dir"), src_file)
    put("deploy_dir", profile.data["reach"].get("deploy_dir"), f"profile {profile.name}")
    for attr in ("key_filename", "known_hosts"):
        if getattr(reach, attr):
            setattr(reach, attr, str(Path(getattr(reach, attr)).expanduser()))
    return reach
