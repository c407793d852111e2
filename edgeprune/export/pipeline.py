"""export(): from a model to the file a board runs, every step timed, stamped and verified.

The steps come from the format table (:func:`edgeprune.export.formats.chain`):
PyTorch -> ONNX fp32 -> the format and precision asked for. Each step goes
through :func:`_step`, the one wrapper that

1. runs the converter named in the table and times it,
2. stamps the metadata into the file (source model hash, plan, profile,
   precision, edgeprune version, ...; see :mod:`edgeprune.export.artifact`),
3. sizes and sha256s it,
4. runs it with the table's runtime (ONNX Runtime or LiteRT, one thread) on
   held-out inputs and measures agreement against the previous step *and*
   the original PyTorch model (:func:`edgeprune.checks.agreement.agreement`),
5. fails the export (:class:`AgreementError`) when agreement with the
   original is below the thresholds (the table's defaults, or
   ``min_agreement``).

Around the steps: the profile gives the default format, precision, INT8
scheme and I/O types and may refuse a precision (jetson-nano: INT8);
calibration and held-out verification samples come from
:mod:`edgeprune.export.calib`; a full-INT8 TFLite is checked to contain no
float tensors beyond what the profile allows at I/O; for Coral the INT8
model is compiled with ``edgetpu_compiler`` when it is installed. A pruned
model (a LoadedModel with a ``plan``) is also compared with its unpruned
base, for information (pruning changes outputs on purpose). The whole
report is written to ``OUTPUT/export.json``.

Example::

    report = export("mobilenetv2", target="raspberry-pi-5", output_dir=Path("out"))
    report.final.path, report.final.agreement["top1"]
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune import __version__, _paths
from edgeprune._paths import sha256_file, staged_output
from edgeprune.checks.accuracy import (
    LOST_POINTS,
    AccuracyCheck,
    AccuracyDropError,
    label_order_warning,
    verdict,
)
from edgeprune.checks.agreement import agreement
from edgeprune.checks.heads import same_form
from edgeprune.checks.outputs import flatten_numpy
from edgeprune.errors import AgreementError, ExportError, ModelError
from edgeprune.export import calib as calib_mod
from edgeprune.export.artifact import Artifact, stamp_metadata
from edgeprune.export.calib import (
    ACCURACY_COUNT,
    DEFAULT_COUNT,
    VERIFY_COUNT,
    SampleSet,
    builtin_samples,
    default_normalize,
)
from edgeprune.export.detect import (
    OutputCheck,
    describe,
    for_shipping,
    is_split,
    needs_own_scales,
    output_layout,
    pieces,
)
from edgeprune.export.detect_accuracy import DetectAccuracy
from edgeprune.export.edgetpu import INSTALL_HINT, compile_edgetpu
from edgeprune.export.formats import (
    FORMAT_RUNTIMES,
    ConvertRequest,
    FormatSpec,
    Thresholds,
    chain,
    format_spec,
)
from edgeprune.export.report import write_export_report
from edgeprune.export.runners import host_runner
from edgeprune.export.tflite import tensor_report
from edgeprune.progress import step
from edgeprune.tasks import detector_classes
from edgeprune.validate import check, check_all

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.


@dataclass
class ExportReport:
    target: str
    model: str
    format: str
    precision: str
    output_dir: Path
    artifacts: list[Artifact] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    pruning: dict[str, Any] | None = None
    input_shape: list[int] = field(default_factory=list)
    input_shape_source: str = ""
    outputs: list[dict[str, Any]] = field(default_factory=list)  # what each artifact output holds
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    passed: bool = True
    accuracy: dict[str, Any] | None = None  # edgeprune.checks.accuracy: original, model, every artifact
    failure: str | None = None  # why it failed, for the verdict
    verdict: dict[str, Any] = field(default_factory=lambda: {"status": "passed", "reason": None})

    @property
    def final(self) -> Artifact:
        return next(a for a in reversed(self.artifacts) if a.final)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "model": self.model, "format": self.format, "precision": self.precision,
            "output_dir": str(self.output_dir), "passed": self.passed, "seconds": round(self.seconds, 3),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "calibration": self.calibration, "verification": self.verification, "pruning": self.pruning,
            "input_shape": self.input_shape, "input_shape_source": self.input_shape_source, "outputs": self.outputs,
            "accuracy": self.accuracy, "verdict": self.verdict,
            "warnings": self.warnings, "notes": self.notes, "edgeprune_version": __version__,
        }


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how it is checked (the CLI's ``export``/``quantize`` options).

    ``fmt``/``precision``: default the profile's; ``io_precision``: a full-INT8
    TFLite file's input/output type (``int8``, ``uint8`` or ``float32``;
    default the profile's, so ``--target local --io-precision int8`` gives the
    file a Raspberry Pi runs). ``calib``: a calibration spec
    (:func:`edgeprune.export.calib.load_calibration`). ``min_agreement``:
    top-1 (a float) or :class:`Thresholds`. ``detector_outputs``: ``split``
    (a detector's boxes and scores as separate outputs when a step is INT8,
    so each keeps its own scale) or ``keep``. ``max_accuracy_drop``: points;
    the file to ship further below the original fails the export.
    """

    fmt: str | None = None
    precision: str | None = None
    io_precision: str | None = None
    calib: Any = None
    calib_count: int = DEFAULT_COUNT
    verify_count: int = VERIFY_COUNT
    min_agreement: float | Thresholds | None = None
    quantizer: str | None = None
    name: str | None = None
    detector_outputs: str = "split"
    max_accuracy_drop: float | None = None
    accuracy_count: int = ACCURACY_COUNT

    def __post_init__(self) -> None:
        if self.detector_outputs not in ("split", "keep"):
            raise ExportError(f"detector_outputs '{self.detector_outputs}': use 'split' or 'keep'")
        if self.io_precision not in (None, "int8", "uint8", "float32"):
            raise ExportError(f"--io-precision {self.io_precision}: use int8, uint8 or float32")
        check_all(calib_count=self.calib_count, verify_count=self.verify_count, accuracy_count=self.accuracy_count,
                  max_accuracy_drop=self.max_accuracy_drop)
        if isinstance(self.min_agreement, (int, float)):
            check("min_agreement", self.min_agreement)


# -- the model and its reference outputs ---------------------------------------



def _torch_outputs(module, x: np.ndarray) -> list[np.ndarray]:
    import torch

    module.eval()
    parts = []
    step = 16
    with torch.no_grad():
        try:
            parts.append(flatten_numpy(module(torch.from_numpy(np.ascontiguousarray(x[:step])))))
        except Exception:  # an ExportedProgram or traced file of batch 1: one sample at a time
            step = 1
            parts.append(flatten_numpy(module(torch.from_numpy(np.ascontiguousarray(x[:step])))))
        for i in range(step, len(x), step):
            parts.append(flatten_numpy(module(torch.from_numpy(np.ascontiguousarray(x[i : i + step])))))
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def model_sha256(module) -> str:
    """Hash of the weights (names, shapes, bytes) of an ``nn.Module``: the source-model hash."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _plan_dict(plan: Any) -> Any:
    if plan is None:
        return None
    if hasattr(plan, "to_dict"):
        return plan.to_dict()
    return str(plan)


def _runner(spec: FormatSpec, path: Path, like: list[tuple[int, ...]], *, emulate_qdq: bool = False):
    return host_runner(path, runtime=spec.runtime, like=like, emulate_qdq=emulate_qdq).model_space


def _is_classifier(outputs: list[np.ndarray]) -> bool:
    return outputs[0].ndim == 2 and outputs[0].shape[1] > 1


def _thresholds(spec: FormatSpec, min_agreement: float | Thresholds | None) -> Thresholds:
    if min_agreement is None:
        return spec.thresholds
    if isinstance(min_agreement, Thresholds):
        return min_agreement
    return Thresholds(top1=float(min_agreement), cosine=spec.thresholds.cosine, recall=spec.thresholds.recall,
                      score_corr=spec.thresholds.score_corr)


def _round(d: dict[str, Any] | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}


# -- the one wrapper every step goes through ----------------------------------

def _step(spec: FormatSpec, req: ConvertRequest, *, meta: dict[str, Any], verify_x: np.ndarray,
          reference: list[np.ndarray], previous: list[np.ndarray] | None,
          labels: np.ndarray | None, outs: OutputCheck) -> tuple[Artifact, list[np.ndarray]]:
    step(f"converting to {spec.format} {spec.precision}")
    t0 = time.perf_counter()
    info = spec.load_converter()(req) or {}
    seconds = time.perf_counter() - t0
    dest = req.dest
    stamped = {**meta, "format": spec.format, "precision": spec.precision,
               "step": f"{spec.format} {spec.precision}", "io": spec.io, **_meta_info(info)}
    stamp_metadata(dest, stamped)
    step(f"checking {spec.format} {spec.precision} against the original")
    # A TensorRT-scheme INT8 model runs on the board's TensorRT: check what it computes, not what
    # this CPU's saturating int8 kernels make of it (edgeprune.export.onnx.onnx_session).
    emulate = spec.precision == "int8" and req.options.get("scheme") == "tensorrt"
    run = _runner(spec, dest, outs.artifact_shapes(), emulate_qdq=emulate)
    outputs = outs.pieces(run(verify_x), like=reference)
    art = Artifact(
        path=dest, format=spec.format, precision=spec.precision, sha256=sha256_file(dest),
        size_bytes=dest.stat().st_size, agreement=_round(agreement(reference, outputs)),
        agreement_vs_previous=_round(agreement(previous, outputs)) if previous is not None else None,
        step=f"{spec.format} {spec.precision}", seconds=round(seconds, 3), metadata=stamped, extra=dict(info),
    )
    if labels is not None and _is_classifier(outputs):
        art.extra["accuracy"] = float(np.mean(outputs[0].argmax(1) == labels))
    art.extra.update(outs.figures(reference, outputs))
    return art, outputs, run


def _meta_info(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("quantizer", "scheme", "io_precision", "layout", "converter", "calibration_samples")
    return {k: info[k] for k in keep if k in info}


# -- the public entry point ----------------------------------------------------

def resolve(profile, fmt: str | None, precision: str | None) -> tuple[str, str]:
    """Format and precision for ``profile``: defaults from it, refusals by it."""
    fmt = fmt or profile.export_format
    precision = precision or profile.export_precision
    exp = profile.data.get("export", {})
    if precision == "int8" and exp.get("refuse_int8"):
        raise ExportError(f"{profile.name}: INT8 refused: {exp['refuse_int8']}")
    if precision not in profile.precisions:
        raise ExportError(
            f"{profile.name} runs {', '.join(profile.precisions)}, not {precision}; "
            f"choose --precision {profile.export_precision} (its default)"
        )
    runs = [r for r in profile.runtimes if r in FORMAT_RUNTIMES.get(fmt, ())]
    if fmt in FORMAT_RUNTIMES and not runs:
        raise ExportError(f"{profile.name} runs {', '.join(profile.runtimes)}, which load no {fmt} file; "
                          f"use --format {profile.export_format}")
    if exp.get("compiler") == "edgetpu_compiler" and (fmt, precision) != ("tflite", "int8"):
        raise ExportError(f"{profile.name}: the Edge TPU runs only full-INT8 TFLite; use --format tflite --precision int8")
    format_spec(fmt, precision)  # an unknown pair names the known ones
    return fmt, precision


def export(
    model: Any,
    *,
    profile,
    output_dir: str | Path,
    options: ExportOptions = ExportOptions(),
    split: Any = None,
    log_file: str | Path | None = None,
) -> ExportReport:
    """Export ``model`` (a :class:`~edgeprune.models.LoadedModel`) for ``profile`` into ``output_dir``.

    ``split`` (a :class:`~edgeprune.data.DataSplit`, loaded once by the
    caller) calibrates on its train split and measures accuracy on its
    held-out split (up to ``options.accuracy_count`` images) for the
    original, the model and every artifact (``report.accuracy``). The
    original is the model's own ``reference`` (for a pruned model, its
    unpruned original with the user's weights). ``options.max_accuracy_drop``
    (points) fails the export when the file to ship is further below the
    original (:class:`~edgeprune.checks.accuracy.AccuracyDropError`, exit 2).

    Raises :class:`AgreementError` (with the report) when an artifact falls
    below the agreement thresholds (over all outputs, for each output, and
    for a detector's detections), :class:`ExportError` when a step fails.
    The report says which input shape was used and where it came from.
    Everything is written into a staging folder and swapped into
    ``output_dir`` when complete (:func:`edgeprune._paths.staged_output`): a
    failed or interrupted export leaves the earlier one untouched. A report
    that fails the agreement checks is a complete result (``passed: false``)
    and is kept. ``log_file``: a log copied into the result as ``export.log``
    (the CLI sends the converters' own output there).

    Example::

        lm = load_model("digits-cnn")
        export(lm, profile=load_profile("coral-usb"), output_dir="out/").final.agreement
    """
    if not hasattr(model, "module") or not hasattr(model, "input_shape"):
        raise ModelError("export() takes a LoadedModel (edgeprune.load.load_model); the API's export_model "
                         "takes a --model spec")
    fmt, precision = resolve(profile, options.fmt, options.precision)  # refusals come before anything is written

    failed: AgreementError | AccuracyDropError | None = None
    with staged_output(output_dir) as stage:
        try:
            return _export_into(stage, Path(output_dir).expanduser(), model, profile=profile, fmt=fmt,
                                precision=precision, options=options, split=split)
        except (AgreementError, AccuracyDropError) as exc:  # its report (passed: false) is written: keep it
            failed = exc
        finally:
            if log_file is not None and Path(log_file).is_file():
                sys.stdout.flush()
                shutil.copyfile(log_file, stage / "export.log")
    raise failed


def _export_into(out_dir: Path, final: Path, loaded: Any, *, profile, fmt: str, precision: str,
                 options: ExportOptions, split: Any) -> ExportReport:
    """The work of :func:`export`, writing into ``out_dir`` (staging) and recording paths in ``final``."""
    o = options
    t_start = time.perf_counter()
    loaded = for_shipping(loaded, fmt=fmt, precision=precision)  # a detector's head as its file holds it
    input_shape = tuple(int(d) for d in loaded.input_shape)
    if input_shape[0] != 1:
        raise ExportError(f"{loaded.name}: boards run batch 1; the model's input is {input_shape}")
    stem = o.name or re.sub(r"[/\x00-\x1f\x7f-\x9f]", "_", str(loaded.name))  # a name from a file: a plain file name
    report = ExportReport(target=profile.name, model=str(loaded.name), format=fmt, precision=precision,
                          output_dir=final)
    steps = chain(fmt, precision)
    report.input_shape = list(input_shape)
    report.input_shape_source = getattr(loaded, "input_shape_source", "") or "the model"
    report.warnings += [n.removeprefix("warning: ") for n in getattr(loaded, "notes", []) if n.startswith("warning:")]

    # Samples: calibration (for INT8) and held-out verification, never the same inputs.
    task = getattr(loaded, "task", "classify")
    norm = getattr(loaded, "normalize", None) or default_normalize(input_shape, task)
    step("preparing calibration and held-out check inputs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if split is not None:
            cal, ver = calib_mod.samples_from_split(split, count=o.calib_count, verify_count=o.verify_count,
                                                    accuracy_count=o.accuracy_count)
            if o.calib is not None:
                cal, _ = calib_mod.load_calibration(o.calib, input_shape=input_shape, count=o.calib_count,
                                                    normalize=norm)
        elif o.calib is not None:
            cal, ver = calib_mod.load_calibration(o.calib, input_shape=input_shape, count=o.calib_count,
                                                  normalize=norm)
            if ver is None:
                _, ver = calib_mod.model_samples(loaded, count=1, verify_count=o.verify_count, normalize=norm)
        else:
            cal, ver = calib_mod.model_samples(loaded, count=o.calib_count, verify_count=o.verify_count,
                                               normalize=norm, accuracy_count=o.accuracy_count)
    report.warnings += [str(w.message) for w in caught]
    if any(s.needs_calibration for s in steps):
        report.calibration = {"source": cal.source, "samples": len(cal), "normalize": norm}
    report.verification = {"source": ver.source, "samples": len(ver)}
    if split is not None:
        report.verification["data"] = split.to_dict()

    whole = _torch_outputs(loaded.module, ver.data)
    layout = output_layout(loaded.module, input_shape, task=task)
    split_outputs = (o.detector_outputs == "split" and any(s.precision == "int8" for s in steps)
                     and is_split(layout) and needs_own_scales(layout, whole))
    outs = OutputCheck(layout, [(1, *r.shape[1:]) for r in whole], split_outputs, input_shape)
    reference = pieces(whole, layout)  # every piece (a detector's boxes, scores) is verified on its own
    report.outputs = describe(layout)
    report.verification["outputs_split"] = split_outputs
    if ver.labels is not None and _is_classifier(reference):
        report.verification["accuracy_pytorch"] = float(np.mean(reference[0].argmax(1) == ver.labels))
    report.pruning, original_out = _pruning_check(loaded, ver.data, whole)
    if task == "detect" and split is not None:
        acc_check = _detect_accuracy(loaded, split, layout, o.max_accuracy_drop)
    else:
        acc_check = _accuracy_check(loaded, ver, reference, original_out, o.max_accuracy_drop)
    report.accuracy = acc_check.figures if acc_check else None
    if acc_check is not None and ver.labels is not None:
        order = label_order_warning(acc_check.baseline, reference[0].shape[1], ver.source)
        if order:
            report.warnings.append(order)
    pruned_ag = (report.pruning or {}).get("agreement")
    lost = _model_lost_accuracy(report.accuracy, (report.pruning or {}).get("base"))
    if lost:
        report.warnings.append(lost)
    elif not report.accuracy and pruned_ag and (pruned_ag["top1"] < PRUNED_WARN_TOP1
                                                 or pruned_ag["cosine"] < PRUNED_WARN_COSINE):
        # Not a failure (pruning changes outputs on purpose), but never silent.
        report.warnings.append(
            f"the pruned model agrees with its unpruned base '{report.pruning['base']}' on "
            f"{pruned_ag['top1']:.0%} of top-1 (cosine {pruned_ag['cosine']:.3f}): it lost accuracy "
            "in pruning; fine-tune it before shipping"
        )

    meta = {
        "source": str(getattr(loaded, "source", loaded.name)),
        "model": str(loaded.name),
        "source_sha256": model_sha256(loaded.module),
        "plan": _plan_dict(getattr(loaded, "plan", None)),
        "profile": profile.name,
        "input_shape": list(input_shape),
        "edgeprune_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    exp = profile.data.get("export", {})
    options: dict[str, Any] = {
        "io_precision": o.io_precision or exp.get("io_precision") or "int8",
        "scheme": "tensorrt" if profile.runtime == "tensorrt" else "cpu",
        "quantizer": o.quantizer,
    }
    options["float_tail"] = task == "detect" and o.detector_outputs == "split"  # ONNX INT8: the decode stays float
    if split_outputs:
        options["output_layout"], options["output_shapes"] = layout, outs.artifact_shapes()
        report.notes.append(
            "boxes and class scores are separate outputs (output0, output1, ...; see 'outputs') so that each "
            "keeps its own INT8 scale; concatenate them on the board if its post-processing wants one tensor")
    classifier = _is_classifier(reference)
    # top-1 is gated for classifiers only; for other outputs it is the share of samples at cosine >= 0.99
    report.verification["classifier"] = classifier
    previous: list[np.ndarray] | None = None
    with tempfile.TemporaryDirectory(prefix="edgeprune-export-") as work:
        options["workdir"] = Path(work)
        source: Any = loaded.module
        for i, spec in enumerate(steps):
            dest = out_dir / f"{stem}{spec.suffix}"
            req = ConvertRequest(spec=spec, source=source, dest=dest, input_shape=input_shape,
                                 calib=cal.data if (spec.needs_calibration or spec.format == "tflite") else None,
                                 options=options)
            art, outputs, run = _step(spec, req, meta=meta, verify_x=ver.data, reference=reference,
                                 previous=previous, labels=ver.labels, outs=outs)
            art.final = i == len(steps) - 1
            report.artifacts.append(art)
            if spec.format == "tflite" and spec.precision == "int8":
                _check_full_int8(art, options["io_precision"])
            if isinstance(acc_check, DetectAccuracy):  # mAP on the held-out images, run through this file
                art.extra["accuracy_vs_original"] = acc_check.add(
                    art.step, lambda x, run=run: outs.pieces(run(x.numpy())))
            elif acc_check is not None:
                art.extra["accuracy_vs_original"] = acc_check.add(art.step, outputs[0])
            bad = _thresholds(spec, o.min_agreement).failures(
                art.agreement, classifier=classifier, outputs=art.extra.get("outputs"),
                detection=art.extra.get("detection"))
            if bad:
                report.passed = False
                report.seconds = time.perf_counter() - t_start
                err = AgreementError(f"{final / dest.name}: {', '.join(bad)} against the original PyTorch "
                                     f"model ({art.step}, {ver.source}, {len(ver)} samples); "
                                     f"{_relax_hint(art.agreement, classifier, spec.precision)}", report)
                report.failure = str(err)
                _write_report(report, out_dir)
                raise err
            if spec.source is None or spec.key == ("onnx", "fp32"):
                source = dest
            previous = outputs
    if exp.get("compiler") == "edgetpu_compiler":
        step("compiling for the Edge TPU")
        _edgetpu(report, out_dir)
    report.seconds = time.perf_counter() - t_start
    # the last file measured here (an Edge TPU binary is not run here: its int8 input model is)
    measured = next((a for a in reversed(report.artifacts) if a.agreement), None)
    gate = (acc_check.gate(measured.step, str(final / Path(measured.path).name))
            if acc_check and measured else None)
    if gate:
        report.passed = False
        report.failure = gate
        _write_report(report, out_dir)
        raise AccuracyDropError(gate, report)
    _write_report(report, out_dir)
    return report


def _relax_hint(agreement: dict[str, float], classifier: bool, precision: str) -> str:
    """How to accept what was measured: the --min-agreement that this artifact would pass."""
    cos = math.floor(agreement["cosine"] * 1e4) / 1e4
    want = f"top1={math.floor(agreement['top1'] * 100) / 100:g},cosine={cos:g}" if classifier else f"cosine={cos:g}"
    calib = "; or calibrate with inputs like the model's own (--calib)" if precision == "int8" else ""
    return (f"if that loss is acceptable, relax the check with --min-agreement {want} "
            f"(min_agreement= in Python){calib}")


def _check_full_int8(art: Artifact, io_precision: str) -> None:
    rep = tensor_report(art.path)
    allow_io = io_precision == "float32"
    bad = [t["name"] for t in rep["float_tensors"] if not (allow_io and t["io"])]
    art.extra["tensors"] = {k: rep[k] for k in ("dtypes", "input_dtypes", "output_dtypes", "ops")}
    art.extra["float_tensors"] = len(rep["float_tensors"])
    if bad:
        raise ExportError(f"{art.path}: not full INT8: float tensors {', '.join(bad[:5])}"
                          f"{' ...' if len(bad) > 5 else ''} (I/O may be {io_precision} only)")


def _edgetpu(report: ExportReport, out_dir: Path) -> None:
    final = report.final
    result = compile_edgetpu(final.path, out_dir)
    if result is None:
        report.notes.append(INSTALL_HINT)
        final.extra["edgetpu"] = {"compiled": False, "reason": "edgetpu_compiler not installed"}
        return
    path = Path(result.pop("path"))
    final.final = False
    report.artifacts.append(Artifact(
        path=path, format="tflite", precision="int8", sha256=sha256_file(path), size_bytes=path.stat().st_size,
        agreement=None, step="edgetpu compile", final=True, metadata=final.metadata, extra={"edgetpu": result},
        notes=["compiled for the Edge TPU: runs only with libedgetpu on a Coral device, so it is not verified "
               "here; its int8 input model is verified above"],
    ))


# Below these, a pruned model's agreement with its unpruned base is flagged loudly.
PRUNED_WARN_TOP1 = 0.9
PRUNED_WARN_COSINE = 0.95


def _pruning_check(loaded: Any, x: np.ndarray, reference: list[np.ndarray]
                   ) -> tuple[dict[str, Any] | None, list[np.ndarray] | None]:
    """Pruned vs its unpruned original (information only: pruning changes outputs on purpose).

    The original is the one the model carries (``loaded.original``: the
    unpruned model with the user's weights, or a built-in base's trained
    weights); its outputs are also returned, as the reference accuracy is
    measured against. Without a known original: None, and the report says so.
    """
    if getattr(loaded, "plan", None) is None:
        return None, None

    original = getattr(loaded, "original", None)
    base_name = str(loaded.base)
    if original is None:
        return {"base": base_name, "base_weights": None,
                "note": "the unpruned original with trained weights is not known here (its weights file is not "
                        "recorded, or has changed): accuracy is not compared with it"}, None
    base_out = _torch_outputs(same_form(original.module, loaded.module), x)
    return ({"base": base_name, "base_weights": original.weights,
             "agreement": _round(agreement(base_out, reference))}, base_out)


def _detect_accuracy(loaded: Any, split: Any, layout, max_drop) -> DetectAccuracy:
    """mAP50-95 (or agreement) of the original, the model and every file, on the held-out images."""
    import torch

    def torch_run(module):
        def run(x):
            with torch.no_grad():
                return pieces(flatten_numpy(module.eval()(x)), layout)
        return run

    original = getattr(loaded, "original", None) if getattr(loaded, "plan", None) is not None else None
    return DetectAccuracy(held=split.heldout, layout=layout, max_drop=max_drop,
                          original=torch_run(same_form(original.module, loaded.module)) if original else None,
                          model=torch_run(loaded.module), num_classes=detector_classes(loaded.module),
                          pruned=getattr(loaded, "plan", None) is not None)


def _accuracy_check(loaded: Any, ver: SampleSet, reference: list[np.ndarray], original_out, max_drop):
    """An AccuracyCheck for a classifier (None for other outputs: their agreement is what is checked)."""
    if not _is_classifier(reference):
        return None
    pruned = getattr(loaded, "plan", None) is not None
    original = original_out[0] if original_out is not None else (None if pruned else reference[0])
    return AccuracyCheck(labels=ver.labels, original=original, model=reference[0], heldout=ver.source,
                         max_drop=max_drop, pruned=pruned)


def _model_lost_accuracy(acc: dict[str, Any] | None, base: str | None) -> str | None:
    """The warning for a pruned model below its original on labelled data (before any conversion)."""
    if not acc or acc.get("metric") not in ("top1", "map50_95") or acc.get("model") is None \
            or acc.get("original") is None:
        return None
    drop = (acc["original"] - acc["model"]) * 100
    if drop <= LOST_POINTS:
        return None
    name = acc.get("metric_name") or "top-1"
    return (f"the pruned model's {name} is {acc['model']:.4f} vs {acc['original']:.4f} for its unpruned original {base} "
            f"({drop:.2f} points lost) on {acc['samples']} held-out images: fine-tune it before shipping "
            "(edgeprune finetune)")


def _write_report(report: ExportReport, stage: Path) -> None:
    """Write export.json and report.md into ``stage``; every path they record is in the final folder."""
    final = next((a for a in reversed(report.artifacts) if a.agreement), None)
    report.verdict = verdict(passed=report.passed, failure=report.failure, accuracy=report.accuracy,
                             final_step=final.step if final else None,
                             pruning_agreement=(report.pruning or {}).get("agreement"),
                             warn_top1=PRUNED_WARN_TOP1, warn_cosine=PRUNED_WARN_COSINE)

    for art in report.artifacts:
        if Path(art.path).parent == stage:
            art.path = report.output_dir / Path(art.path).name
    text = json.dumps(report.to_dict(), indent=2, default=str)
    _paths.atomic_write_text(stage / "export.json", text + "\n")

    write_export_report(json.loads(text), stage)  # the same plain values as the file


__all__ = ["AgreementError", "ExportReport", "export", "model_sha256", "resolve", "builtin_samples", "SampleSet"]
