"""Detector outputs: find boxes and class scores, keep them apart through INT8, decode them for checking.

A YOLO-style head ends in ``torch.cat((boxes, scores), 1)``: decoded, one
``[1, 4 + classes, anchors]`` tensor with boxes in pixels (0-640) beside
probabilities (0-1); raw, per level ``[1, 4 * reg_max + classes, H, W]``.
Full INT8 gives a tensor one scale: with pixels beside probabilities that
scale is ~2.5, and every class score rounds to 0 (FACTS.md, export pitfalls).

What this module does, by structure (no model names):

- :func:`output_layout` traces the model once and, for a detector, splits
  every output that is a ``torch.cat`` along channels into its pieces
  (:class:`OutputPiece`: which output, which channels, role ``boxes`` or
  ``scores`` when the first of two pieces holds 4 box values, or a multiple
  of 4 distribution bins, per anchor);
- :func:`split_onnx_outputs` rewrites the ONNX graph so that those pieces are
  the model's outputs, when one scale would crush a piece
  (:func:`needs_own_scales`: pieces' ranges more than 4x apart) (``output0``, ``output1``, ...: the final ``Concat``
  is dropped). Every later step (ONNX INT8, TFLite) then quantizes boxes and
  scores with their own scales. On the board, concatenate them again if the
  post-processing wants one tensor: ``np.concatenate([boxes, scores], 1)``;
- :func:`pieces` cuts any model's outputs (the PyTorch reference, or an
  artifact exported whole) into the same pieces, so every piece is verified
  on its own, split or not;
- :func:`decoded` turns the pieces into boxes ``(N, 4, anchors)`` (centre,
  size, pixels) and probabilities ``(N, classes, anchors)`` for
  :func:`edgeprune.checks.agreement.detection_agreement`: the decoded output if there
  is one, else raw Ultralytics-style maps (distribution focal loss bins,
  anchors at cell centres, stride = input size / map size).

Example::

    layout = output_layout(model, (1, 3, 640, 640), task="detect")
    [p.name for p in layout]        # ['output0 boxes', 'output0 scores', ...]
    split_onnx_outputs(Path("m.onnx"), layout)
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeprune.checks.agreement import detection_agreement, per_output
from edgeprune.checks.heads import describe as describe_heads
from edgeprune.checks.heads import shipping_form
from edgeprune.checks.outputs import flatten
from edgeprune.errors import ExportError, require

# Lazy imports: the imports inside functions below load onnx, torch, which importing this module does not;
# they load only when a function that needs them runs.


@dataclass(frozen=True)
class OutputPiece:
    """One verified output: channels ``[start, end)`` of the model's flattened output ``source``."""

    source: int
    start: int | None  # None: the whole output
    end: int | None
    role: str  # 'boxes' | 'scores' | 'detections' | 'part' | 'output'
    name: str
    decoded: bool = False  # boxes as (x, y, w, h) in pixels, scores as probabilities
    classes: int | None = None  # 'detections' (YOLO26 end-to-end rows x1, y1, x2, y2, score, class): class count

    def to_dict(self) -> dict:
        return asdict(self)


def for_shipping(loaded: Any, *, fmt: str, precision: str) -> Any:
    """``loaded`` with its module as a file of ``fmt``/``precision`` holds it (a shallow copy), or ``loaded``.

    Ultralytics heads are set as Ultralytics' exporter sets them
    (:func:`edgeprune.checks.heads.shipping_form`): the decoded prediction
    tensor alone, YOLO26's end-to-end detections for float files. The
    reference outputs and every file then hold the same outputs.
    """
    ship = shipping_form(loaded.module, fmt=fmt, precision=precision, input_shape=tuple(loaded.input_shape))
    if ship is loaded.module:
        return loaded
    out = copy.copy(loaded)
    out.module = ship
    return out


def _roles(sizes: list[int], ndim: int) -> tuple[list[str], bool]:
    if len(sizes) == 2 and ndim == 3 and sizes[0] == 4:
        return ["boxes", "scores"], True
    if len(sizes) == 2 and ndim == 4 and sizes[0] % 4 == 0 and sizes[0] >= 4:
        return ["boxes", "scores"], False
    return ["part"] * len(sizes), False


def output_layout(module, input_shape: tuple[int, ...], *, task: str) -> list[OutputPiece]:
    """The pieces to verify (and, for INT8, export) separately; one whole piece per output otherwise."""
    import torch
    from torch.overrides import TorchFunctionMode

    shapes: dict = {}

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    shapes.setdefault(t.grad_fn, tuple(t.shape))
            return out

    x = torch.zeros(*input_shape)
    module.eval()
    with torch.enable_grad(), Record():
        outs = flatten(module(x))
    heads = describe_heads(module)
    layout: list[OutputPiece] = []
    for i, o in enumerate(outs):
        if heads and heads["end2end"] and o.ndim == 3 and o.shape[1] == heads["max_det"] and o.shape[2] >= 6:
            layout.append(OutputPiece(i, None, None, "detections", f"output{i} detections", True, heads["classes"]))
            continue
        fn = o.grad_fn
        sizes = None
        if task == "detect" and fn is not None and fn.name() == "CatBackward0" and o.ndim >= 3:
            if fn._saved_dim in (1, 1 - o.ndim):
                got = [shapes.get(f) for f, _ in fn.next_functions]
                if all(s is not None and len(s) == o.ndim for s in got):
                    sizes = [s[1] for s in got]
        if not sizes or len(sizes) < 2 or sum(sizes) != o.shape[1]:
            layout.append(OutputPiece(i, None, None, "output", f"output{i}"))
            continue
        roles, decoded = _roles(sizes, o.ndim)
        start = 0
        for size, role in zip(sizes, roles, strict=True):
            layout.append(OutputPiece(i, start, start + size, role, f"output{i} {role}", decoded))
            start += size
    for i, piece in enumerate(layout):  # 'part' pieces are numbered
        if piece.role == "part":
            layout[i] = OutputPiece(piece.source, piece.start, piece.end, "part", f"output{piece.source} part {i}")
    return layout


def is_split(layout: list[OutputPiece]) -> bool:
    """Does the layout cut any output into pieces?"""
    return any(p.start is not None for p in layout)


SCALE_RATIO = 4.0  # pieces whose largest values differ more than this lose >2 bits in one int8 scale


def needs_own_scales(layout: list[OutputPiece], outputs: list[np.ndarray]) -> bool:
    """Would one INT8 scale for some output crush one of its pieces? (boxes in pixels beside probabilities)

    Raw head maps whose box and class logits have similar ranges do not need
    it (the built-in yolo-small: ~12 vs ~11), a decoded head does (640 vs 1).
    """
    for src in {p.source for p in layout if p.start is not None}:
        peaks = [float(np.abs(outputs[src][:, p.start : p.end]).max()) for p in layout if p.source == src]
        if min(peaks) == 0 or max(peaks) / min(peaks) > SCALE_RATIO:
            return True
    return False


def pieces(outputs: list[np.ndarray], layout: list[OutputPiece]) -> list[np.ndarray]:
    """Cut whole outputs (batch first, in the model's order) into the layout's pieces."""
    if len(outputs) != len({p.source for p in layout}):
        raise ExportError(f"{len(outputs)} outputs, the model has {len({p.source for p in layout})}")
    return [outputs[p.source] if p.start is None else outputs[p.source][:, p.start : p.end] for p in layout]


def split_onnx_outputs(path: Path, layout: list[OutputPiece], piece_shapes: list[tuple[int, ...]]) -> None:
    """Make each piece an output of the ONNX model at ``path`` (in place): ``output0`` ... in layout order.

    A split output must be produced by a ``Concat`` along channels whose
    inputs are the pieces; the ``Concat`` is removed unless the model also
    uses the whole tensor (Ultralytics' raw maps feed its decode too).
    """
    onnx = require("onnx", "onnx", "ONNX export")
    from onnx import helper

    model = onnx.load(str(path))
    g = model.graph
    old = list(g.output)
    if len(old) != len({p.source for p in layout}):
        raise ExportError(f"{path}: {len(old)} outputs, the layout expects {len({p.source for p in layout})}")
    rename = {o.name: f"edgeprune_whole_{o.name}" for o in old}
    for node in g.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    producers = {o: n for n in g.node for o in n.output}
    sources: list[str] = []
    dropped = []
    for i, out in enumerate(old):
        mine = [p for p in layout if p.source == i]
        whole = rename[out.name]
        if len(mine) == 1 and mine[0].start is None:
            sources.append(whole)
            continue
        node = producers.get(whole)
        axis = next((a.i for a in node.attribute if a.name == "axis"), None) if node is not None else None
        rank = len(out.type.tensor_type.shape.dim)
        if node is None or node.op_type != "Concat" or axis not in (1, 1 - rank) or len(node.input) != len(mine):
            raise ExportError(
                f"{path}: output {out.name} is not a channel Concat of {len(mine)} pieces in the ONNX graph; "
                "export it whole (detector_outputs='keep')"
            )
        sources.extend(node.input)
        if not any(whole in n.input for n in g.node):  # kept when the whole tensor is also used further
            dropped.append(node)
    for node in dropped:
        g.node.remove(node)
    del g.output[:]
    for k, (src, shape) in enumerate(zip(sources, piece_shapes, strict=True)):
        name = f"output{k}"
        g.node.append(helper.make_node("Identity", [src], [name], name=f"edgeprune_output{k}"))
        g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape)))
    onnx.checker.check_model(model)
    tmp = path.with_name(f".{path.name}.split")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _probabilities(s: np.ndarray) -> np.ndarray:
    return s if (s.min() >= 0 and s.max() <= 1) else _sigmoid(s)


def _end2end(rows: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO26's end-to-end rows ``(N, K, 6)`` (x1, y1, x2, y2, score, class) as boxes ``(N, 4, K)`` and scores ``(N, C, K)``."""
    x1, y1, x2, y2, score = (rows[..., k] for k in range(5))
    boxes = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    cls = np.clip(np.rint(rows[..., 5]), 0, classes - 1).astype(int)
    scores = np.zeros((rows.shape[0], classes, rows.shape[1]))
    n, k = np.meshgrid(np.arange(rows.shape[0]), np.arange(rows.shape[1]), indexing="ij")
    scores[n, cls, k] = score
    return boxes, scores


def decoded(parts: list[np.ndarray], layout: list[OutputPiece], input_shape: tuple[int, ...]):
    """``(boxes (N, 4, A), scores (N, classes, A))`` from a detector's pieces, or None.

    A decoded output is used as it is; otherwise every raw level
    ``(N, 4 * reg_max, H, W)`` + ``(N, classes, H, W)`` is decoded with the
    distribution-focal-loss expectation over ``reg_max`` bins, anchors at
    cell centres and stride ``input height / H`` (Ultralytics' head).
    """
    for p, arr in zip(layout, parts, strict=True):
        if p.role == "detections":
            return _end2end(arr.astype(np.float64), p.classes or 1)
    by_src: dict[int, dict[str, np.ndarray]] = {}
    flags: dict[int, bool] = {}
    for p, arr in zip(layout, parts, strict=True):
        if p.role in ("boxes", "scores"):
            by_src.setdefault(p.source, {})[p.role] = arr
            flags[p.source] = p.decoded
    pairs = {s: d for s, d in by_src.items() if len(d) == 2}
    for s, d in pairs.items():
        if flags[s]:
            return d["boxes"].astype(np.float64), _probabilities(d["scores"].astype(np.float64))
    raw = [d for s, d in sorted(pairs.items()) if d["boxes"].ndim == 4]
    if not raw or len({d["scores"].shape[1] for d in raw}) != 1:
        return None
    all_boxes, all_scores = [], []
    for d in raw:
        b, s = d["boxes"].astype(np.float64), d["scores"].astype(np.float64)
        n, c4, h, w = b.shape
        reg = c4 // 4
        stride = input_shape[2] / h
        logits = b.reshape(n, 4, reg, h * w)
        e = np.exp(logits - logits.max(2, keepdims=True))
        dist = (e / e.sum(2, keepdims=True) * np.arange(reg)[None, None, :, None]).sum(2)
        gy, gx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        ax, ay = gx.ravel()[None], gy.ravel()[None]
        x1, y1, x2, y2 = ax - dist[:, 0], ay - dist[:, 1], ax + dist[:, 2], ay + dist[:, 3]
        boxes = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1) * stride
        all_boxes.append(boxes)
        all_scores.append(_sigmoid(s.reshape(n, s.shape[1], h * w)))
    return np.concatenate(all_boxes, axis=2), np.concatenate(all_scores, axis=2)


SCORE_WINDOW = 0.05  # rows whose scores differ by less than this (relative) may have swapped places
TIE = 0.002  # scores this close (relative; fp16 rounds at ~5e-4) are equal to rounding: a tie


def match_rows(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """``candidate``'s end-to-end rows ``(N, K, 6)`` reordered to line up with ``reference``'s.

    A top-k orders detections by score, and two whose scores are equal to
    rounding come out in either order: ONNX Runtime and PyTorch swapped
    rows on 2 of 8 inputs of a YOLO26n at 320 px (BatchNorm calibrated),
    150 px apart, though every value agreed to 2e-3. So each reference row
    is paired with the unused candidate row of the same class, a score within
    5 % (``SCORE_WINDOW``), and the nearest box; then every figure compares
    paired rows. Where the k-th and (k+1)-th scores tie (equal to 0.2 %,
    ``TIE``), which of them is the last row is arbitrary: a reference row tied
    with the cut and left unpaired, beside a candidate row also tied with its
    cut, is an equally right answer and is taken as paired (an untrained
    head, all of whose scores are equal, is all ties: ``figures`` reports the
    share as ``end2end.tied_at_cut``). Any other unpaired row keeps its
    place, and the comparison shows the difference.
    """
    if reference.shape != candidate.shape or reference.ndim != 3 or reference.shape[2] < 6:
        return candidate
    out = candidate.copy()
    for n in range(reference.shape[0]):
        ref, cand = reference[n], candidate[n]
        used = np.zeros(len(cand), dtype=bool)
        paired = np.full(len(ref), -1)
        cut_ref, cut_cand = ref[-1, 4], cand[-1, 4]

        def at_cut(score: float, cut: float) -> bool:
            return abs(score - cut) <= TIE * abs(cut) + 1e-6

        for i, row in enumerate(ref):
            window = SCORE_WINDOW * abs(row[4]) + 1e-6
            ok = ~used & (np.rint(cand[:, 5]) == np.rint(row[5])) & (np.abs(cand[:, 4] - row[4]) <= window)
            if not ok.any():
                continue
            dist = np.abs(cand[ok, :4] - row[:4]).sum(1)
            if at_cut(row[4], cut_ref) and dist.min() > 0.01 * (np.abs(row[:4]).sum() + 1.0):
                continue  # a tie at the cut: any of the tied anchors is as right (below)
            j = int(np.where(ok)[0][dist.argmin()])
            used[j], paired[i] = True, j
        left = list(np.where(~used)[0])
        for i in np.where(paired < 0)[0]:
            if not left:
                break
            j = left.pop(0)
            out[n, i] = ref[i] if at_cut(ref[i, 4], cut_ref) and at_cut(cand[j, 4], cut_cand) else cand[j]
        for i in np.where(paired >= 0)[0]:
            out[n, i] = cand[paired[i]]
    return out


def _round(d: dict) -> dict:
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in d.items()}


class OutputCheck:
    """How the export verifies a model's outputs: the layout's pieces, each on its own.

    ``split``: the artifacts output the pieces themselves (INT8 detectors);
    else they output whole tensors, cut into pieces before comparing.
    ``whole_shapes``: the model's outputs, batch 1.
    """

    def __init__(self, layout: list[OutputPiece], whole_shapes: list[tuple[int, ...]], split: bool,
                 input_shape: tuple[int, ...]) -> None:
        self.layout, self.whole, self.split, self.input_shape = layout, whole_shapes, split, input_shape

    def pieces(self, outputs: list[np.ndarray], *, like: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """An artifact's outputs as pieces; end-to-end detections in ``like``'s row order (:func:`match_rows`)."""
        parts = list(outputs) if self.split else pieces(list(outputs), self.layout)
        if like is not None:
            parts = [match_rows(r, p) if piece.role == "detections" else p
                     for piece, r, p in zip(self.layout, like, parts, strict=True)]
        return parts

    def artifact_shapes(self) -> list[tuple[int, ...]]:
        """The shapes the artifacts output (to map TFLite's NHWC outputs back)."""
        if not self.split:
            return self.whole
        return [(1, *self.whole[p.source][1:]) if p.start is None else (1, p.end - p.start, *self.whole[p.source][2:])
                for p in self.layout]

    def figures(self, reference: list[np.ndarray], got: list[np.ndarray]) -> dict:
        """``{"outputs": per-output agreement, "detection": the detection figure (detectors)}``."""
        rows = per_output(reference, got, names=[p.name for p in self.layout], roles=[p.role for p in self.layout])
        fig: dict = {"outputs": [_round(r) for r in rows]}
        ref, cand = decoded(reference, self.layout, self.input_shape), decoded(got, self.layout, self.input_shape)
        if ref is not None and cand is not None:
            e2e = any(p.role == "detections" for p in self.layout)  # NMS-free rows: no NMS over them
            fig["detection"] = _round(detection_agreement(*ref, *cand, end2end=e2e))
        for piece, r in zip(self.layout, reference, strict=True):
            if piece.role == "detections":  # how much of the top-k is a tie at its cut (an untrained head: all)
                tied = np.abs(r[..., 4] - r[:, -1:, 4]) <= TIE * np.abs(r[:, -1:, 4]) + 1e-6
                fig["end2end"] = {"rows": int(r.shape[1]), "tied_at_cut": round(float(tied.mean()), 4)}
        return fig


def describe(layout: list[OutputPiece]) -> list[dict]:
    """The layout for export.json: what each artifact output holds."""
    return [
        {**p.to_dict(), "channels": None if p.start is None else [p.start, p.end]}
        for p in layout
    ]


__all__ = [
    "OutputCheck", "OutputPiece", "decoded", "describe", "for_shipping", "is_split", "match_rows", "needs_own_scales",
    "output_layout", "pieces", "split_onnx_outputs",
]
