"""A tiny CNN trained on scikit-learn's digits: real data, real accuracy, offline.

The 1,797 8x8 digits (pixel values 0-16) are upsampled to 16x16 and split
80/20 with a fixed seed. Training (Adam, 10 epochs, batches of 128, one thread) takes a
few seconds on one core; the weights are cached in edgeprune's cache dir
(``digits-cnn-v1.pt``, written atomically) so later builds load them.

The network has a flatten before its Linear head, the case where a pruner
must map one conv channel onto 16 Linear input features.

Example::

    model = build_digits_cnn(pretrained=True)
    digits_accuracy(model)     # ~0.98 on the held-out split
"""

from __future__ import annotations

import io

import torch
from torch import nn

from edgeprune._paths import atomic_write_bytes, cache_dir
from edgeprune.errors import require
from edgeprune.models.reference import record, save_record
from edgeprune.safeload import torch_load

INPUT_SHAPE = (1, 1, 16, 16)
CACHE_NAME = "digits-cnn-v1.pt"
SEED = 0


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, 1, 1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, 2, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, 2, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_data(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` for ``split`` ('train' or 'test'): x is (N, 1, 16, 16) float in [0, 1]."""
    datasets = require("sklearn.datasets", "torch", "the digits data set")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = nn.functional.interpolate(x, size=INPUT_SHAPE[2:], mode="bilinear", align_corners=False)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SEED))
    n_test = len(y) // 5
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    return x[idx], y[idx]


@torch.no_grad()
def digits_accuracy(model: nn.Module, split: str = "test") -> float:
    """Top-1 accuracy of ``model`` on the digits ``split`` (360 test images)."""
    x, y = digits_data(split)
    was_training = model.training
    model.eval()
    acc = float((model(x).argmax(1) == y).float().mean())
    model.train(was_training)
    return acc


def train_digits_cnn(model: nn.Module, *, epochs: int = 10, seed: int = SEED) -> nn.Module:
    """Train in place on the train split; deterministic for a given seed."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this small a net trains faster on one thread, and alike everywhere
    try:
        x, y = digits_data("train")
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=gen).split(128):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def build_digits_cnn(pretrained: bool = True) -> DigitsCNN:
    """The digits CNN; with ``pretrained`` its trained weights (trained once, then cached)."""
    torch.manual_seed(SEED)
    model = DigitsCNN()
    return load_or_train(model) if pretrained else model


def load_or_train(model: DigitsCNN) -> DigitsCNN:
    """Load the cached trained weights into ``model``, training and caching them first if needed."""
    path = cache_dir() / CACHE_NAME
    if path.is_file():
        try:
            model.load_state_dict(
                torch_load(path), strict=True
            )
            if record("digits-cnn") is None:  # weights cached by an older edgeprune
                _save_record(model)
            return model.eval()
        except Exception:  # a stale or truncated cache: retrain and overwrite
            pass
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # the caller's RNG untouched
        torch.manual_seed(SEED)
        model.load_state_dict(DigitsCNN().state_dict())  # the same start as a fresh build
        train_digits_cnn(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    _save_record(model)
    return model.eval()


def _save_record(model: nn.Module) -> None:
    save_record("digits-cnn", {"dataset": "digits", "test_top1": round(digits_accuracy(model), 4),
                               "split": "digits test split (359 images), never trained on",
                               "command": "trained on first use (edgeprune.models.digits)"})
