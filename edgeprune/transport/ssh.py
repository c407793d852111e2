"""The SSH transport (paramiko), made for real networks and real boards.

What it does, and why (FACTS.md records what was measured):

- Its own TCP socket with ``TCP_NODELAY`` (paramiko leaves Nagle on: ~50 ms
  per command round trip instead of ~3 ms), keepalives, and
  ``TCP_USER_TIMEOUT``, plus SSH-level keepalives: a dead link is detected in
  about :data:`DEAD_LINK_S` seconds instead of minutes.
- Host keys: the user's known_hosts with a reject policy. An unknown host is
  refused with its fingerprint; ``accept_new_host_key=True`` (CLI
  ``--accept-new-host-key``) records a NEW host's key in known_hosts; a
  CHANGED key is always refused, with the ``ssh-keygen -R`` fix in the message.
- Key auth only: the key from the targets file or ``~/.ssh/config``, else
  ssh-agent and ``~/.ssh/id_*``. No passwords.
- Every remote command is an argv joined with ``shlex.join`` and run through
  a tiny ``sh`` wrapper that prints its PID and ``cd``s into the workdir; on
  timeout or output overflow the process group is killed by that PID (closing
  an exec channel alone leaves the process running on the board).
- Uploads go through SFTP to a temporary name under a stall watchdog, are
  checked by size and sha256, then ``posix-rename``d over the old copy.
- Downloads (a board's outputs) read through SFTP under the same watchdog and
  stop as soon as they pass their size cap.
"""

from __future__ import annotations

import base64
import fnmatch
import getpass
import hashlib
import logging
import posixpath
import re
import shlex
import socket
import time
from pathlib import Path

from edgeprune.errors import ProfileError, TransportError, require
from edgeprune.transport.base import (
    CONNECT_TIMEOUT_S,
    MAX_OUTPUT,
    WRAPPER,
    RunResult,
    Transport,
    Watchdog,
)

# Lazy imports: the imports inside functions below load paramiko, which importing this module does not;
# they load only when a function that needs them runs.

DEAD_LINK_S = 10  # TCP_USER_TIMEOUT, and the upload stall watchdog
KEEPALIVE_S = 3
CLOSE_WAIT_S = 2.0  # close(): how long the board may take to end the session
LINK_PROBE_S = 10  # after a failed call: how long the board has to answer `true` before the link counts as lost


def _cause(exc: BaseException) -> str:
    """What went wrong, never empty (paramiko raises a bare EOFError or a timeout without a message)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def fingerprint(key) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_S),
        ("TCP_KEEPINTVL", 2),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", DEAD_LINK_S * 1000),
    ):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)


class _UnknownHost(Exception):
    def __init__(self, host: str, key) -> None:
        super().__init__(host)
        self.host, self.key = host, key


_HOST_RE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\s\[\]]+))(?::(?P<port>\d+))?$"
)


def parse_host(text: str) -> tuple[str | None, str, int | None]:
    """``user@addr[:port]`` -> (user or None, addr, port or None); IPv6 as ``user@[::1]:2222``.

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


def _quiet_paramiko() -> None:
    """paramiko logs tracebacks from its own thread; without a handler Python prints them on stderr.

    A NullHandler on the "paramiko" logger stops that (a handler the user
    configures still receives the records); our errors say what happened in one line.
    """
    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())


def _await_banner(sock: socket.socket, deadline: float, where: str, timeout: float) -> None:
    """Wait until the server has sent something (its SSH banner), without consuming it.

    An SSH server speaks first. A port that accepts TCP but never speaks
    (another service, a firewall's tarpit) is reported here in one line
    within the connect timeout, instead of inside paramiko.
    """
    try:
        sock.settimeout(max(deadline - time.monotonic(), 0.05))
        first = sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        raise TransportError(
            f"no SSH server answered at {where} within {timeout:g} s (banner timeout); "
            "check the address and port"
        ) from None
    except OSError as exc:
        raise TransportError(
            f"the connection to {where} failed before SSH started: {exc.strerror or exc}; "
            "check the address and port"
        ) from None
    if not first:
        raise TransportError(
            f"{where} closed the connection without speaking SSH (not an SSH server, or it refuses "
            "more connections now); check the address and port"
        )


class SSHTransport(Transport):
    kind = "ssh"
    default_workdir = "~/.edgeprune"
    default_deploy_dir = "~/edgeprune-deploy"

    # -- where the board is --------------------------------------------------------
    @classmethod
    def apply_host(cls, reach, host: str) -> None:
        user, addr, port = parse_host(host)
        reach.put("hostname", addr, "--host")
        reach.put("user", user, "--host")
        reach.put("port", port, "--host")

    @classmethod
    def complete(cls, reach, *, tfile: Path) -> None:
        """``~/.ssh/config`` as ``ssh`` reads it: a ``Host NAME`` entry, then HostName, User,
        Port, IdentityFile, UserKnownHostsFile for the address; then the usual defaults."""
        cfg, cfg_path = _ssh_config()
        name = reach.name
        if reach.hostname is None and cfg is not None and _has_host_entry(cfg, name):
            reach.put("hostname", name, f"Host {name} in {cfg_path}")
        if reach.hostname is None:
            raise cls.no_host_error(name, tfile)
        if cfg is not None and _has_host_entry(cfg, reach.hostname):
            found = cfg.lookup(reach.hostname)
            where = f"Host {reach.hostname} in {cfg_path}"
            alias = reach.hostname
            if found.get("hostname") and found["hostname"] != alias:
                reach.hostname = found["hostname"]
                reach.sources["hostname"] += f" -> HostName in {cfg_path}"
            reach.put("user", found.get("user"), where)
            reach.put("port", int(found["port"]) if found.get("port") else None, where)
            ids = found.get("identityfile") or []
            reach.put("key_filename", ids[0] if ids else None, where)
            kh = found.get("userknownhostsfile")
            reach.put("known_hosts", kh.split()[0] if kh else None, where)
        reach.put("user", getpass.getuser(), "your login name")
        reach.put("port", 22, "default")
        reach.put("known_hosts", "~/.ssh/known_hosts", "default")

    @classmethod
    def no_host_error(cls, name: str, tfile: Path) -> ProfileError:
        return ProfileError(
            f"target '{name}' is reached over SSH but no host is given; give one with "
            f'--host user@addr[:port], or a [{name}] entry with host = "..." in {tfile}, '
            f"or a `Host {name}` entry in ~/.ssh/config"
        )

    def __init__(
        self, reach, *, accept_new_host_key: bool = False, connect_timeout: float | None = None
    ) -> None:
        super().__init__(
            reach, accept_new_host_key=accept_new_host_key, connect_timeout=connect_timeout
        )
        self.client = None
        self._sftp = None
        self.recorded_host_key: str | None = None

    @property
    def identity(self) -> str:
        return f"ssh:{self.reach.user}@{self.reach.hostname}:{self.reach.port}"

    @property
    def host_key(self) -> str | None:
        t = self.client.get_transport() if self.client is not None else None
        key = t.get_remote_server_key() if t is not None and t.is_active() else None
        return f"{key.get_name()} {fingerprint(key)}" if key is not None else None

    @property
    def _hostport(self) -> str:
        r = self.reach
        host = f"[{r.hostname}]" if r.hostname and ":" in r.hostname else r.hostname
        return f"{host}:{r.port}"

    @property
    def _label(self) -> str:
        r = self.reach
        return r.hostname if r.port == 22 else f"[{r.hostname}]:{r.port}"

    # -- connecting --------------------------------------------------------------
    def connect(self) -> None:
        paramiko = require("paramiko", "ssh", "reaching boards over SSH")
        _quiet_paramiko()
        r = self.reach
        who = f"{r.name}: {r.address}"
        timeout = self.connect_timeout
        deadline = time.monotonic() + timeout
        if r.key_filename and not Path(r.key_filename).is_file():
            raise TransportError(
                f"{who}: key file {r.key_filename} not found "
                f"(from {r.sources.get('key_filename', '?')})"
            )
        try:
            sock = socket.create_connection((r.hostname, r.port), timeout=timeout)
        except TimeoutError:
            raise TransportError(
                f"{who}: no answer within {timeout:g} s; is the board on and the address right?"
            ) from None
        except OSError as exc:
            raise TransportError(f"{who}: cannot reach the board: {exc.strerror or exc}") from None
        _tune(sock)
        try:
            _await_banner(sock, deadline, self._hostport, timeout)
        except TransportError as exc:
            sock.close()
            raise TransportError(f"{r.name}: {exc}") from None
        sock.settimeout(max(deadline - time.monotonic(), 1.0))
        known = Path(r.known_hosts or "~/.ssh/known_hosts").expanduser()
        client = paramiko.SSHClient()
        if known.is_file():
            try:
                client.load_host_keys(str(known))
            except (OSError, paramiko.SSHException) as exc:
                sock.close()
                raise TransportError(f"{known}: cannot read known_hosts: {exc}") from None
        transport_self = self

        class Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client_, hostname, key):
                if not transport_self.accept_new_host_key:
                    raise _UnknownHost(hostname, key)
                known.parent.mkdir(parents=True, exist_ok=True)
                with open(known, "a", encoding="utf-8") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
                client_.get_host_keys().add(hostname, key.get_name(), key)
                transport_self.recorded_host_key = f"{key.get_name()} {fingerprint(key)}"

        client.set_missing_host_key_policy(Policy())
        try:
            client.connect(
                hostname=r.hostname,
                port=r.port,
                username=r.user,
                key_filename=r.key_filename,
                sock=sock,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=15,
                allow_agent=True,
                look_for_keys=r.key_filename is None,
            )
        except _UnknownHost as exc:
            client.close()
            raise TransportError(
                f"{who}: host {exc.host} is not in {known} (it offers {exc.key.get_name()} "
                f"{fingerprint(exc.key)}); if that is your board, run again with "
                "--accept-new-host-key to record it"
            ) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise TransportError(
                f"{who}: the host key of {self._label} has CHANGED (now {fingerprint(exc.key)}, "
                f"{known} has {fingerprint(exc.expected_key)}); refused. If the board was "
                f"re-installed, remove the old key with: ssh-keygen -f {known} -R '{self._label}' "
                "and run again with --accept-new-host-key"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            tried = r.key_filename or "ssh-agent and ~/.ssh/id_* keys"
            raise TransportError(
                f"{who}: the board refused user '{r.user}' with {tried}; check the user "
                "(--host user@addr, user = in the targets file) and the key (key = in the "
                "targets file, or ssh-add)"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            msg = str(exc) or type(exc).__name__
            if "authentication methods" in msg:
                msg = f"no key to log in with ({msg}); set key = in the targets file or run ssh-add"
            raise TransportError(f"{who}: SSH connection failed: {msg}") from None
        client.get_transport().set_keepalive(KEEPALIVE_S)
        self.client = client

    def _transport(self):
        t = self.client.get_transport() if self.client else None
        if t is None or not t.is_active():
            raise TransportError(
                f"{self.reach.name}: link to {self.reach.address} lost (the connection is closed)"
            )
        return t

    def _link_lost(self, wd: Watchdog | None = None) -> bool:
        """After a failed call: whether the link is gone (watchdog, closed transport, or no answer to ``true``).

        Asked after every failure, so that a lost link reads as one whichever call noticed it
        first (an SFTP write can fail with an empty EOFError while the transport still looks up).
        """
        if (wd is not None and wd.fired) or self.client is None:
            return True
        t = self.client.get_transport()
        if t is None or not t.is_active():
            return True
        try:
            chan = t.open_session(timeout=LINK_PROBE_S)
            try:
                chan.exec_command("true")
                return not (chan.status_event.wait(LINK_PROBE_S) and chan.recv_exit_status() == 0)
            finally:
                chan.close()
        except Exception:  # noqa: BLE001 - no session, no answer: the link is gone
            return True

    def _lost_how(self, wd: Watchdog | None) -> str:
        return f"no progress for {DEAD_LINK_S} s" if wd is not None and wd.fired else "the board stopped answering"

    def close(self) -> None:
        """End the session the way the board sees it end: half-close, then wait (at most
        :data:`CLOSE_WAIT_S`) until the board's sshd has finished it and closed its side. So
        ``--parallel K`` is also the most sessions a fleet's boards (or a jump host) ever hold at once."""
        if self.client is not None:
            t = self.client.get_transport()
            if t is not None and t.is_active():
                try:
                    t.sock.shutdown(socket.SHUT_WR)
                    t.join(CLOSE_WAIT_S)  # paramiko's reader thread ends at the board's EOF
                except (OSError, RuntimeError):
                    pass
            self.client.close()
        self.client = self._sftp = None

    # -- commands ------------------------------------------------------------------
    def run(self, argv: list[str], *, timeout: float, max_output: int = MAX_OUTPUT) -> RunResult:
        cmd = shlex.join(["sh", "-c", WRAPPER, "edgeprune", self.workdir or ".", *argv])
        start = time.monotonic()
        try:
            chan = self._transport().open_session(timeout=CONNECT_TIMEOUT_S)
            chan.exec_command(cmd)
        except TransportError:
            raise
        except Exception as exc:  # OSError, EOFError, paramiko.SSHException (not imported here)
            if self._link_lost():
                raise TransportError(
                    f"{self.reach.name}: link to {self.reach.address} lost: cannot start a command "
                    f"on the board ({_cause(exc)})"
                ) from None
            raise TransportError(
                f"{self.reach.name}: cannot start a command on the board: {_cause(exc)}"
            ) from None
        chan.settimeout(0.25)
        out, err, pid = bytearray(), bytearray(), None
        overflow = False
        deadline = start + timeout
        try:
            while True:
                try:
                    chunk = chan.recv(65536)
                except TimeoutError:
                    chunk = None
                while chan.recv_stderr_ready() and len(err) <= max_output:
                    err.extend(chan.recv_stderr(65536))
                if chunk == b"" and len(err) <= max_output:
                    break
                if chunk:
                    out.extend(chunk)
                    if pid is None and b"\n" in out:
                        line, _, rest = bytes(out).partition(b"\n")
                        pid = int(line) if line.strip().isdigit() else -1
                        out[:] = rest
                if len(out) > max_output or len(err) > max_output:
                    overflow = True
                    self._kill(pid)
                    break
                if time.monotonic() > deadline:
                    stopped = self._kill(pid)
                    how = (
                        "the process was stopped"
                        if stopped
                        else (
                            "it could not be stopped now (link down?): the agent ends itself at its deadline"
                        )
                    )
                    raise TransportError(
                        f"{self.reach.name}: the command on the board timed out after "
                        f"{timeout:.0f} s; {how}"
                    )
                if chunk is None and not self.client.get_transport().is_active():
                    raise TransportError(
                        f"{self.reach.name}: link to {self.reach.address} lost while "
                        "the board was running a command"
                    )
            rc = None
            if not overflow:
                while not chan.status_event.wait(0.25):
                    if time.monotonic() > deadline or not self.client.get_transport().is_active():
                        break
                    while chan.recv_stderr_ready() and len(err) <= max_output:
                        err.extend(chan.recv_stderr(65536))
                    if len(err) > max_output:  # still flooding stderr after closing stdout
                        self._kill(pid)
                        return RunResult(
                            rc=None,
                            stdout=bytes(out[:max_output]),
                            stderr=bytes(err[:max_output]),
                            overflow=True,
                            seconds=time.monotonic() - start,
                        )
                while chan.recv_stderr_ready() and len(err) <= max_output:
                    err.extend(chan.recv_stderr(65536))
                rc = chan.recv_exit_status() if chan.exit_status_ready() else None
                # paramiko reports -1 both for "killed by a signal" and for a closed transport.
                if rc is None or (rc == -1 and not self.client.get_transport().is_active()):
                    raise TransportError(
                        f"{self.reach.name}: link to {self.reach.address} lost while the "
                        "board was running a command (no exit status came back)"
                    )
        finally:
            chan.close()
        return RunResult(
            rc=rc,
            stdout=bytes(out[:max_output]),
            stderr=bytes(err[:max_output]),
            overflow=overflow,
            seconds=time.monotonic() - start,
        )

    def _kill(self, pid: int | None) -> bool:
        """Stop the process group (and process) ``pid`` on the board: TERM, then KILL."""
        if not pid or pid <= 1:
            return False
        script = (
            'kill -s TERM -- "-$1" 2>/dev/null; kill -s TERM "$1" 2>/dev/null; sleep 1; '
            'kill -s KILL -- "-$1" 2>/dev/null; kill -s KILL "$1" 2>/dev/null; true'
        )
        try:
            chan = self._transport().open_session(timeout=5)
            chan.settimeout(10)
            chan.exec_command(shlex.join(["sh", "-c", script, "edgeprune-kill", str(pid)]))
            chan.recv_exit_status()
            chan.close()
            return True
        except Exception:
            return False

    def ensure_workdir(self) -> str:
        if self.workdir is not None:
            return self.workdir
        wd = self.reach.workdir or self.default_workdir
        if wd == "~":
            wd = "."
        elif wd.startswith("~/"):
            wd = wd[2:]
        elif wd.startswith("~"):
            raise TransportError(f"{self.reach.name}: workdir {wd!r}: only ~/... is understood")
        script = (
            'mkdir -p -- "$1" && cd -- "$1" && pwd && '
            'find . -maxdepth 1 -name ".*.part-*" -mmin +30 -exec rm -f {} + 2>/dev/null; true'
        )
        res = self.run(["sh", "-c", script, "edgeprune-mkdir", wd], timeout=30)
        path = res.stdout.decode("utf-8", "replace").strip().splitlines()
        if res.rc != 0 or not path or not path[0].startswith("/"):
            raise TransportError(
                f"{self.reach.name}: cannot create the workdir {wd!r} on the board: "
                f"{res.stderr.decode('utf-8', 'replace').strip()[:300]}"
            )
        self.workdir = path[0]
        return self.workdir

    # -- files -----------------------------------------------------------------------
    def _sftp_client(self):
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
            self._sftp.get_channel().settimeout(DEAD_LINK_S * 3)
        return self._sftp

    def _put(self, local: Path, remote_tmp: str, size: int) -> None:
        self._transport()
        with Watchdog(DEAD_LINK_S, self.close) as wd:
            try:
                self._sftp_client().put(str(local), remote_tmp, callback=wd.poke, confirm=True)
                return
            except Exception as exc:
                if self._link_lost(wd):
                    raise TransportError(
                        f"{self.reach.name}: link to {self.reach.address} lost while uploading "
                        f"{local.name} ({self._lost_how(wd)}); the board keeps its previous copy"
                    ) from None
                failure = exc
        folder = posixpath.dirname(remote_tmp) or "."
        free = self._free_bytes(folder)
        if free is not None and free < size:
            raise TransportError(
                f"{self.reach.name}: no space left on the board for {local.name} (needs "
                f"{size / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free in {folder}); "
                "nothing was changed: free some space and run again"
            )
        raise TransportError(
            f"{self.reach.name}: writing {local.name} on the board failed: {_cause(failure)}; "
            "the previous copy was kept"
        )

    def _free_bytes(self, folder: str = ".") -> int | None:
        try:
            res = self.run(["df", "-Pk", folder], timeout=15)
            return int(res.stdout.decode().splitlines()[-1].split()[3]) * 1024
        except Exception:
            return None

    def _get(self, remote: str, local_tmp: Path, max_bytes: int) -> None:
        """SFTP read under the stall watchdog, stopping as soon as it passes ``max_bytes``."""
        self._transport()
        with Watchdog(DEAD_LINK_S, self.close) as wd:
            try:
                with self._sftp_client().open(remote, "rb") as src, open(local_tmp, "wb") as dst:
                    src.prefetch()
                    copied = 0
                    while chunk := src.read(1 << 20):
                        wd.poke()
                        copied += len(chunk)
                        if copied > max_bytes:
                            raise TransportError(
                                f"{self.reach.name}: {remote} grew past {max_bytes} bytes while "
                                "downloaded; refused"
                            )
                        dst.write(chunk)
            except TransportError:
                raise
            except Exception as exc:
                if self._link_lost(wd):
                    raise TransportError(
                        f"{self.reach.name}: link to {self.reach.address} lost while downloading "
                        f"{posixpath.basename(remote)} ({self._lost_how(wd)})"
                    ) from None
                raise TransportError(
                    f"{self.reach.name}: reading {remote} from the board failed: {_cause(exc)}"
                ) from None

    def _rename(self, src: str, dst: str) -> None:
        try:
            self._sftp_client().posix_rename(src, dst)
        except Exception as exc:  # OSError, EOFError, paramiko.SSHException
            if self._link_lost():
                raise TransportError(
                    f"{self.reach.name}: link to {self.reach.address} lost while renaming {src} to "
                    f"{dst} on the board"
                ) from None
            raise TransportError(
                f"{self.reach.name}: cannot rename {src} to {dst} on the board: {_cause(exc)}"
            ) from None

    def _discard(self, path: str) -> None:
        t = self.client.get_transport() if self.client else None
        if t is None or not t.is_active():
            return
        try:
            self._sftp_client().remove(path)
        except Exception:
            pass
