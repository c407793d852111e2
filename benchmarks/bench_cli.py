"""How long `edgeprune --help` takes (goal: under 0.5 s), and what `import edgeprune` loads.

    .venv/bin/python benchmarks/bench_cli.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_line, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / ".venv" / "bin" / "edgeprune"


def timed(argv: list[str], n: int = 20) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)  # warm the page cache
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    rows = []
    for label, argv in [
        ("`edgeprune --help`", [str(EXE), "--help"]),
        ("`edgeprune prune --help`", [str(EXE), "prune", "--help"]),
        ("`python -c pass` (interpreter start, for scale)", [sys.executable, "-c", "pass"]),
    ]:
        t = timed(argv)
        rows.append(f"| {label} | {statistics.median(t) * 1000:.0f} | {max(t) * 1000:.0f} |")
    body = "\n".join(
        [
            "## CLI start-up",
            "",
            "Command: `.venv/bin/python benchmarks/bench_cli.py` (20 runs each, after one warm-up run).",
            f"Machine: {machine_line()}.",
            "",
            "| command | median ms | max ms |",
            "|---|---|---|",
            *rows,
            "",
            "Goal: `edgeprune --help` under 500 ms. torch, onnx, tensorflow, numpy, rich and paramiko are not",
            "imported by `--help` (checked by tests/test_cli_basics.py::test_help_imports_no_heavy_library).",
        ]
    )
    write_section("bench_cli", body)
    print(body)


if __name__ == "__main__":
    main()
