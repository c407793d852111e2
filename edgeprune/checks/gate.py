"""The gate: does the file to ship stay within ``--max-accuracy-drop`` of the original? One decision, one record.

Deploy's ``verify`` stage asks it with the export's figures (the file to
ship and the original, measured on the same held-out data the fine-tuning
never saw). It never says passed when the figures are missing: then the
reason says exactly why the gate cannot be checked.

Example::

    decide(metric="top1", original=0.983, final=0.979, max_drop=1.0, step="onnx fp32",
           heldout="images/val (held out)", samples=350)
    # {'passed': True, 'drop': 0.4, 'reason': 'onnx fp32 top1 0.9790 vs the original's 0.9830 ...', ...}
"""

from __future__ import annotations

from typing import Any

from edgeprune.checks.accuracy import drop_points


def decide(*, metric: str | None, original: float | None, final: float | None, max_drop: float, step: str | None,
           heldout: str | None, samples: int | None, export_failed: str | None = None,
           cannot_check: str | None = None) -> dict[str, Any]:
    """The gate's record (``gate.json``): passed, the drop in points and one line saying why.

    ``export_failed``: the export's own failure, which fails the gate too;
    ``cannot_check``: why the figures are missing, when they are.
    """
    gate: dict[str, Any] = {"max_accuracy_drop": max_drop, "metric": metric, "heldout": heldout, "samples": samples,
                            "original": original, "final": final, "drop": None, "passed": False,
                            "forced": False, "reason": None}
    if original is None or final is None:
        gate["reason"] = f"the gate cannot be checked: {cannot_check or 'the accuracy was not measured'}"
        return gate
    drop = drop_points(original, final)
    gate["drop"] = drop
    figures = f"{step} {metric} {final:.4f} vs the original's {original:.4f} on {samples} held-out samples, {heldout}"
    if drop > max_drop:
        gate["reason"] = f"{figures}: {drop:.2f} points lost, over --max-accuracy-drop {max_drop:g}"
    elif export_failed:
        gate["reason"] = f"the export's checks failed: {export_failed}"
    else:
        gate["passed"] = True
        gate["reason"] = (f"{figures}: " + (f"{drop:.2f} points lost" if drop > 0 else f"{-drop:.2f} points gained")
                          + f" (at most {max_drop:g} allowed)")
    return gate
