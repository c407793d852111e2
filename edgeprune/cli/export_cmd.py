"""``edgeprune export`` and ``edgeprune quantize``: thin click wrappers over edgeprune.export.pipeline.

Only click is imported at module level; the pipeline (torch, onnx, and
tensorflow for TFLite) is imported when a command runs.

Exit codes: 0 ok; 1 an error (one line ``error: ...``); 2 an artifact
agrees with the original model less than ``--min-agreement``, or the file to
ship is more than ``--max-accuracy-drop`` points below the original (the
line names the file, the figure and the option to relax; with ``--json`` the
full report is printed on stdout beside ``"ok": false`` and the error).
"""

from __future__ import annotations

import os

import click

from edgeprune._paths import output_dir
from edgeprune.api import export_model
from edgeprune.boards.reach import resolve_target
from edgeprune.cli._common import (
    Number,
    converters_to_log,
    emit,
    json_option,
    model_options,
    normalize_option,
    target_option,
)
from edgeprune.cli.prune_cmd import _shape
from edgeprune.errors import ExportError
from edgeprune.validate import RANGES

# Lazy imports: the imports inside functions below load numpy, rich, which importing this module does not;
# they load only when a function that needs them runs.


def _parse_min_agreement(value: str | None):
    """'0.9' (top-1) or 'top1=0.9,cosine=0.98' -> Thresholds / float / None."""
    if value is None:
        return None
    if "=" not in value:
        try:
            v = float(value)
        except ValueError:
            raise click.BadParameter(f"'{value}': expected a number like 0.9 or top1=0.9,cosine=0.98") from None
        if not RANGES["min_agreement"].fits(v):
            raise click.BadParameter(f"'{value}': agreement is a fraction between 0 and 1")
        return v
    from edgeprune.checks.thresholds import Thresholds

    parts = dict(p.split("=", 1) for p in value.split(",") if p)
    keys = ("top1", "cosine", "recall", "score_corr")
    unknown = set(parts) - set(keys)
    if unknown:
        raise click.BadParameter(f"unknown key(s) {', '.join(sorted(unknown))}: use {'=, '.join(keys)}=")
    try:
        values = {k: float(parts.get(k, 0.0)) for k in keys}
    except ValueError:
        raise click.BadParameter(f"'{value}': values must be numbers") from None
    bad = [k for k, v in values.items() if not RANGES["min_agreement"].fits(v)]
    if bad:
        raise click.BadParameter(f"'{value}': {', '.join(bad)} must be a fraction between 0 and 1")
    return Thresholds(**values)


def _human(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    table = Table(title=f"{report['model']} for {report['target']}: {report['format']} {report['precision']}")
    for col in ("file", "step", "size", "top-1", "cosine", "max |err|", "time"):
        table.add_column(col, justify="left" if col in ("file", "step") else "right")
    classifier = report["verification"].get("classifier", True)  # top-1 means something for classifiers only
    for a in report["artifacts"]:
        ag = a["agreement"] or {}
        table.add_row(
            os.path.basename(a["path"]) + (" *" if a["final"] else ""), a["step"],
            f"{a['size_bytes'] / 1e6:.2f} MB",
            f"{ag['top1']:.3f}" if ag and classifier else "n/a" if ag else "-", f"{ag['cosine']:.5f}" if ag else "-",
            f"{ag['max_abs']:.3g}" if ag else "-", f"{a['seconds']:.1f} s",
        )
    con.print(table)
    final = next((a for a in report["artifacts"] if a["final"]), None)
    rows = (final or {}).get("extra", {}).get("outputs") or []
    for r in rows if len(rows) > 1 else []:  # each output on its own: a broken small one cannot hide
        con.print(f"  {r['name']}: cosine {r['cosine']:.4f}, max |err| {r['max_abs']:.3g} "
                  f"(values {r['range'][0]:.3g} to {r['range'][1]:.3g})")
    det = (final or {}).get("extra", {}).get("detection")
    if det:
        con.print(f"  detections: {det['recall']:.0%} of the float model's {det['detections']} confident ones found "
                  f"(IoU {det['iou']}), score correlation {det['score_corr']:.3f}")
    if report.get("input_shape"):
        con.print(f"input {'x'.join(map(str, report['input_shape']))} (from {report['input_shape_source']})")
    ver = report["verification"]
    con.print(f"agreement vs the original PyTorch model on {ver['samples']} held-out inputs ({ver['source']})"
              + (f"; PyTorch accuracy {ver['accuracy_pytorch']:.3f}" if "accuracy_pytorch" in ver else ""))
    pruning = report.get("pruning") or {}
    if pruning.get("agreement"):
        pa = pruning["agreement"]
        con.print(f"pruned vs its unpruned base ({pruning['base']}, {pruning['base_weights']} weights): "
                  f"top-1 {pa['top1']:.3f}, cosine {pa['cosine']:.4f}")
    if report.get("calibration"):
        cal = report["calibration"]
        con.print(f"calibration: {cal['samples']} samples from {cal['source']}")
    acc = report.get("accuracy") or {}
    if acc:
        name = "top-1" if acc["metric"] == "top1" else "agreement with the original"
        rows = [("original", acc.get("original")), ("model (PyTorch)", acc.get("model")),
                *acc.get("artifacts", {}).items()]
        con.print(f"{name} on {acc['samples']} held-out images ({acc['heldout']}): "
                  + ", ".join(f"{k} {v:.4f}" for k, v in rows if v is not None))
    for w in report["warnings"]:
        con.print(f"[yellow]warning:[/] {w}")
    for n in report["notes"]:
        con.print(f"note: {n}")
    verdict = report.get("verdict") or {}
    status = verdict.get("status", "passed")
    style = {"passed": "green", "failed": "red"}.get(status, "yellow")
    label = {"passed": "passed", "failed": "FAILED"}.get(status, "NOT PASSED")
    con.print(f"[bold {style}]{label}[/]" + (f": {verdict['reason']}" if verdict.get("reason") else ""))
    con.print(f"* = the file to ship; report: {os.path.join(report['output_dir'], 'report.md')} "
              f"(JSON: {os.path.join(report['output_dir'], 'export.json')})")


def _run(*, as_json: bool, **kwargs) -> None:
    from edgeprune.checks.accuracy import AccuracyDropError
    from edgeprune.export.pipeline import AgreementError, resolve

    # refusals (jetson-nano INT8, a precision the board lacks) come before anything is written
    resolve(resolve_target(kwargs["target"], board=False).profile, kwargs["fmt"], kwargs["precision"])
    output_dir(kwargs["output"], create=False)  # refuse a bad --output before any work
    # The converters' output goes to a log outside the result; a finished export carries a copy
    # as export.log, a failed one leaves it here and the error names it.
    log = None
    try:
        with converters_to_log("export") as log:
            report = export_model(**kwargs, log_file=log)
    except AgreementError:  # --json: the CLI prints the report with the error (AgreementError.json_result)
        os.unlink(log)
        raise
    except AccuracyDropError:  # likewise (its json_result is the report)
        os.unlink(log)
        raise
    except ExportError as exc:  # a converter failed: its own output is in the log
        exc.args = (f"{exc} (converter output: {log})",)
        raise
    except BaseException:
        if log:
            os.unlink(log)
        raise
    os.unlink(log)
    emit(report.to_dict(), as_json=as_json, human=_human)


_common_options = [
    model_options,
    click.option("--input-shape", default=None, callback=_shape, metavar="N,C,H,W",
                 help="Input shape (batch 1), e.g. 1,3,640,640 for a detector built for 640; default: the model's "
                      "own (built-ins, pruned models, a factory model's input_shape attribute), else 1,3,224,224 "
                      "with a warning. The output says which was used."),
    click.option("--calib", default=None, metavar="DATA",
                 help="Calibration data: a folder of images, a .npy array (NCHW or NHWC), or pkg.mod:fn. "
                      "Default: --data's train split, else the model's own data set, else built-in sample photos."),
    click.option("--data", default=None, metavar="D",
                 help="Data for calibration (train split) and accuracy (held-out split, every artifact): class "
                      "folders, a folder of images, .npy/.npz, pkg.mod:fn, or fashion-mnist / digits."),
    click.option("--val-data", default=None, metavar="D", help="Held-out data (default: a seeded split of --data)."),
    click.option("--max-accuracy-drop", type=Number("max_accuracy_drop"), default=None, metavar="P",
                 help="Fail (exit 2) when the file to ship is more than P points below the original's "
                      "top-1 (agreement with the original on unlabelled data)."),
    click.option("--calib-count", type=Number("calib_count"), default=128, show_default=True, help="Calibration samples to use."),
    normalize_option,
    click.option("--io-precision", type=click.Choice(["int8", "uint8", "float32"]), default=None,
                 help="A full-INT8 TFLite file's input/output type (default: the profile's); "
                      "--target local --io-precision int8 gives exactly the file a Raspberry Pi runs."),
    click.option("--min-agreement", default=None, metavar="X", callback=lambda ctx, param, v: _parse_min_agreement(v),
                 help="Fail (exit 2) below this top-1 agreement with the original model, e.g. 0.95, "
                      "or 'top1=0.95,cosine=0.99' (cosine: all outputs and each one; detectors also recall=, "
                      "score_corr=). Default per precision: fp32 0.99/0.9999, fp16 0.97/0.999, int8 0.60/0.93; "
                      "detections: recall 0.98/0.95/0.5, score correlation 0.999/0.99/0.8."),
    click.option("--quantizer", type=click.Choice(["ort", "nncf"]), default=None,
                 help="ONNX INT8 quantizer (default: nncf for TensorRT boards, ort for ONNX Runtime; see benchmarks/RESULTS.md)."),
    click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False), help="Output folder."),
]


def _apply(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


@click.command()
@target_option
@_apply(_common_options[:1])
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default=None,
              help="Output format (default: the profile's).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Precision (default: the profile's).")
@_apply(_common_options[1:])
@json_option
def export(target, model, weights, trust_factory, task, fmt, precision, input_shape, calib, data, val_data,
           max_accuracy_drop, calib_count, normalize, io_precision,
           min_agreement, quantizer, output, as_json) -> None:
    """Export a model to ONNX or TFLite for a board, checking every step against the original.

    \b
    Defaults come from the board's profile, e.g.:
      jetson-nano       ONNX fp16 (INT8 refused: no INT8 hardware)
      jetson-orin-nano  ONNX INT8, Q/DQ with zero-points 0 (for TensorRT)
      raspberry-pi-5    TFLite full INT8
      coral-usb         TFLite full INT8 (uint8 I/O), then edgetpu_compiler if installed
      local             ONNX fp32
    """
    _run(as_json=as_json, model=model, weights=weights, trust_factory=trust_factory, task=task, target=target,
         fmt=fmt,
         precision=precision, calib=calib, data=data, val_data=val_data, max_accuracy_drop=max_accuracy_drop,
         calib_count=calib_count, normalize=normalize, io_precision=io_precision,
         min_agreement=min_agreement, quantizer=quantizer, output=output,
         input_shape=input_shape)


@click.command()
@target_option
@_apply(_common_options[:1])
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default=None,
              help="Output format (default: the profile's).")
@_apply(_common_options[1:])
@json_option
def quantize(target, model, weights, trust_factory, task, fmt, input_shape, calib, data, val_data, max_accuracy_drop,
             calib_count, normalize, io_precision, min_agreement,
             quantizer, output, as_json) -> None:
    """Quantize a model to INT8 for a board (the INT8 step of `export`), with agreement checks.

    Same as `edgeprune export --precision int8`: ONNX Q/DQ (TensorRT- or CPU-style per the
    profile) or full-INT8 TFLite, calibrated with --calib and checked on held-out inputs.
    """
    _run(as_json=as_json, model=model, weights=weights, trust_factory=trust_factory, task=task, target=target,
         fmt=fmt,
         precision="int8", calib=calib, data=data, val_data=val_data, max_accuracy_drop=max_accuracy_drop,
         calib_count=calib_count, normalize=normalize, io_precision=io_precision,
         min_agreement=min_agreement, quantizer=quantizer, output=output,
         input_shape=input_shape)
