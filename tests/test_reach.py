"""Where a target is: --host, then the targets file, then ~/.ssh/config."""

from __future__ import annotations

import pytest

from edgeprune.boards.reach import parse_host, resolve_target
from edgeprune.errors import ProfileError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EDGEPRUNE_TARGETS", raising=False)
    monkeypatch.setenv("EDGEPRUNE_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / ".config"))
    (tmp_path / ".ssh").mkdir()
    return tmp_path


def write_targets(home, text):
    path = home / ".config" / "edgeprune" / "targets.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parse_host():
    assert parse_host("pi@10.0.0.5:2222") == ("pi", "10.0.0.5", 2222)
    assert parse_host("nano.local") == (None, "nano.local", None)
    assert parse_host("me@[fe80::1]:22") == ("me", "fe80::1", 22)
    for bad in ("pi@", "a b", "pi@host:99999", "pi@host:x"):
        with pytest.raises(ProfileError, match="expected user@addr"):
            parse_host(bad)


def test_local_needs_no_host(home):
    r = resolve_target("local")
    assert r.transport == "local" and r.hostname is None
    with pytest.raises(ProfileError, match="--host is not used"):
        resolve_target("local", host="pi@1.2.3.4")


def test_ssh_target_without_host_says_the_three_ways(home):
    with pytest.raises(ProfileError) as exc:
        resolve_target("raspberry-pi-5")
    msg = str(exc.value)
    assert (
        "--host user@addr[:port]" in msg and "targets.toml" in msg and "Host raspberry-pi-5" in msg
    )


def test_host_option(home):
    r = resolve_target("jetson-nano", host="nvidia@10.0.0.12:2200")
    assert (r.hostname, r.user, r.port, r.sources["hostname"]) == (
        "10.0.0.12",
        "nvidia",
        2200,
        "--host",
    )
    assert r.workdir == "~/.edgeprune" and r.known_hosts.endswith(".ssh/known_hosts")


def test_targets_file_entry_with_its_own_name(home):
    write_targets(
        home,
        '[lab-nano]\nprofile = "jetson-nano"\nhost = "10.0.0.12"\nuser = "nvidia"\n'
        'port = 2222\nkey = "~/.ssh/id_lab"\nworkdir = "~/ep"\npython = "/usr/bin/python3.6"\n',
    )
    r = resolve_target("lab-nano")
    assert r.profile.name == "jetson-nano" and r.transport == "ssh"
    assert (r.hostname, r.user, r.port, r.workdir, r.python) == (
        "10.0.0.12",
        "nvidia",
        2222,
        "~/ep",
        "/usr/bin/python3.6",
    )
    assert r.key_filename == str(home / ".ssh" / "id_lab")
    assert r.sources["hostname"].startswith("targets file")
    # --host wins over the file, key by key
    r = resolve_target("lab-nano", host="root@10.9.9.9")
    assert (r.hostname, r.user, r.port) == ("10.9.9.9", "root", 2222)


def test_env_and_config_choose_the_targets_file(home, monkeypatch):
    other = home / "elsewhere.toml"
    other.write_text('[pi]\nprofile = "raspberry-pi-4"\nhost = "10.1.1.1"\n')
    cfg = home / "config.toml"
    cfg.write_text(f'targets_file = "{other}"\n')
    monkeypatch.setenv("EDGEPRUNE_CONFIG", str(cfg))
    assert resolve_target("pi").hostname == "10.1.1.1"
    env = home / "env.toml"
    env.write_text('[pi]\nprofile = "raspberry-pi-4"\nhost = "10.2.2.2"\n')
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(env))
    assert resolve_target("pi").hostname == "10.2.2.2"
    monkeypatch.setenv("EDGEPRUNE_TARGETS", str(home / "missing.toml"))
    with pytest.raises(ProfileError, match="missing.toml: targets file not found"):
        resolve_target("pi")


@pytest.mark.parametrize(
    "text, words",
    [
        (
            '[pi]\nprofile = "raspberry-pi-4"\nhots = "x"\n',
            "[pi] unknown key 'hots' (did you mean 'host'?)",
        ),
        (
            '[pi]\nprofile = "raspberry-pi-4"\nport = 70000\n',
            "[pi] key 'port': expected a port number",
        ),
        ('[pi]\nprofile = "raspberry-pi-4"\nport = "22"\n', "[pi] key 'port'"),
        (
            '[pi]\nprofile = "raspberry-pi-44"\nhost = "x"\n',
            "[pi] key 'profile': unknown target 'raspberry-pi-44'",
        ),
        ('pi = "10.0.0.1"\n', "'pi' must be a table"),
        ("[pi\n", "not valid TOML"),
    ],
)
def test_targets_file_errors_name_file_and_key(home, text, words):
    path = write_targets(home, text)
    with pytest.raises(ProfileError) as exc:
        resolve_target("pi")
    assert str(path) in str(exc.value) and words in str(exc.value)


def test_ssh_config_host_entry_and_alias(home):
    (home / ".ssh" / "config").write_text(
        "Host raspberry-pi-5\n  HostName 192.168.1.50\n  User pi\n  Port 2022\n  IdentityFile ~/.ssh/id_pi\n"
        "Host lab-alias\n  HostName 10.3.3.3\n  User jetson\n  UserKnownHostsFile ~/.ssh/lab_known\n"
        "Host *\n  ServerAliveInterval 10\n"
    )
    r = resolve_target("raspberry-pi-5")
    assert (r.hostname, r.user, r.port) == ("192.168.1.50", "pi", 2022)
    assert r.key_filename == str(home / ".ssh" / "id_pi")
    assert "Host raspberry-pi-5" in r.sources["hostname"]
    # a targets file host that is an ssh alias is resolved like ssh would
    write_targets(home, '[nano]\nprofile = "jetson-nano"\nhost = "lab-alias"\n')
    r = resolve_target("nano")
    assert (r.hostname, r.user, r.port) == ("10.3.3.3", "jetson", 22)
    assert r.known_hosts == str(home / ".ssh" / "lab_known")
    # the file's user wins over the alias's
    write_targets(home, '[nano]\nprofile = "jetson-nano"\nhost = "lab-alias"\nuser = "me"\n')
    assert resolve_target("nano").user == "me"


def test_wildcard_only_ssh_config_is_not_a_host(home):
    (home / ".ssh" / "config").write_text("Host *\n  User everyone\n")
    with pytest.raises(ProfileError, match="no host is given"):
        resolve_target("jetson-nano")


def test_adb_target_uses_a_serial(home):
    r = resolve_target("pixel-8", host="1A2B3C4D")
    assert (
        r.transport == "adb"
        and r.hostname == "1A2B3C4D"
        and r.workdir == "/data/local/tmp/edgeprune"
    )
    assert r.address == "adb:1A2B3C4D"
    assert resolve_target("pixel-8", host="192.168.1.20:5555").hostname == "192.168.1.20:5555"
    with pytest.raises(ProfileError, match="adb devices"):
        resolve_target("pixel-8")


def test_unknown_target_suggests(home):
    write_targets(home, '[lab-pi]\nprofile = "raspberry-pi-5"\nhost = "10.0.0.1"\n')
    with pytest.raises(ProfileError, match="lab-pi"):
        resolve_target("lab-pii")
