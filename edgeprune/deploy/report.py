"""Stage 8: the deploy's report, ``report/deploy.json`` (machines), ``report.html`` (people), ``report.md`` (terminals).

Everything comes from the run manifest (:mod:`edgeprune.deploy.manifest`),
so a resumed run reports the stages it reused exactly as the run that made
them measured them, and a failed run still gets a report saying where it
stopped. The dict's layout is what :func:`edgeprune.deploy.html.render_html`
draws.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edgeprune import __version__
from edgeprune._paths import atomic_write_text
from edgeprune.deploy.html import render_html
from edgeprune.deploy.manifest import STAGES
from edgeprune.deploy.verdict import ms_text, outcome, x_text


def build_report(ctx, *, seconds: float, error: BaseException | None) -> dict[str, Any]:
    m = ctx.manifest
    res = {name: m.stage(name).get("result") or {} for name in STAGES}
    stages = []
    for name in STAGES[:-1]:
        rec = m.stage(name)
        if not rec:
            stages.append({"name": name, "state": "not run"})
            continue
        row = {"name": name, "state": rec.get("state"), "seconds": rec.get("seconds"),
               "board_measurements": rec.get("board_measurements", 0) if name not in ctx.reused else 0,
               "reused": name in ctx.reused}
        if rec.get("note"):
            row["note"] = ("reused: " if name in ctx.reused else "") + rec["note"]
        if rec.get("error"):
            row["error"] = rec["error"]
        stages.append(row)
    measure, prune, ft, exp = res["measure"], res["prune"], res["finetune"], res["export"]
    final, gate, ship = res["measure-final"], res["verify"], res["ship"]
    lat = prune.get("latency") or {}
    rounds = [{"round": r.get("round"), "predicted_ms": r.get("predicted_ms"), "measured_ms": r.get("measured_ms"),
               "budget_ms": r.get("budget_ms", lat.get("budget_ms")), "verdict": r.get("verdict", "")}
              for r in lat.get("rounds") or []]
    # One unpruned figure, and which measurement it is: the final check's (unpruned and shipped in the same
    # batch), else the closed loop's (the one its budget was computed from), else the measure stage's.
    unpruned, unpruned_from = next(
        ((v, w) for v, w in ((final.get("unpruned_same_batch_ms"), "measured with the shipped file, same batch"),
                             (lat.get("unpruned_ms"), "the closed loop's, from which the budget was computed"),
                             (measure.get("p50_ms"), "the measure stage's")) if v is not None), (None, None))
    latency = {"unpruned_ms": unpruned, "unpruned_from": unpruned_from, "budget_ms": lat.get("budget_ms"),
               "final_ms": final.get("p50_ms"), "speedup": final.get("speedup"), "rounds": rounds,
               "loop_unpruned_ms": lat.get("unpruned_ms"), "status": lat.get("status"),
               "budget_from": lat.get("budget_from")}
    if not rounds:
        latency["note"] = (f"pruned with --ratio {ctx.opts.ratio}: no latency budget, no closed loop"
                           if ctx.opts.ratio is not None else "the closed loop did not run")
    forced = [r for r in ((gate or {}).get("reason") if (gate or {}).get("forced") else None,
                          prune.get("forced_budget")) if r]
    report = {
        # shipped, and everything it was asked to meet was met: never true over a check passed with --force
        "ok": error is None and bool(ship.get("id")) and not forced,
        "shipped": bool(ship.get("id")),
        "forced": forced,
        "edgeprune_version": __version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(m.data.get("command") or []) or None,
        "target": ctx.target,
        "output": str(ctx.root),
        "model": {"name": ctx.opts.model, "weights": ctx.opts.weights},
        "run": {"runs": m.data.get("runs"), "reused": list(ctx.reused), "seconds": round(seconds, 2),
                "board_measurements": sum(s.get("board_measurements") or 0 for s in stages)},
        "stages": stages,
        "latency": latency,
        "accuracy": _accuracy_rows(measure, prune, ft, exp),
        "size": _size_rows(measure, prune, exp),
        "channels": prune.get("channels") or [],
        "protected": prune.get("protected") or [],
        "board": final.get("board") or measure.get("board") or {},
        "gate": gate or None,
        "release": ship or None,
        "warnings": list(exp.get("warnings") or []),
    }
    if final.get("within_budget") is False:
        report["warnings"].append(
            f"the shipped artifact measured {final.get('p50_ms'):.4g} ms, over the budget of "
            f"{final.get('budget_ms'):.4g} ms by more than 10 % in the final measurement")
    if prune.get("forced_budget"):
        report["warnings"].append(f"deployed with --force although the latency budget was not met: "
                                  f"{prune['forced_budget']}")
    if error is not None:
        report["error"] = {"kind": getattr(error, "kind", "interrupted" if isinstance(error, KeyboardInterrupt)
                                           else "error"), "message": str(error) or type(error).__name__}
    return report


def _accuracy_rows(measure, prune, ft, exp) -> list[dict[str, Any]]:
    acc = exp.get("accuracy") or {}
    metric = acc.get("metric") or measure.get("metric") or ft.get("metric") or "top1"
    original = acc.get("original") if acc.get("original") is not None else measure.get("original_accuracy")
    where = f"{acc.get('samples') or measure.get('samples')} held-out: {acc.get('heldout') or measure.get('heldout')}"
    rows = []

    def add(stage: str, value: Any, split: str = where, base: float | None = original) -> None:
        """A row; its points against the original measured on the same images (``base``)."""
        if isinstance(value, (int, float)):
            rows.append({"stage": stage, "metric": metric, "value": round(float(value), 4), "split": split,
                         "delta_points": (round((value - base) * 100, 2) if base is not None else None)})

    add("original (PyTorch)", original)
    add(f"unpruned, {measure.get('step', 'exported')}", measure.get("accuracy"))
    fta = ft.get("accuracy") or {}
    ft_where = f"{(ft.get('heldout') or {}).get('samples')} held-out: {(ft.get('heldout') or {}).get('split')} split"
    if fta:  # fine-tuning measured its own original on its own held-out images: its rows count from that
        ft_base = fta.get("original") if fta.get("original") is not None else original
        if fta.get("original") is not None and fta.get("original") != original:
            add("original (PyTorch), on fine-tuning's held-out images", fta.get("original"), ft_where, ft_base)
        add("pruned (PyTorch)", fta.get("pruned"), ft_where, ft_base)
        add("BatchNorm recalibrated", fta.get("bn_recalibrated"), ft_where, ft_base)
        add("fine-tuned (PyTorch)", fta.get("finetuned"), ft_where, ft_base)
    else:
        add("pruned (PyTorch)", prune.get("accuracy_after"), prune.get("accuracy_note") or where)
    add(f"shipped, {exp.get('step', 'exported')}", exp.get("final_accuracy"))
    return rows


def _size_rows(measure, prune, exp) -> list[dict[str, Any]]:
    rows = []
    if measure:
        rows.append({"stage": "unpruned", "file": measure.get("file"), "bytes": measure.get("bytes"),
                     "params": prune.get("params_before"), "macs": prune.get("macs_before")})
    if prune:
        rows.append({"stage": "pruned", "file": "model.ept", "bytes": None,
                     "params": prune.get("params_after"), "macs": prune.get("macs_after")})
    if exp:
        rows.append({"stage": "shipped", "file": exp.get("file"), "bytes": exp.get("bytes"),
                     "params": prune.get("params_after"), "macs": prune.get("macs_after")})
    return rows


def markdown(rep: dict[str, Any]) -> str:
    """The report for terminals: the verdict first, then the figures."""
    lines = [f"# edgeprune deploy: {rep['model']['name']} to {rep['target']}", ""]
    lines += [f"**{headline(rep)}**", ""]
    lat = rep.get("latency") or {}
    lines += ["## Latency on the board (p50, measured)", "",
              f"- unpruned: {ms_text(lat.get('unpruned_ms'))}"
              + (f" ({lat['unpruned_from']})" if lat.get("unpruned_from") else "")
              + f"; budget: {ms_text(lat.get('budget_ms'))}"
              + (f" ({lat['budget_from']})" if lat.get("budget_from") else "") + "; "
              f"shipped: {ms_text(lat.get('final_ms'))}; speedup: {x_text(lat.get('speedup'))}"]
    if lat.get("rounds"):
        lines += ["", "| round | predicted ms | measured ms | budget ms |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['round']} | {_n(r.get('predicted_ms'))} | {_n(r.get('measured_ms'))} | "
                  f"{_n(r.get('budget_ms'))} |" for r in lat["rounds"]]
    if rep.get("accuracy"):
        metric = rep["accuracy"][0].get("metric")
        name, fmt = ("mAP50-95", ".4f") if metric == "map50_95" else (metric or "value", ".2%")
        lines += ["", "## Accuracy per stage", "", f"| stage | {name} | vs original | data |", "|---|---:|---:|---|"]
        lines += [f"| {r['stage']} | {format(r['value'], fmt)} | "
                  f"{'-' if r.get('delta_points') is None else format(r['delta_points'], '+.2f') + ' pts'} | "
                  f"{r.get('split', '')} |" for r in rep["accuracy"]]
    if rep.get("size"):
        lines += ["", "## Size per stage", "", "| stage | file | bytes | params | MACs |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['stage']} | {r.get('file') or '-'} | {_int(r.get('bytes'))} | {_int(r.get('params'))} | "
                  f"{_int(r.get('macs'))} |" for r in rep["size"]]
    if rep.get("channels"):
        lines += ["", "## Channels kept per group", "", "| group | kept / original |", "|---|---:|"]
        lines += [f"| {c['group']} | {c['keep']} / {c['channels']} |" for c in rep["channels"]]
    rel = rep.get("release") or {}
    if rel.get("id"):
        lines += ["", "## Release", "", f"- id `{rel['id']}` at `{rel.get('path')}` (sha256 `{rel.get('sha256')}`)",
                  f"- previous: {rel.get('previous') or 'none'}; on-board check inputs: {rel.get('check_inputs')}"]
    lines += ["", "## Stages", "", "| stage | state | seconds | board measurements | note |", "|---|---|---:|---:|---|"]
    for s in rep.get("stages", []):
        text = (s.get("note") or s.get("error") or "").replace("|", "/")
        lines.append(f"| {s['name']} | {s['state']} | {_n(s.get('seconds'))} | {s.get('board_measurements', '-')} | "
                     f"{text} |")
    if rep.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in rep["warnings"]]
    return "\n".join(lines) + "\n"


def headline(rep: dict[str, Any]) -> str:
    """One line: shipped or not, and why (:func:`outcome`)."""
    return outcome(rep)["text"]


def write_report(ctx, *, seconds: float, error: BaseException | None) -> dict[str, Any]:
    """Build the report and write the three files into ``root/report/`` (atomically, each)."""
    t0 = time.perf_counter()
    rep = build_report(ctx, seconds=seconds, error=error)
    folder = ctx.root / "report"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "deploy.json", json.dumps(rep, indent=2, default=str) + "\n")
    atomic_write_text(folder / "report.html", render_html(rep))
    atomic_write_text(folder / "report.md", markdown(rep))
    rep["files"] = {k: str(folder / f) for k, f in (("json", "deploy.json"), ("html", "report.html"),
                                                   ("markdown", "report.md"))}
    ctx.manifest.finish("report", state="done", root=ctx.root,
                        outputs={k: Path(v) for k, v in rep["files"].items()},
                        seconds=time.perf_counter() - t0, note=headline(rep))
    return rep


def _n(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "-"


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"
