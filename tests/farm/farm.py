"""A farm of real test boards: OpenSSH servers in network namespaces, made and torn down here.

As root, each board is a network namespace with its own address on its own
veth link (10.200.S.4i+2, the host side is .4i+1, S picked free per farm so
that several farms can coexist), a private ``/tmp`` and hostname (``unshare
--mount --uts``), and its own ``sshd`` started with an absolute config file.
A board can have:

- a CPU quota (cgroup v1 ``cpu.cfs_quota_us``, or v2 ``cpu.max``; 10 ms period), so
  the same model measures differently on each;
- a bandwidth limit (``tc tbf`` on both veth ends) and packet loss (nft
  ``numgen random mod 100 < N drop`` inside the namespace: this kernel has no netem);
- a small ``/tmp`` (tmpfs ``size=``) to make its disk fill up.

Traffic stays in 10.200.0.0/16, which gets an ``unreachable`` route of last
resort first, so a downed veth never sends test traffic outside.
``Farm.stop()`` always runs (context manager): it kills every process
``ip netns pids`` lists, deletes the namespaces and cgroups.

Without root, :class:`Farm` falls back to ONE unprivileged sshd on loopback
(``farm.privileged`` is False and tests that need namespaces skip).

The boards log in as the user running the tests (root, or you), with this
farm's client key; their Python is the test process's own interpreter
(``sys.executable``, so a fresh CI clone's ``.venv`` works), and a bare venv
made by the farm stands for "a board without the runtime".
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FARM_NET = ipaddress.ip_network("10.200.0.0/16")


@dataclass
class BoardSpec:
    name: str
    cpu_quota: float | None = None  # CPUs (0.25 = a quarter of one core)
    cpu_period_us: int = 10000
    rate_mbit: int | None = None
    loss_pct: int | None = None
    tmp_mb: int = 256
    # An emulated board (tests/farm/arm64.py): its sshd runs chrooted in this root filesystem,
    # under qemu-user when the rootfs is for another architecture.
    rootfs: str | None = None


@dataclass
class Board:
    spec: BoardSpec
    addr: str
    port: int
    ns: str | None = None
    host_veth: str | None = None
    cgroup: Path | None = None
    proc: subprocess.Popen | None = None
    host_key_pub: str = ""
    extra_pids: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def known_hosts_label(self) -> str:
        return self.addr if self.port == 22 else f"[{self.addr}]:{self.port}"


def _sh(*argv: str, check: bool = True, ns: str | None = None, input: str | None = None) -> str:
    if ns:
        argv = ("ip", "netns", "exec", ns, *argv)
    res = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=60)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout


_NS_OK: bool | None = None


def can_use_namespaces() -> bool:
    """Root, the tools, and a kernel/container that lets us make a namespace (probed once)."""
    global _NS_OK
    if _NS_OK is None:
        tools = ("ip", "nft", "tc", "unshare", "nsenter", "sshd")
        _NS_OK = os.geteuid() == 0 and all(shutil.which(t) for t in tools)
        if _NS_OK:
            probe = f"epfprobe{os.getpid()}"
            ok = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
            if ok:
                argv = ["ip", "netns", "exec", probe, "unshare", "--mount", "true"]
                ok = subprocess.run(argv, capture_output=True).returncode == 0
                subprocess.run(["ip", "netns", "del", probe], capture_output=True)
            _NS_OK = ok
    return _NS_OK


def _free_subnet() -> int:
    used = _sh("ip", "-o", "-4", "addr", "show")
    used += _sh("ip", "netns", "list", check=False)
    for s in list(range(1 + os.getpid() % 200, 250)) + list(range(1, 250)):
        if f"10.200.{s}." not in used and f"epf{s}b" not in used:
            return s
    raise RuntimeError("no free 10.200.S.0/24 subnet for a test farm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_netns(ns: str) -> None:
    for _ in range(3):
        pids = _sh("ip", "netns", "pids", ns, check=False).split()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        time.sleep(0.1)
    _sh("ip", "netns", "del", ns, check=False)


def cleanup_stale_farms() -> None:
    """Tear down farms whose test process died without its teardown (kill -9, a crash)."""
    for owner in Path("/var/tmp").glob("edgeprune-farm-*/owner"):
        try:
            pid, subnet = owner.read_text().split()
            os.kill(int(pid), 0)
            continue  # its owner is alive: not ours to touch
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        for ns in _sh("ip", "netns", "list", check=False).split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(f"epf{subnet}b"):
                _kill_netns(name)  # its veth pair goes with it
        for base in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):
            cg = base / f"edgeprune-farm-{subnet}"
            if cg.is_dir():
                for sub in cg.iterdir():
                    if sub.is_dir():
                        Farm._rmdir_cgroup(sub)
                Farm._rmdir_cgroup(cg)
        shutil.rmtree(owner.parent, ignore_errors=True)


class Farm:
    """Start with ``with Farm(specs) as farm:``; boards are in ``farm.boards`` by name."""

    def __init__(
        self, specs: list[BoardSpec], *, privileged: bool | None = None, session_log: bool = False
    ) -> None:
        self.privileged = can_use_namespaces() if privileged is None else privileged
        # session_log: every board's sshd appends its VERBOSE log (logins, disconnects) to ONE file,
        # farm.session_log, in the order the events happened (see sessions_at_once()).
        self.session_log = None
        self.names = [s.name for s in specs]  # without root, every name is the one loopback board
        if not self.privileged:
            specs = specs[:1]
        self.specs = specs
        self.boards: dict[str, Board] = {}
        self.root = Path(
            tempfile.mkdtemp(prefix="edgeprune-farm-", dir="/var/tmp" if self.privileged else None)
        )
        self.client_key = self.root / "client_key"
        self.known_hosts = self.root / "known_hosts"
        self.authorized_keys = self.root / "authorized_keys"
        self.python = sys.executable
        self.bare_python = str(self.root / "bare-venv" / "bin" / "python")
        self.user = getpass.getuser()
        self.subnet = None
        self.cgroup_root: Path | None = None
        if session_log:
            self.session_log = self.root / "sessions.log"

    # -- life cycle ------------------------------------------------------------------
    def __enter__(self) -> Farm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
            raise RuntimeError("sshd is not installed: run scripts/install-farm-deps.sh")
        _sh(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "edgeprune-farm",
            "-f",
            str(self.client_key),
        )
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(self.root / "bare-venv")],
            check=True,
            capture_output=True,
        )
        if self.privileged:
            cleanup_stale_farms()
            Path("/run/sshd").mkdir(exist_ok=True)
            _sh("ip", "route", "replace", "unreachable", str(FARM_NET), "metric", "4000")
            self.subnet = _free_subnet()
            (self.root / "owner").write_text(f"{os.getpid()} {self.subnet}\n")
            self.cgroup_root = self._cgroup_base()
        for i, spec in enumerate(self.specs):
            self._start_board(i, spec)
        lines = [f"{b.known_hosts_label} {b.host_key_pub}" for b in self.boards.values()]
        self.known_hosts.write_text("\n".join(lines) + "\n")
        for b in self.boards.values():
            self._wait_ready(b)

    def _cgroup_base(self) -> Path | None:
        for base in (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")):
            probe = (
                base / "cpu.cfs_quota_us" if base.name == "cpu" else base / "cgroup.subtree_control"
            )
            if probe.exists():
                path = base / f"edgeprune-farm-{self.subnet}"
                try:
                    path.mkdir(exist_ok=True)
                    if base.name != "cpu":
                        (base / "cgroup.subtree_control").write_text("+cpu")
                        (path / "cgroup.subtree_control").write_text("+cpu")
                    return path
                except OSError:
                    return None
        return None

    def _start_board(self, i: int, spec: BoardSpec) -> None:
        bdir = self.root / spec.name
        bdir.mkdir()
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(bdir / "host_key"))
        pub = (bdir / "host_key.pub").read_text().split()
        if self.privileged:
            host_ip = f"10.200.{self.subnet}.{4 * i + 1}"
            addr, port = f"10.200.{self.subnet}.{4 * i + 2}", 22
            ns, hv, bv = f"epf{self.subnet}b{i}", f"epf{self.subnet}h{i}", f"epf{self.subnet}v{i}"
        else:
            addr, port, ns, hv, bv = "127.0.0.1", _free_port(), None, None, None
        board = Board(
            spec=spec, addr=addr, port=port, ns=ns, host_veth=hv, host_key_pub=" ".join(pub[:2])
        )
        self.boards[spec.name] = board
        config = bdir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {addr}:{port}",
                    f"HostKey {bdir / 'host_key'}",
                    f"PidFile {bdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {self.user}",
                    "Subsystem sftp internal-sftp",
                    "PrintMotd no",
                    "PermitTTY no",
                    "MaxStartups 200",
                    "MaxSessions 200",
                    "ClientAliveInterval 10",
                    "LogLevel VERBOSE" if self.session_log else "LogLevel ERROR",
                ]
            )
            + "\n"
        )
        log = open(bdir / "sshd.log", "wb")
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if spec.rootfs:
            config = self._chroot_config(spec, bdir, config)
        to_log = ["-E", str(self.session_log)] if self.session_log and not spec.rootfs else []
        if not self.privileged:
            board.proc = subprocess.Popen(
                [sshd, "-D", "-e", "-f", str(config), *to_log],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            return
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", hv, "type", "veth", "peer", "name", bv)
        _sh("ip", "link", "set", bv, "netns", ns)
        _sh("ip", "addr", "add", f"{host_ip}/30", "dev", hv)
        _sh("ip", "link", "set", hv, "up")
        _sh("ip", "addr", "add", f"{addr}/30", "dev", bv, ns=ns)
        _sh("ip", "link", "set", bv, "up", ns=ns)
        _sh("ip", "link", "set", "lo", "up", ns=ns)
        _sh("ip", "route", "add", "default", "via", host_ip, ns=ns)
        if spec.rate_mbit:
            for dev, where in ((hv, None), (bv, ns)):
                _sh(
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    f"{spec.rate_mbit}mbit",
                    "burst",
                    "32kbit",
                    "latency",
                    "400ms",
                    ns=where,
                )
        if spec.loss_pct:
            _sh(
                "nft",
                "-f",
                "-",
                ns=ns,
                input=(
                    "table inet eploss {\n"
                    f" chain in {{ type filter hook input priority 0; numgen random mod 100 < {spec.loss_pct} drop; }}\n"
                    f" chain out {{ type filter hook output priority 0; numgen random mod 100 < {spec.loss_pct} drop; }}\n"
                    "}\n"
                ),
            )
        log_arg = ' -E "$2"' if to_log else ""  # the session log's path: the script's $2
        # A private /tmp (size-limited) and hostname, then sshd in the foreground.
        # The login shell's rc file of this machine (pyenv init: ~100 ms) is not the board's.
        empty = self.root / "empty-rc"
        empty.touch()
        rcs = " ".join(f'"{Path(os.path.expanduser("~")) / rc}"' for rc in (".bashrc", ".profile"))
        script = (
            self._chroot_script(spec)
            if spec.rootfs
            else f"{self._keep_python_script()}"
            f"mount -t tmpfs -o size={spec.tmp_mb}m,mode=1777 tmpfs /tmp && "
            f"{self._restore_python_script()}"
            f'for rc in {rcs}; do [ -f "$rc" ] && mount --bind "{empty}" "$rc"; done; '
            f"{self._cgroup_mount_script()}"
            f'hostname farm-{spec.name} && exec "$0" -D -e -f "$1"{log_arg}'
        )
        board.proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                sshd,
                str(config),
                *to_log[1:],
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        if spec.cpu_quota and self.cgroup_root is not None:
            cg = self.cgroup_root / spec.name
            cg.mkdir(exist_ok=True)
            # A short period (10 ms, measured best here): an inference of several ms is
            # slowed evenly, like a slower CPU, instead of a few runs stalling for 75 ms.
            period = spec.cpu_period_us
            quota = max(1000, int(spec.cpu_quota * period))
            if (cg / "cpu.cfs_quota_us").exists():
                (cg / "cpu.cfs_period_us").write_text(str(period))
                (cg / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (cg / "cpu.max").write_text(f"{quota} {period}")
            board.cgroup = cg
            (cg / "cgroup.procs").write_text(str(board.proc.pid))

    def _chroot_config(self, spec: BoardSpec, bdir: Path, config: Path) -> Path:
        """Copy the board's sshd config and keys into its rootfs, with paths as seen inside."""
        inside = Path(spec.rootfs) / "etc" / "ssh" / "edgeprune"
        inside.mkdir(parents=True, exist_ok=True)
        for f in ("host_key", "host_key.pub"):
            shutil.copy2(bdir / f, inside / f)
        shutil.copy2(self.authorized_keys, inside / "authorized_keys")
        text = config.read_text()
        text = text.replace(str(bdir / "host_key"), "/etc/ssh/edgeprune/host_key")
        text = text.replace(str(bdir / "sshd.pid"), "/run/edgeprune-sshd.pid")
        text = text.replace(str(self.authorized_keys), "/etc/ssh/edgeprune/authorized_keys")
        (inside / "sshd_config").write_text(text)
        return Path("/etc/ssh/edgeprune/sshd_config")

    def _chroot_script(self, spec: BoardSpec) -> str:
        # Only /proc, not /sys: ai-edge-litert segfaults under qemu with both (FACTS).
        r = spec.rootfs
        return (
            f'mount --rbind /dev "{r}/dev" && mount -t proc proc "{r}/proc" && '
            f'mount -t tmpfs -o size={spec.tmp_mb}m,mode=1777 tmpfs "{r}/tmp" && '
            f'mkdir -p "{r}/run/sshd" && hostname farm-{spec.name} && '
            f'exec chroot "{r}" /usr/sbin/sshd -D -e -f "$1"'
        )

    def _python_dirs_under_tmp(self) -> list[str]:
        """This machine's venv and interpreter folders that a board's private /tmp would hide.

        A checkout (and so its .venv) may itself live under /tmp, as a CI clone can: the
        boards run this Python, so those folders are bound back into their /tmp.
        """
        dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
        return sorted(d for d in dirs if d == "/tmp" or d.startswith("/tmp/"))

    def _keep_python_script(self) -> str:
        if not self._python_dirs_under_tmp():
            return ""
        keep = self.root / "host-tmp"
        keep.mkdir(exist_ok=True)
        return f'mount --bind /tmp "{keep}" && '

    def _restore_python_script(self) -> str:
        keep = self.root / "host-tmp"
        parts = []
        for d in self._python_dirs_under_tmp():
            rel = os.path.relpath(d, "/tmp")
            parts.append(f'mkdir -p "{d}" && mount --bind "{keep}/{rel}" "{d}" && ')
        return "".join(parts)

    def _cgroup_mount_script(self) -> str:
        # `ip netns exec` mounts a fresh /sys without the cgroup folders; a real board has them
        # (the agent reads its CPU quota there).
        if self.cgroup_root is None:
            return ""
        if self.cgroup_root.parent.name == "cpu":
            return (
                "{ mount -t tmpfs cgroup /sys/fs/cgroup && mkdir /sys/fs/cgroup/cpu && "
                "mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu; } 2>/dev/null; "
            )
        return "mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null; "

    def _wait_ready(self, board: Board, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if board.proc.poll() is not None:
                log = (self.root / board.name / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd of board {board.name} exited: {log[-500:]}")
            try:
                with socket.create_connection((board.addr, board.port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"board {board.name} ({board.addr}:{board.port}) did not start within {timeout} s"
        )

    def stop(self) -> None:
        for board in self.boards.values():
            if board.ns:
                _kill_netns(board.ns)
            if board.proc and board.proc.poll() is None:
                try:
                    os.killpg(board.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if board.proc:
                try:
                    board.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            if board.ns:
                _sh("ip", "netns", "del", board.ns, check=False)
                _sh("ip", "link", "del", board.host_veth, check=False)
            if board.cgroup:
                self._rmdir_cgroup(board.cgroup)
        if self.cgroup_root:
            self._rmdir_cgroup(self.cgroup_root)
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _rmdir_cgroup(path: Path) -> None:
        for _ in range(20):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)

    # -- helpers for tests ---------------------------------------------------------
    def targets_toml(
        self, *, workdir: str = "/tmp/edgeprune", extra: dict[str, dict] | None = None
    ) -> str:
        """A targets file naming each board ``farm-NAME`` (profile raspberry-pi-5, this farm's key)."""
        lines = []
        entries = {f"farm-{n}": {} for n in self.names}
        entries.update(extra or {})
        for name, over in entries.items():
            bname = over.pop("board", name.removeprefix("farm-"))
            b = self.boards.get(bname) or next(iter(self.boards.values()))
            wd = workdir if self.privileged else str(self.root / b.name / "work")
            entry = {
                "profile": "raspberry-pi-5",
                "host": b.addr,
                "port": b.port,
                "user": self.user,
                "key": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "workdir": wd,
                "python": self.python,
            }
            entry.update(over)
            lines.append(f'["{name}"]')
            for k, v in entry.items():
                lines.append(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"')
            lines.append("")
        return "\n".join(lines)

    def session_events(self) -> list[tuple[int, str]]:
        """The boards' SSH logins (+1) and connection ends (-1) with the client's address, in the order
        every board's sshd wrote them to the one shared log (``session_log=True``). A board's client
        address is the host side of its link (``farm.client_addr(board)``)."""
        events, live = [], set()
        for line in self.session_log.read_text(errors="replace").splitlines():
            m = re.search(r"Accepted \S+ for \S+ from (\S+) port (\d+)", line)
            if m:
                live.add(m.groups())
                events.append((1, m.group(1)))
                continue
            m = re.search(r"(?:Disconnected from user \S+|Connection closed by|Received disconnect from|"
                          r"Read error from remote host|Connection reset by|Closing connection to) (\S+) port (\d+)", line)
            if m and m.groups() in live:
                live.discard(m.groups())
                events.append((-1, m.group(1)))
        return events

    def sessions_at_once(self) -> tuple[int, int]:
        """(most SSH sessions open at the same time over all boards, logins in all), from the boards' log."""
        open_now = most = total = 0
        for delta, _ in self.session_events():
            open_now += delta
            total += delta > 0
            most = max(most, open_now)
        return most, total

    def client_addr(self, board: str) -> str:
        """The address a board sees the host's connections come from."""
        b = self.boards[board]
        return b.addr if not self.privileged else str(ipaddress.ip_address(b.addr) - 1)

    def ns_processes(self, board: str) -> list[str]:
        """Command lines of every process in the board's namespace (root farms only)."""
        out = []
        for pid in _sh("ip", "netns", "pids", self.boards[board].ns, check=False).split():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass
        return out

    def cut(self, board: str) -> None:
        """Drop every packet in and out of the board, like a pulled cable."""
        _sh(
            "nft",
            "-f",
            "-",
            ns=self.boards[board].ns,
            input=(
                "table inet epcut {\n chain in { type filter hook input priority -10; drop; }\n"
                " chain out { type filter hook output priority -10; drop; }\n}\n"
            ),
        )

    def restore(self, board: str) -> None:
        _sh("nft", "delete", "table", "inet", "epcut", ns=self.boards[board].ns, check=False)

    def board_exec(self, board: str, *argv: str) -> str:
        """Run a command inside the board's mount+net namespace (sees its private /tmp)."""
        b = self.boards[board]
        if not self.privileged:
            return _sh(*argv)
        pid = b.proc.pid
        # The board's sshd is the child (after exec) of `ip netns exec`; enter its namespaces.
        return _sh("nsenter", "-t", str(self._sshd_pid(b) or pid), "-m", "-n", "-u", *argv)

    def _sshd_pid(self, b: Board) -> int | None:
        try:
            return int((self.root / b.name / "sshd.pid").read_text().strip())
        except (OSError, ValueError):
            return None
