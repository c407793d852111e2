"""Every built-in model, exported to every shipped profile's default format and precision, runs in its runtime.

The export itself loads each artifact in ONNX Runtime or LiteRT (XNNPACK on,
one thread) and runs it on held-out inputs; this test then loads the final
file again (TFLite: with XNNPACK, which refused the ResNet stem before its
MaxPool padding was made finite) and checks that no int8 scale is absurd.
Profiles whose default artifact is the same file (same format, precision, INT8
scheme and I/O types: raspberry-pi-4 and -5, the two Corals, the two phones)
are exported once; the test asserts that the groups cover every shipped
profile. Small input shapes (tests/sizes.py); agreement is not gated here
(resnet18 and yolo-small have random weights; see test_export_reference.py):
``min_agreement`` is zero, so this test is about files that load and run.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgeprune.api import export_model as export  # noqa: E402
from edgeprune.boards.profiles import list_profiles, load_profile  # noqa: E402
from edgeprune.checks.thresholds import Thresholds  # noqa: E402
from edgeprune.export.pipeline import resolve  # noqa: E402
from tests.sizes import SMALL  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ANY = Thresholds(top1=0.0, cosine=-1.0, recall=0.0, score_corr=-1.0)


def _config(profile) -> tuple:
    fmt, precision = resolve(profile, None, None)
    exp = profile.data.get("export", {})
    return fmt, precision, exp.get("io_precision") or "int8", profile.runtime == "tensorrt"


def _groups() -> dict[tuple, list[str]]:
    groups: dict[tuple, list[str]] = {}
    for p in list_profiles():
        groups.setdefault(_config(p), []).append(p.name)
    return groups


GROUPS = _groups()


def test_the_groups_cover_every_shipped_profile():
    shipped = {p.name for p in list_profiles()}
    assert {n for names in GROUPS.values() for n in names} == shipped
    assert {"raspberry-pi-4", "jetson-orin-nano", "local", "coral-usb"} <= shipped


@pytest.mark.parametrize("names", list(GROUPS.values()), ids=lambda names: "+".join(names))
@pytest.mark.parametrize("model", list(SMALL))
def test_builtin_model_exports_to_the_profile_default_and_runs(model, names, tmp_path):
    target = names[0]
    report = export(model, target=target, output=tmp_path, input_shape=SMALL[model], calib_count=16,
                    verify_count=4, min_agreement=ANY)
    final = [a for a in report.artifacts if a.agreement is not None][-1]  # not the unverifiable Edge TPU file
    fmt, precision, io, _ = _config(load_profile(target))
    assert (final.format, final.precision) == (fmt, precision)
    assert final.agreement["samples"] > 0 and np.isfinite(final.agreement["cosine"])  # digits: its test split
    if fmt == "tflite":
        from edgeprune.export.tflite import TFLiteRunner, tensor_report

        outs = TFLiteRunner(final.path)(np.zeros((1, *SMALL[model][1:]), np.float32))  # XNNPACK on
        assert all(np.all(np.isfinite(o)) for o in outs)
        if precision == "int8":
            assert tensor_report(final.path)["input_dtypes"] == [{"int8": "int8", "uint8": "uint8"}.get(io, "float32")]
    else:
        from edgeprune.export.onnx import run_onnx

        outs = run_onnx(final.path, np.zeros((1, *SMALL[model][1:]), np.float32))
        assert all(np.all(np.isfinite(o)) for o in outs)
