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


def _end2end_rows(n=2, k=300, seed=0):
    """YOLO26-style rows (x1, y1, x2, y2, score, class), sorted by score; a third of the boxes inverted
    (x2 < x1 or y2 < y1), as a head two steps from trained-like weights gave them."""
    g = np.random.default_rng(seed)
    x1y1 = g.uniform(0, 320, (n, k, 2))
    wh = g.uniform(20, 150, (n, k, 2)) * np.where(g.random((n, k, 1)) < 0.33, -1, 1)
    scores = np.sort(g.uniform(0.3, 1.0, (n, k)), axis=1)[:, ::-1]
    cls = g.integers(0, 80, (n, k)).astype(np.float64)
    return np.concatenate([x1y1, x1y1 + wh, scores[..., None], cls[..., None]], axis=2).astype(np.float32)


def test_an_exact_end_to_end_file_is_not_refused_for_the_empty_boxes_of_its_head():
    """Issue 19: the export check refused an exact ONNX file of a fine-tuned YOLO26n at 320 px (recall 0.96,
    rows 4e-5 and 0.05 px from PyTorch's): a third of its boxes were inverted, with no area to overlap.
    Through the export's own check (OutputCheck, match_rows): an empty box is not counted, a moved one is."""
    from edgeprune.export.detect import OutputCheck, OutputPiece

    rows = _end2end_rows()
    g = np.random.default_rng(1)
    exact = rows.copy()
    exact[..., :4] += g.normal(0, 0.05, exact[..., :4].shape)
    exact[..., 4] += g.normal(0, 4e-5, exact[..., 4].shape)
    order = np.argsort(-exact[..., 4], axis=1, kind="stable")  # near-equal scores come out in another order
    exact = np.take_along_axis(exact, order[..., None], axis=1)
    check = OutputCheck([OutputPiece(0, None, None, "detections", "output0 detections", classes=80)],
                        [(1, 300, 6)], split=False, input_shape=(1, 3, 320, 320))
    fig = check.figures([rows], check.pieces([exact], like=[rows]))["detection"]
    assert fig["recall"] == 1.0 and fig["empty_boxes"] > 0 and fig["detections"] > 0, fig

    moved = exact.copy()
    moved[..., [0, 2]] += 200.0  # every box 200 px to the right: a wrong conversion
    bad = check.figures([rows], check.pieces([moved], like=[rows]))["detection"]
    assert bad["recall"] < 0.2, bad
