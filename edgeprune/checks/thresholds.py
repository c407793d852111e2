"""How close a converted file must stay to the original model: the agreement thresholds of the export.

The format table (:mod:`edgeprune.export.formats`) gives each format and
precision its defaults; ``--min-agreement`` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """Minimum agreement with the original model; below any, the export fails.

    ``cosine`` applies to all outputs together *and to each output on its
    own* (a detector's boxes and scores are separate outputs there);
    ``recall`` and ``score_corr`` to a detector's detections
    (:func:`edgeprune.checks.agreement.detection_agreement`).
    """

    top1: float
    cosine: float
    recall: float = 0.0
    score_corr: float = 0.0

    def failures(self, agreement: dict, *, classifier: bool, outputs: list[dict] | None = None,
                 detection: dict | None = None) -> list[str]:
        """Which figures fall below these thresholds (empty = pass)."""
        bad = []
        if classifier and agreement["top1"] < self.top1:
            bad.append(f"top-1 agreement {agreement['top1']:.3f} < {self.top1:g}")
        if agreement["cosine"] < self.cosine:
            bad.append(f"cosine {agreement['cosine']:.6f} < {self.cosine:g}")
        for row in outputs or []:
            if len(outputs) > 1 and row["cosine"] < self.cosine:
                bad.append(f"output '{row['name']}' cosine {row['cosine']:.4f} < {self.cosine:g}")
        if detection:
            if detection["recall"] < self.recall:
                bad.append(f"it finds {detection['recall']:.0%} of the float model's confident detections "
                           f"(< {self.recall:.0%})")
            if detection["score_corr"] < self.score_corr:
                bad.append(f"detection scores correlate {detection['score_corr']:.3f} with the float model's "
                           f"(< {self.score_corr:g})")
        return bad
