"""The deploy's HTML report opened in a real browser: headless Chromium (Debian's ``chromium``).

One real deploy of digits-cnn to a local target ``here`` (as in test_deploy.py) writes
report/report.html; Chromium then loads it from disk with no network. The page must load
without a console error, its DOM must hold the key figures, and a full-window screenshot
must come out as a real PNG. scripts/install-farm-deps.sh installs ``chromium`` when run as
root (scripts/test.sh and CI run it); without the browser the test skips and says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.deploy import deploy_model

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(300)]

STEPS = 120  # as in test_deploy.py: digits-cnn comes back within the accuracy gate
BROWSER_TIMEOUT_S = 90  # one page load on a busy 2-core machine takes 3-20 s

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--hide-scrollbars", "--enable-logging=stderr", "--v=0")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH: install it with `sudo bash scripts/install-farm-deps.sh` "
                "(apt-get install chromium)")


def _here(tmp: Path) -> Path:
    targets = tmp / "targets.toml"
    targets.write_text(f'[here]\nprofile = "local"\npython = "{sys.executable}"\n'
                       f'deploy_dir = "{tmp / "board"}"\n')
    return targets


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(report dict, path of report.html) from one real deploy."""
    browser = _chromium()  # skip before the deploy's 15 s when there is no browser
    tmp = tmp_path_factory.mktemp("deploy-html")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEPRUNE_TARGETS", str(_here(tmp)))
        rep = deploy_model("digits-cnn", target="here", ratio=0.3, steps=STEPS, output=tmp / "out")
    page = tmp / "out" / "report" / "report.html"
    assert rep["ok"] is True and page.is_file()
    return rep, page, browser, tmp


def _run(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    # a fresh profile per run: nothing of the user's own is read or touched
    proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=BROWSER_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"chromium exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def _page_errors(stderr: str) -> list[str]:
    """What the page logged (console messages, uncaught errors, blocked or failed loads).

    Chromium's own chatter on stderr (no D-Bus in a container, no GPU) is not the page's.
    """
    return [line for line in stderr.splitlines()
            if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line or "net::ERR_" in line]


def test_report_loads_in_chromium_with_the_key_figures(report):
    rep, page, browser, tmp = report
    proc = _run(browser, tmp, "--dump-dom", page.as_uri())
    assert not _page_errors(proc.stderr), _page_errors(proc.stderr)
    dom = proc.stdout
    assert "<html" in dom[:200] and dom.rstrip().endswith("</html>")
    rid = rep["release"]["id"]
    assert re.fullmatch(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{8}", rid), rid
    assert f"Shipped release {rid}" in dom
    for heading in ("Latency on the board", "Accuracy per stage", "Size per stage", "Channels kept per layer",
                    "The board", "The release shipped", "Stages"):
        assert f"<h2>{heading}</h2>" in dom, heading
    assert dom.count("<svg") >= 3, "the accuracy, size and channel charts"
    assert "<script" not in dom and "http://" not in dom.replace("http://www.w3.org/2000/svg", "")
    # the figures are the deploy's own: the shipped accuracy and the kept channels
    shipped_acc = rep["accuracy"][-1]["value"]
    assert f"{100 * shipped_acc:.2f} %" in dom
    kept = sum(min(r["keep"], r["channels"]) for r in rep["channels"])
    total = sum(r["channels"] for r in rep["channels"])
    assert f"{kept} of {total} prunable channels kept" in dom
    # --ratio: no closed loop, and the page says so instead of drawing an empty chart
    assert rep["latency"]["note"] in dom


def test_report_screenshot_is_a_real_png(report):
    _rep, page, browser, tmp = report
    png = tmp / "report.png"
    proc = _run(browser, tmp, f"--screenshot={png}", "--window-size=1200,2400", page.as_uri())
    assert not _page_errors(proc.stderr), _page_errors(proc.stderr)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000, f"{len(data)} bytes: a blank page?"
    # IHDR: the size asked for
    assert int.from_bytes(data[16:20], "big") == 1200 and int.from_bytes(data[20:24], "big") == 2400
