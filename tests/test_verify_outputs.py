"""Per-output and detection-level agreement (edgeprune.checks.agreement), on hand-made outputs."""

from __future__ import annotations

import numpy as np

from edgeprune.checks.agreement import agreement, detection_agreement, per_output


def _detector_outputs(n=4, anchors=300, classes=5, seed=0):
    g = np.random.default_rng(seed)
    xy = g.uniform(0, 640, (n, 2, anchors))
    wh = g.uniform(20, 120, (n, 2, anchors))
    boxes = np.concatenate([xy, wh], axis=1)
    scores = 1 / (1 + np.exp(-g.normal(-3, 2, (n, classes, anchors))))
    return boxes.astype(np.float32), scores.astype(np.float32)


def test_an_all_zero_output_has_cosine_zero_not_one():
    ref = [np.ones((2, 5), np.float32)]
    assert agreement(ref, [np.zeros((2, 5), np.float32)])["cosine"] == 0.0
    assert agreement([np.zeros((2, 5))], [np.zeros((2, 5))])["cosine"] == 1.0


def test_collapsed_scores_hide_in_the_overall_figure_but_not_per_output():
    boxes, scores = _detector_outputs()
    joined = np.concatenate([boxes, scores], axis=1)  # one [N, 4 + classes, anchors] tensor
    collapsed = joined.copy()
    collapsed[:, 4:] = 0.0  # what one INT8 scale for pixels and probabilities does to the scores
    overall = agreement([joined], [collapsed])
    assert overall["cosine"] > 0.999  # looks perfect
    rows = per_output([boxes, scores], [collapsed[:, :4], collapsed[:, 4:]], names=["b", "s"], roles=["boxes", "scores"])
    assert rows[0]["cosine"] > 0.999 and rows[1]["cosine"] == 0.0
    assert rows[1]["role"] == "scores" and rows[0]["range"][1] > 500 and rows[1]["range"][1] <= 1.0


def test_detection_figure_identical_shifted_and_collapsed():
    boxes, scores = _detector_outputs()
    same = detection_agreement(boxes, scores, boxes, scores)
    assert same["recall"] == 1.0 and same["score_corr"] > 0.999 and same["detections"] > 0
    shifted = detection_agreement(boxes, scores, boxes + 2.0, scores * 0.95)  # INT8-sized noise
    assert shifted["recall"] > 0.95 and shifted["score_corr"] > 0.99
    gone = detection_agreement(boxes, scores, boxes, np.zeros_like(scores))
    assert gone["recall"] == 0.0 and gone["score_corr"] == 0.0


def test_detection_figure_uses_the_best_detections_of_an_untrained_model():
    boxes, scores = _detector_outputs()
    tiny = scores * 1e-3  # a random-weight detector: nothing above 0.25
    fig = detection_agreement(boxes, tiny, boxes, tiny)
    assert fig["relative_threshold"] and fig["detections"] > 0 and fig["recall"] == 1.0
