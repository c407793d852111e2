"""`edgeprune bench --target local`: the same agent, run as a subprocess on this machine."""

from __future__ import annotations

import subprocess
import sys


def test_a_corrupt_model_is_one_line_naming_the_users_file(tmp_path):
    import os

    from edgeprune._paths import sha256_file

    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x08\x01garbage, not a protobuf" * 50)
    cache = tmp_path / "cache"
    out = subprocess.run(
        [sys.executable, "-m", "edgeprune", "bench", "--target", "local", str(bad)],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, EDGEPRUNE_CACHE_DIR=str(cache)),
    )
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: agent on local: onnxruntime cannot load")
    assert str(bad) in lines[0]
    assert out.stdout == ""
    # the board could not load it: it does not stay in the board's folder (issue 8, item 6)
    board = cache / "local-board"
    assert board.is_dir() and not (board / f"model-{sha256_file(bad)[:24]}.onnx").exists()
