"""The one rule for a deploy's headline: the terminal, report.md and report.html say the same words."""

from __future__ import annotations

from typing import Any


def ms_text(v: Any) -> str:
    return f"{v:.4g} ms" if isinstance(v, (int, float)) else "-"


def x_text(v: Any) -> str:
    return f"{v:.2f}x" if isinstance(v, (int, float)) else "-"


def outcome(rep: dict[str, Any]) -> dict[str, str]:
    """The one rule for a deploy's headline, on the terminal, in report.md and in report.html.

    ``{"level": ok|warn|fail, "text": one line}``: shipped or not, and why;
    never "passed" over a failure. A stage that failed, was interrupted or is
    still marked running means not shipped; a release shipped with
    ``--force`` past a failed gate or a budget not met says so first.
    """
    gate = rep.get("gate") or {}
    rel = rep.get("release") or {}
    broken = [s for s in rep.get("stages", []) if s.get("state") in ("failed", "interrupted", "running")]
    if broken:
        s = broken[0]
        return {"level": "fail", "text": f"NOT shipped: stage {s['name']} {s['state']}: {s.get('error', '')}"}
    if not rel.get("id"):
        return {"level": "warn", "text": "NOT shipped: the run stopped before the ship stage"}
    lat = rep.get("latency") or {}
    figures = (f"{ms_text(lat.get('final_ms'))} on the board vs {ms_text(lat.get('unpruned_ms'))} unpruned "
               f"({x_text(lat.get('speedup'))})")
    if gate.get("forced"):
        return {"level": "warn", "text": f"Shipped with --force although it failed the accuracy gate: release "
                                         f"{rel['id']} to {rep['target']}: {gate.get('reason')}; {figures}"}
    if rep.get("forced"):
        return {"level": "warn", "text": f"Shipped with --force although the latency budget was not met: release "
                                         f"{rel['id']} to {rep['target']}: {'; '.join(rep['forced'])}; {figures}"}
    return {"level": "ok", "text": f"Shipped release {rel['id']} to {rep['target']}: {gate.get('reason')}; {figures}"}
