"""The bad-input probes (issue 23): hostile and broken inputs of every kind, and the three rules, with totals.

The probes are the tables of two test files, so the suite and this report can
never disagree about what was tried:

- ``tests/test_load_security.py``: crafted model and data files whose pickles
  (or ``.pt2`` graphs and shape expressions) would run code (``os.system``,
  ``eval``, ``exec``, ``subprocess.Popen``, a ``__reduce__`` that returns what
  torch expects after running) in every file kind edgeprune opens, nested
  archives, terminal escapes in a model's name: no marker file may appear;
- ``tests/test_bad_inputs.py``: every numeric option of every command given
  NaN, infinities, one step past each end and fractions for whole numbers; bad
  ``--data``/``--val-data``/``--calib`` files and factories; bad ``.ept``
  fields and ``--plan`` files; the same values through the Python API.

Each probe checks the three rules: no code runs, one line naming the problem,
a non-zero exit (and no output folder). This script runs both files with
pytest and writes the totals to benchmarks/RESULTS.md:

    python benchmarks/probe_inputs.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_line, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FILES = {
    "tests/test_load_security.py": "files that would run code, terminal escapes",
    "tests/test_bad_inputs.py": "options (NaN, inf, out of range), data, calibration, .ept fields, plans, API",
}


def main() -> int:
    rows, failed_total = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for path, what in FILES.items():
            report = Path(tmp) / "junit.xml"
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path,
                            f"--junitxml={report}"], cwd=REPO, check=False)
            seconds = time.monotonic() - t0
            suite = ET.parse(report).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            total, failures = int(suite.get("tests")), int(suite.get("failures")) + int(suite.get("errors"))
            skipped = int(suite.get("skipped"))
            failed_total += failures
            rows.append(f"| `{path}` | {what} | {total} | {total - failures - skipped} | {failures} | {skipped} | "
                        f"{seconds:.0f} s |")
    body = "\n".join([
        "## Bad-input probes (issue 23)",
        "",
        "Command: `python benchmarks/probe_inputs.py` (runs the two test files below with pytest).",
        machine_line(),
        "",
        "| probes | kinds | tried | held the three rules | broke one | skipped | wall |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "The three rules: no code from the file runs (a marker file never appears), one line naming the "
        "problem and its fix, a non-zero exit with nothing half-written.",
    ])
    write_section("probe_inputs", body)
    print(body)
    return 1 if failed_total else 0


if __name__ == "__main__":
    raise SystemExit(main())
