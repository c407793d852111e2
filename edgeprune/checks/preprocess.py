"""Is the model fed the way it was trained? A check of the preprocessing on the user's labelled images.

A model trained on [0, 1] pixels and fed ImageNet mean/std (or the other way
round, or BGR for RGB) still runs and gives confident answers, just wrong
ones; distilling from that mis-fed teacher and gating against it then hides
the mistake. So before anything is pruned, :func:`check_preprocessing`
scores the original on up to ``SAMPLES`` labelled held-out images as it will
be fed, and with the other normalisations (``imagenet``, ``unit``,
``0.5/0.5``) and, for 3 channels, the reversed (BGR) channel order on the same
images (recovered exactly: every normalisation is a per-channel affine map of
[0, 1] pixels). It stops with one line naming the one that fits when another
fits much better (:func:`much_better`: 5 points more and at most half the
errors: a model fed ImageNet statistics instead of its [0, 1] pixels scored
80 % instead of 99 % here, not only the 49 % of a worse case), e.g.
``the original scores 49.1 % top-1 with imagenet normalisation and 98.9 % with
--normalize unit ...``; and when the model scores far below what the data
allows (under :func:`low_bar`: 50 % top-1, or twice chance for few classes)
whatever it is fed. A user who named ``--normalize`` has confirmed the
choice: then either is a warning line, not a stop.

Example::

    check_preprocessing(lm, split, confirmed=False)     # raises PreprocessError, or returns the figures
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeprune.checks.outputs import flatten
from edgeprune.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, parse_normalize
from edgeprune.errors import PreprocessError
from edgeprune.progress import note

# Lazy imports: the imports inside functions below load torch, which importing this module does not;
# they load only when a function that needs them runs.

SAMPLES = 300
CANDIDATES = ("imagenet", "unit", "0.5/0.5")


def low_bar(num_classes: int) -> float:
    """Below this top-1 an original is 'far below what its data allows': 50 %, or 2x chance (at most 75 %)."""
    return max(0.5, min(0.75, 2.0 / max(num_classes, 1)))


def much_better(candidate: float, current: float) -> bool:
    """5 points more top-1 and at most half the errors: not noise on a few hundred images."""
    return candidate - current >= 0.05 and (1.0 - candidate) <= 0.5 * (1.0 - current)


def _mean_std(norm: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    norm = parse_normalize(norm) if isinstance(norm, str) else norm
    if norm in (None, "unit"):
        mean, std = (0.0,), (1.0,)
    elif norm == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if channels == 1:
            luma = (0.299, 0.587, 0.114)
            mean, std = (float(np.dot(luma, mean)),), (float(np.dot(luma, std)),)
    else:
        mean, std = norm
    m = np.broadcast_to(np.asarray(mean, np.float32), (channels,)).reshape(1, channels, 1, 1)
    s = np.broadcast_to(np.asarray(std, np.float32), (channels,)).reshape(1, channels, 1, 1)
    return m, s


def _label(norm: Any) -> str:
    if isinstance(norm, str):
        return norm
    return "/".join(",".join(f"{v:g}" for v in part) for part in norm)


def _top1(module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), 64):
            out = flatten(module(torch.from_numpy(np.ascontiguousarray(x[i:i + 64]))))[0]
            hits += int((out.argmax(1).numpy() == y[i:i + 64]).sum())
    return hits / max(len(x), 1)


def check_preprocessing(lm, split, *, confirmed: bool) -> dict[str, Any] | None:
    """Score ``lm`` (a classifier with ``num_classes``) on labelled held-out images as it is fed; see above.

    Returns the figures (``{"as_fed": ..., "tried": {...}}``), or None when
    there is nothing to check (not a classifier, no labels, or arrays that
    are model inputs already). Raises :class:`PreprocessError` (exit 2) when
    another preprocessing fits much better, or none fits, unless ``confirmed``.
    """
    held = split.heldout
    k = getattr(lm, "num_classes", None)
    if lm.task != "classify" or not k or not held.labelled or getattr(held, "passthrough", False):
        return None
    n = min(SAMPLES, len(held))
    idx = np.linspace(0, len(held) - 1, n).round().astype(int)
    x, y = held.subset(idx).numpy()
    if x.ndim != 4 or len(x) == 0:
        return None
    channels = x.shape[1]
    module = lm.module.eval()
    current = lm.normalize or "unit"
    as_fed = _top1(module, x, y)
    bar = low_bar(k)
    figures: dict[str, Any] = {"as_fed": round(as_fed, 4), "normalize": _label(current), "samples": int(n),
                               "bar": bar, "tried": {}}
    m0, s0 = _mean_std(current, channels)
    pixels = x * s0 + m0  # the [0, 1] pixels these inputs came from
    tried: dict[str, float] = {}
    for norm in CANDIDATES:
        m, s = _mean_std(norm, channels)
        for order in (("rgb", "bgr") if channels == 3 else ("rgb",)):
            p = pixels[:, ::-1] if order == "bgr" else pixels
            if _label(norm) == _label(current) and order == "rgb":
                continue
            tried[f"{norm}" + (" with BGR channels" if order == "bgr" else "")] = _top1(module, (p - m) / s, y)
    figures["tried"] = {key: round(v, 4) for key, v in tried.items()}
    best, best_v = max(tried.items(), key=lambda kv: kv[1]) if tried else (None, 0.0)
    where = f"on {n} labelled held-out images of {split.to_dict().get('source')}"
    fed = f"{as_fed:.1%} top-1 with {_label(current)} normalisation ({lm.normalize_source or 'the default'})"
    if best is not None and best_v >= bar and much_better(best_v, as_fed):
        if best.endswith("BGR channels"):
            fix = ("your model probably expects BGR images (OpenCV's order): edgeprune feeds RGB, so reorder the "
                   "first conv's input channels in your factory (weight.flip(1)), then run again")
        else:
            kind = {"unit": "[0, 1] inputs", "imagenet": "ImageNet mean/std inputs",
                    "0.5/0.5": "[-1, 1] inputs"}.get(best, best)
            fix = f"your model probably expects {kind}: pass --normalize {best}"
        message = f"the original scores {fed} and {best_v:.1%} with {best} {where}: {fix}"
        if not confirmed:
            raise PreprocessError(message + f" (or --normalize {_label(current)} to keep what you have)")
        note(f"warning: {message}")
        return figures
    if as_fed >= bar:
        return figures
    message = (f"the original scores {fed} {where}, below {bar:.0%} (chance is {1 / k:.0%}), and no other "
               f"normalisation or channel order does much better"
               + (f" (best: {best} {best_v:.1%})" if best else "")
               + ": check that the class folders are in the model's class order and that these are the weights "
                 "you trained")
    if not confirmed:
        raise PreprocessError(message + f"; or pass --normalize {_label(current)} to go on with it")
    note(f"warning: {message}")
    return figures
