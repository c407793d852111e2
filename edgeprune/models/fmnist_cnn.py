"""``fmnist-cnn``: a small CNN for Fashion-MNIST, trained on first use in about a minute: the quick start's model.

Fashion-MNIST's 28x28 grey images at their own size (one channel, [0, 1]);
five 3x3 conv layers (24-48-48-96-96 channels, two stride-2), BatchNorm and
ReLU, global average pooling and a Linear head: about 11 M MACs, enough that
a board's per-call overhead does not hide what pruning saves (digits-cnn's
0.7 M MACs run in ~0.03 ms, mostly the runtime's own cost).

Trained on first use (when the data set is here, ``scripts/fetch-data.sh``)
with fixed seeds on a 12,000-image slice of the train split (the first
images of the split, never the test split), 3 epochs of Adam with a one-cycle
schedule, no augmentation: about a minute on 2 cores, 87.2 % top-1 on the
10,000 held-out test images (recorded in ``fmnist-cnn-v1.json`` beside the
cached weights). The rest of the train split stays unseen by it, so
fine-tuning after pruning has fresh images. ``benchmarks/train_reference.py``
trains the larger references.

Example::

    model = build("fmnist-cnn")          # trains once (about a minute), then loads the cache
"""

from __future__ import annotations

import io

import torch
from torch import nn

from edgeprune._paths import atomic_write_bytes, cache_dir
from edgeprune.data import load_data
from edgeprune.models.reference import save_record
from edgeprune.progress import step
from edgeprune.safeload import torch_load

INPUT_SHAPE = (1, 1, 28, 28)
CACHE_NAME = "fmnist-cnn-v1.pt"
SEED = 0
TRAIN_IMAGES = 12_000
EPOCHS = 3
WIDTHS = (24, 48, 96)


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FashionCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        a, b, c = WIDTHS
        self.features = nn.Sequential(*_block(1, a, 1), *_block(a, b, 2), *_block(b, b, 1), *_block(b, c, 2),
                                      *_block(c, c, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _split():
    return load_data("fashion-mnist", input_shape=INPUT_SHAPE, normalize="unit", num_classes=10)


def train_fmnist_cnn(model: nn.Module, *, seed: int = SEED) -> nn.Module:
    """Train in place on the first TRAIN_IMAGES images of the train split; deterministic for a seed."""
    split = _split()
    train = split.train.subset(range(min(TRAIN_IMAGES, len(split.train))))
    torch.manual_seed(seed)
    steps = EPOCHS * ((len(train) + 127) // 128)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(EPOCHS):
        for x, y in train.batches(128, shuffle=True, seed=seed + epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def test_accuracy(model: nn.Module) -> tuple[float, int]:
    """Top-1 on the 10,000 held-out test images, and their count."""
    test = _split().heldout
    model.eval()
    correct = 0
    for x, y in test.batches(500):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(test), len(test)


def load_or_train(model: FashionCNN) -> FashionCNN:
    """Load the cached trained weights into ``model``, training and caching them first if needed."""
    path = cache_dir() / CACHE_NAME
    if path.is_file():
        try:
            model.load_state_dict(torch_load(path), strict=True)
            return model.eval()
        except Exception:  # a stale or truncated cache: retrain and overwrite
            pass

    step("fmnist-cnn: training once on 12,000 Fashion-MNIST images (about a minute; cached)")
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # the caller's RNG untouched
        torch.manual_seed(SEED)
        model.load_state_dict(FashionCNN().state_dict())  # the same start as a fresh build
        train_fmnist_cnn(model)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    acc, n = test_accuracy(model)
    save_record("fmnist-cnn", {"dataset": "fashion-mnist", "test_top1": round(acc, 4),
                               "split": f"fashion-mnist test split ({n:,} images), never trained on",
                               "command": "trained on first use (edgeprune.models.fmnist_cnn)",
                               "recipe": f"{EPOCHS} epochs, Adam one-cycle 3e-3, {TRAIN_IMAGES:,} train images"})
    return model.eval()
