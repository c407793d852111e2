"""The fine-tune's report for people, ``report.md`` beside ``finetune.json``: accuracy at every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeprune._paths import atomic_write_text


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def write_finetune_report(report: dict[str, Any], out_dir: Path) -> Path:
    """``report.md`` for a fine-tune: accuracy at every stage, how it trained, where the figures were measured."""
    out_dir = Path(out_dir)
    acc = report["accuracy"]
    metric = "top-1 accuracy" if report["metric"] == "top1" else "top-1 agreement with the original"
    held = report["heldout"]
    drop = report.get("drop_points")
    if not report.get("passed", True):
        head = f"Result: **FAILED**: {drop:.2f} points below the original > --max-accuracy-drop {report['max_accuracy_drop']:g}."
    elif drop is None:
        head = "Result: fine-tuned; no original to compare with (no teacher)."
    else:
        head = f"Result: **{'passed' if report.get('max_accuracy_drop') is not None else 'done'}**: " \
               f"{abs(drop):.2f} points {'below' if drop >= 0 else 'above'} the original."
    lines = [f"# Fine-tuning {Path(report['source']).name} (base `{report['base']}`)", "", head, "",
             f"{metric.capitalize()} on {held['samples']:,} held-out images ({report['data']['source']}, "
             f"{held['split']} split: {held['note']}).", "",
             f"| stage | {metric} |", "|---|---:|"]
    for key, label in (("original", "original (unpruned teacher)"), ("pruned", "pruned, as saved by prune"),
                       ("bn_recalibrated", "after BatchNorm recalibration"), ("finetuned", "fine-tuned (best checkpoint)")):
        lines.append(f"| {label} | {_fmt(acc.get(key), '.4f')} |")
    best = report.get("best") or {}
    rec = report.get("recipe") or {}
    lines += ["", "## Training", "",
              f"- teacher: {report.get('teacher') or 'none (labels only)'}; "
              f"loss: {rec.get('alpha')} x T^2 KL (T = {rec.get('temperature')}) + {1 - rec.get('alpha', 0):.2g} x cross-entropy",
              f"- {rec.get('optimizer')} lr {rec.get('lr')}, weight decay {rec.get('weight_decay')}, batch {rec.get('batch_size')}, "
              f"cosine schedule; augmentation {rec.get('augment')}",
              f"- {report['steps']} steps ({report['epochs']:g} epochs), stopped: {report.get('stopped')}; "
              f"best at epoch {best.get('epoch')} (val {report['metric']} {_fmt(best.get('metric'), '.4f')})",
              f"- {report.get('images_per_s')} images/s on {report.get('device')} ({report.get('threads')} threads)"
              + (f"; resumed from step {report['resumed_from_step']}" if report.get("resumed_from_step") else "")
              + _processes(report),
              "", "Machine-readable: `finetune.json`."]
    for note in report.get("notes") or []:
        lines.insert(3, f"Note: {note}\n")
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _processes(report: dict) -> str:
    d = report.get("distributed") or {}
    if (d.get("world_size") or 1) <= 1:
        return ""
    ranks = ", ".join("-" if v is None else f"{v:g}" for v in d.get("images_per_s_per_rank") or [])
    return (f"; {d['world_size']} processes ({d.get('backend')}), effective batch {d.get('effective_batch')}, "
            f"images/s per rank {ranks}")
