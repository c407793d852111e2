"""The export's report for people, written beside the JSON a machine reads (``export.json``).

:func:`write_export_report` turns an export report (the dict that
``export.json`` holds) into ``report.md`` and, when matplotlib is installed
(the ``report`` extra), ``report.png``: artifact size and agreement with the
original, per step. Without matplotlib the Markdown is still written and says
how to get the plot.

The first line a person reads is the headline, and it never says "passed"
over a model that fails against its original: :func:`headline` reads the
report's ``verdict`` (``passed``, ``failed``, or ``lost-accuracy``: every file
matches the model it was made from, but that model lost accuracy against
the unpruned original).

(The fine-tune's report is :mod:`edgeprune.finetune.report`, the deploy's
:mod:`edgeprune.deploy.report`.)

Example::

    write_export_report(report.to_dict(), Path("out/"))   # out/report.md, out/report.png
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_file, atomic_write_text


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _plot(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    arts = report["artifacts"]
    labels = [a["step"] for a in arts]
    sizes = [a["size_bytes"] / 1e6 for a in arts]
    cosine = [(a["agreement"] or {}).get("cosine", float("nan")) for a in arts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.bar(labels, sizes, color="#4c72b0")
    ax1.set_ylabel("size (MB)")
    ax1.set_title("artifact size")
    ax2.bar(labels, cosine, color="#55a868")
    ax2.set_ylim(min(0.9, min(cosine, default=1.0) - 0.01), 1.0005)
    ax2.set_ylabel("cosine vs original")
    ax2.set_title("agreement with the original")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(f"{report['model']} for {report['target']}")
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return True


def _per_output_lines(report: dict[str, Any]) -> list[str]:
    """Each output of the file to ship on its own (a detector's boxes and scores), and its detections."""
    final = next((a for a in report["artifacts"] if a.get("final") and (a.get("extra") or {}).get("outputs")), None)
    if final is None:
        return []
    rows, det = final["extra"]["outputs"], final["extra"].get("detection")
    lines = []
    if len(rows) > 1:
        lines += ["", f"Each output of {Path(final['path']).name} against the original, on its own:", "",
                  "| output | holds | shape | values | cosine | max abs err |", "|---|---|---|---|---:|---:|"]
        lines += [f"| {r['name']} | {r['role']} | {'x'.join(map(str, r['shape']))} "
                  f"| {r['range'][0]:.3g} to {r['range'][1]:.3g} | {r['cosine']:.5f} | {r['max_abs']:.3g} |" for r in rows]
    if det:
        lines += ["", f"Detections: it finds {det['recall']:.1%} of the float model's {det['detections']} confident "
                  f"detections (IoU >= {det['iou']}); score correlation {det['score_corr']:.3f}."]
    if report.get("input_shape"):
        lines += ["", f"Input {'x'.join(map(str, report['input_shape']))}, from {report.get('input_shape_source')}."]
    return lines


def headline(report: dict[str, Any]) -> str:
    """The one-line result: passed only when every check passed *and* the model holds up against its original."""
    verdict = report.get("verdict") or {"status": "passed" if report.get("passed") else "failed"}
    status, reason = verdict.get("status"), verdict.get("reason")
    if status == "passed":
        text = "Result: **passed**: every check, and the model holds up against its original"
    elif status == "lost-accuracy":
        text = "Result: **NOT PASSED**: every conversion check passed, but the model lost accuracy against its original"
    else:
        text = "Result: **FAILED**"
    return text + (f": {reason}." if reason else ".")


def _accuracy_lines(acc: dict[str, Any]) -> list[str]:
    if not acc:
        return []
    name = "top-1 accuracy" if acc.get("metric") == "top1" else "top-1 agreement with the original"
    lines = ["", f"## Accuracy ({name} on {acc.get('samples', '?')} held-out images: {acc.get('heldout', '?')})", "",
             "| model | " + name + " | vs original (points) |", "|---|---:|---:|"]
    orig = acc.get("original")

    def row(label: str, value) -> str:
        drop = "-" if orig is None or value is None else f"{(value - orig) * 100:+.2f}"
        return f"| {label} | {_fmt(value, '.4f')} | {drop} |"

    lines.append(row("original (unpruned)", orig))
    if acc.get("model") is not None:
        lines.append(row("this (pruned) model in PyTorch", acc.get("model")))
    for step, value in (acc.get("artifacts") or {}).items():
        lines.append(row(step, value))
    if acc.get("max_accuracy_drop") is not None:
        lines += ["", f"Gate: at most {acc['max_accuracy_drop']:g} points below the original."]
    for note in acc.get("notes") or []:
        lines += ["", note]
    return lines


def write_export_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``report.md`` (and ``report.png`` where matplotlib is installed); returns the .md path."""
    out_dir = Path(out_dir)
    classifier = report.get("verification", {}).get("classifier", True)
    lines = [
        f"# {report['model']} for {report['target']}: {report['format']} {report['precision']}",
        "",
        headline(report),
        "",
        f"({report.get('seconds', 0):.1f} s, edgeprune {report.get('edgeprune_version', '?')})",
        "",
        "| file | step | size | sha256 | top-1 | cosine | max abs err | mean abs err | time |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for a in report["artifacts"]:
        ag = a.get("agreement") or {}
        top1 = _fmt(ag.get("top1"), ".3f") if classifier else "n/a"
        lines.append(
            f"| {Path(a['path']).name}{' (ship this)' if a.get('final') else ''} | {a['step']} "
            f"| {a['size_bytes'] / 1e6:.2f} MB | `{a['sha256'][:12]}` | {top1} | {_fmt(ag.get('cosine'), '.5f')} "
            f"| {_fmt(ag.get('max_abs'), '.3g')} | {_fmt(ag.get('mean_abs'), '.3g')} | {a.get('seconds', 0):.1f} s |"
        )
    lines += _per_output_lines(report)
    ver = report.get("verification") or {}
    lines += ["", f"Agreement is against the PyTorch model being exported, on {ver.get('samples', '?')} held-out inputs "
              f"({ver.get('source', '?')})" + ("; top-1 does not apply to this model's outputs, cosine is checked."
                                               if not classifier else ".")]
    if "accuracy_pytorch" in ver:
        lines.append(f"PyTorch accuracy on them: {ver['accuracy_pytorch']:.3f}.")
    cal = report.get("calibration") or {}
    if cal:
        lines.append(f"Calibration: {cal.get('samples')} samples from {cal.get('source')}.")
    pruning = report.get("pruning") or {}
    if pruning.get("agreement"):
        pa = pruning["agreement"]
        lines.append(f"Pruned vs its unpruned base `{pruning['base']}`: top-1 {pa['top1']:.3f}, "
                     f"cosine {pa['cosine']:.4f}.")
    lines += _accuracy_lines(report.get("accuracy") or {})
    for title, items in (("Warnings", report.get("warnings")), ("Notes", report.get("notes"))):
        if items:
            lines += ["", f"## {title}", "", *[f"- {w}" for w in items]]
    png = out_dir / "report.png"
    if report["artifacts"] and _plot(report, png):
        lines += ["", "![size and agreement per step](report.png)"]
    else:
        lines += ["", "(Plots need matplotlib: `pip install 'edgeprune[report]'`.)"]
    lines += ["", "Machine-readable: `export.json`."]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
