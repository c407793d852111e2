"""The SSH transport against real sshd boards (tests/farm): keys, failures, uploads."""

from __future__ import annotations

import time

import pytest

from edgeprune._paths import sha256_file
from edgeprune.boards.reach import resolve_target
from edgeprune.errors import TransportError
from edgeprune.transport import open_transport

# A hang anywhere here must fail the test, not the CI job (pytest-timeout).
pytestmark = [pytest.mark.farm, pytest.mark.timeout(180)]


def blob(path, mb, seed=0):
    import random

    path.write_bytes(random.Random(seed).randbytes(int(mb * 2**20)))
    return path


def ls(t) -> list[str]:
    return t.run(["ls", "-A"], timeout=20).stdout.decode().split("\n")


def test_round_trip_is_fast_with_nodelay(farm_env, root_farm):
    # root only: the loopback fallback board runs this machine's login shell rc files (slow).
    with open_transport(resolve_target("farm-b1")) as t:
        t.ensure_workdir()
        t.run(["true"], timeout=10)
        start = time.perf_counter()
        for _ in range(5):
            assert t.run(["true"], timeout=10).rc == 0
        per = (time.perf_counter() - start) / 5
    assert per < 0.04, f"{per * 1000:.0f} ms per command: Nagle back on?"


def test_upload_is_verified_and_skipped_when_unchanged(farm_env, tmp_path):
    f = blob(tmp_path / "m.bin", 1)
    with open_transport(resolve_target("farm-b1")) as t:
        assert t.upload(f, "m.bin") is True
        assert t.upload(f, "m.bin") is False  # same sha256 on the board
        assert t.remote_digest(t.path("m.bin")) == (f.stat().st_size, sha256_file(f))
        assert not [n for n in ls(t) if ".part-" in n]


def test_hostile_file_name_is_just_a_name(farm_env, tmp_path):
    name = "a b;touch pwned.onnx"
    f = blob(tmp_path / name, 0.01)
    with open_transport(resolve_target("farm-b1")) as t:
        t.upload(f, name)
        res = t.run(["cat", name], timeout=10)
        assert res.rc == 0 and res.stdout == f.read_bytes()
        res = t.run(["sh", "-c", "ls -A; ls -A ~", "x"], timeout=10)
        assert name in res.stdout.decode() and "pwned.onnx\n" not in res.stdout.decode().replace(
            name, ""
        )
    with pytest.raises(TransportError, match="not a plain file name"):
        t.path("../etc/passwd")


def test_unknown_host_is_refused_then_recorded_on_opt_in(farm_env, farm, tmp_path, monkeypatch):
    kh = tmp_path / "kh"
    text = farm_env.read_text().replace(str(farm.known_hosts), str(kh))
    farm_env.write_text(text)
    with pytest.raises(TransportError, match="--accept-new-host-key") as exc:
        with open_transport(resolve_target("farm-b1")):
            pass
    assert "SHA256:" in str(exc.value) and not kh.exists()
    with open_transport(resolve_target("farm-b1"), accept_new_host_key=True) as t:
        assert t.recorded_host_key and t.run(["true"], timeout=10).rc == 0
    assert farm.boards["b1"].host_key_pub.split()[1] in kh.read_text()
    with open_transport(resolve_target("farm-b1")) as t:  # now known, no opt-in needed
        assert t.run(["true"], timeout=10).rc == 0


def test_changed_host_key_is_refused_with_the_fix(farm_env, farm, tmp_path):
    import subprocess

    kh = tmp_path / "kh"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hk")], check=True
    )
    other = " ".join((tmp_path / "hk.pub").read_text().split()[:2])
    kh.write_text(f"{farm.boards['b1'].known_hosts_label} {other}\n")  # b1's address, another key
    farm_env.write_text(farm_env.read_text().replace(str(farm.known_hosts), str(kh)))
    for accept in (False, True):  # opting in never replaces a changed key
        with pytest.raises(TransportError) as exc:
            with open_transport(resolve_target("farm-b1"), accept_new_host_key=accept):
                pass
        msg = str(exc.value)
        assert "CHANGED" in msg and f"ssh-keygen -f {kh} -R" in msg and "\n" not in msg
    assert kh.read_text().count("\n") == 1


def test_unreachable_host(farm_env, farm, monkeypatch):
    addr = farm.boards["b1"].addr.rsplit(".", 1)[0] + ".250" if farm.privileged else "127.0.0.1"
    start = time.monotonic()
    with pytest.raises(TransportError, match="cannot reach|no answer") as exc:
        port = "" if farm.privileged else ":1"
        with open_transport(resolve_target("farm-b1", host=f"root@{addr}{port}")):
            pass
    assert time.monotonic() - start < 15 and "\n" not in str(exc.value)


def test_wrong_user(farm_env):
    with pytest.raises(TransportError, match="refused user 'nosuchuser'"):
        with open_transport(resolve_target("farm-wronguser")):
            pass


def test_wrong_key(farm_env, tmp_path):
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    farm_env.write_text(farm_env.read_text().replace('key = "', f'key = "{tmp_path}/other" #', 1))
    with pytest.raises(TransportError, match="refused user .* with .*other"):
        with open_transport(resolve_target("farm-b1")):
            pass
    farm_env.write_text(farm_env.read_text().replace(f'key = "{tmp_path}/other" #', 'key = "', 1))
    r = resolve_target("farm-b1")
    r.key_filename = str(tmp_path / "absent")
    with pytest.raises(TransportError, match="key file .*absent not found"):
        open_transport(r).connect()


def test_command_timeout_stops_the_remote_process(farm_env, root_farm):
    with open_transport(resolve_target("farm-b2")) as t:
        t.ensure_workdir()
        start = time.monotonic()
        with pytest.raises(TransportError, match="timed out after 2 s; the process was stopped"):
            t.run(["sh", "-c", "sleep 300 # edgeprune-hang-marker"], timeout=2)
        assert time.monotonic() - start < 8
    time.sleep(0.5)
    assert not [c for c in root_farm.ns_processes("b2") if "edgeprune-hang-marker" in c]


def test_huge_output_is_capped_and_stopped(farm_env):
    with open_transport(resolve_target("farm-b1")) as t:
        res = t.run(["sh", "-c", "yes edgeprune-flood"], timeout=60, max_output=2 * 2**20)
        assert res.overflow and len(res.stdout) <= 2 * 2**20
        assert t.run(["true"], timeout=10).rc == 0  # the connection is still fine


def test_disk_full_leaves_no_partial_file(farm_env, root_farm, tmp_path):
    small, big = blob(tmp_path / "small", 0.5, 1), blob(tmp_path / "big", 12, 2)
    with open_transport(resolve_target("farm-full")) as t:
        t.upload(small, "model.bin")
        with pytest.raises(TransportError, match="no space left on the board") as exc:
            t.upload(big, "model.bin")
        assert "\n" not in str(exc.value)
        assert t.remote_digest(t.path("model.bin")) == (small.stat().st_size, sha256_file(small))
        assert not [n for n in ls(t) if ".part-" in n]


def test_link_cut_mid_upload(farm_env, root_farm, tmp_path):
    old, new = (
        blob(tmp_path / "old", 0.2, 3),
        blob(tmp_path / "new", 40, 4),
    )  # 40 MiB at 20 Mbit/s: ~17 s
    with open_transport(resolve_target("farm-cut")) as t:
        t.upload(old, "model.bin")
        import threading

        timer = threading.Timer(2.0, root_farm.cut, args=("cut",))
        timer.start()
        try:
            start = time.monotonic()
            with pytest.raises(TransportError, match="link to .* lost while uploading new") as exc:
                t.upload(new, "model.bin")
            took = time.monotonic() - start - 2.0
        finally:
            timer.join()
            root_farm.restore("cut")
    assert took < 15, f"noticed the dead link after {took:.1f} s"
    assert "previous copy" in str(exc.value)
    with open_transport(resolve_target("farm-cut")) as t:
        assert t.remote_digest(t.path("model.bin")) == (old.stat().st_size, sha256_file(old))


def test_a_cut_link_reads_as_a_lost_link_whichever_call_notices_it_first(farm_env, root_farm, tmp_path):
    """Issue 23: SFTP failing first (a closed channel, an empty EOFError) while the transport still looked up
    gave ``writing new on the board failed: ; the previous copy was kept``."""
    old, new = blob(tmp_path / "old", 0.2, 3), blob(tmp_path / "new", 1, 4)
    with open_transport(resolve_target("farm-cut")) as t:
        t.upload(old, "model.bin")
        real_put, sftp = t._put, t._sftp_client().get_channel()

        def cut_then_put(*args):  # the cable pulled as the file starts; SFTP notices first, the transport not
            root_farm.cut("cut")
            sftp.close()
            assert t.client.get_transport().is_active()
            return real_put(*args)

        t._put = cut_then_put
        try:
            with pytest.raises(TransportError, match="link to .* lost while uploading new") as exc:
                t.upload(new, "model.bin")
            with pytest.raises(TransportError, match="link to .* lost"):  # and the next call says so too
                t.run(["true"], timeout=10)
        finally:
            root_farm.restore("cut")
    msg = str(exc.value)
    assert "previous copy" in msg and ": ;" not in msg and "()" not in msg and "\n" not in msg
    with open_transport(resolve_target("farm-cut")) as t:
        assert t.remote_digest(t.path("model.bin")) == (old.stat().st_size, sha256_file(old))


def test_a_failed_write_on_a_live_link_names_its_cause(farm_env, tmp_path):
    old, new = blob(tmp_path / "old", 0.2, 3), blob(tmp_path / "new", 0.2, 4)
    with open_transport(resolve_target("farm-b1")) as t:
        t.upload(old, "model.bin")
        t._sftp_client().get_channel().close()  # SFTP fails, the board still answers
        with pytest.raises(TransportError, match="writing new on the board failed: ") as exc:
            t.upload(new, "model.bin")
        cause = str(exc.value).split("failed: ", 1)[1].split("; the previous copy was kept")[0]
        assert cause.strip() and "lost" not in str(exc.value)


def test_lossy_slow_link_still_delivers(farm_env, tmp_path):
    f = blob(tmp_path / "m", 2, 5)
    with open_transport(resolve_target("farm-lossy")) as t:
        assert t.upload(f, "m")
        assert t.remote_digest(t.path("m"))[1] == sha256_file(f)


def test_non_root_fallback_board_works(farm_env, farm):
    # Either kind of farm: the first board answers and runs this machine's Python.
    with open_transport(resolve_target("farm-b1")) as t:
        t.ensure_workdir()
        res = t.run(
            [farm.python, "-c", "import onnxruntime, sys; print(sys.version_info[0])"], timeout=60
        )
        assert res.rc == 0 and res.stdout.strip() == b"3"


def test_link_cut_while_a_command_runs(farm_env, root_farm):
    import threading

    with open_transport(resolve_target("farm-cut")) as t:
        t.ensure_workdir()
        timer = threading.Timer(1.0, root_farm.cut, args=("cut",))
        timer.start()
        start = time.monotonic()
        try:
            with pytest.raises(TransportError, match="link to .* lost|timed out"):
                t.run(["sleep", "120"], timeout=120)
            took = time.monotonic() - start - 1.0
        finally:
            timer.join()
            root_farm.restore("cut")
    assert took < 20, f"noticed the dead link after {took:.1f} s"


def test_stderr_flood_is_capped_too(farm_env):
    with open_transport(resolve_target("farm-b1")) as t:
        res = t.run(["sh", "-c", "exec 1>&-; yes edgeprune-flood >&2"], timeout=60, max_output=2**20)
        assert res.overflow and len(res.stderr) <= 2**20
        assert t.run(["true"], timeout=10).rc == 0
