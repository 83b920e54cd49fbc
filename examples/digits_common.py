"""Shared pieces of the training examples: scikit-learn's digits, two small models, train
and evaluate helpers, and the ``--smoke`` / ``--full`` command-line convention.

The data: scikit-learn's ``load_digits`` (1,797 8x8 grey images of the digits 0-9, shipped
inside scikit-learn: no download), split once and for all with ``train_test_split(
test_size=0.3, random_state=0, stratify=y)`` into 1,257 training and 540 test images,
as float tensors ``(N, 1, 8, 8)`` scaled to [0, 1] and int64 labels. Every example that
uses :func:`load_digits_split` reports test accuracy on the same 540 images.

An example script (see ``prune_distill.py``) reads its mode and seeds with
:func:`parse_args`, so every example takes the same options:

    --smoke     a tiny subset (256 training, 128 test images) and 1 epoch: seconds, for
                the tests (tests/e2e/test_examples.py runs each example with it)
    --full      all images and the example's full epoch count: the numbers it reports
                in docs/results.md
    --seeds     the seeds to run (default: 0)

A typical use::

    import digits_common as dc
    args = dc.parse_args(__doc__)
    data = dc.load_digits_split(smoke=args.smoke)
    model = dc.small_cnn(width=16)
    dc.train(model, data, epochs=dc.epochs(args, full=30), lr=0.05, seed=0)
    print(dc.accuracy(model, data.x_test, data.y_test))

Run this file for a quick self-check: ``python examples/digits_common.py``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Digits", "accuracy", "batches", "epochs", "load_digits_split", "loader",
           "parse_args", "seed_everything", "small_cnn", "small_resnet", "stopwatch", "train"]

Batch = tuple[torch.Tensor, torch.Tensor]
SMOKE_TRAIN, SMOKE_TEST = 256, 128


@dataclass(frozen=True)
class Digits:
    """The fixed digits split: ``x_*`` float ``(N, 1, 8, 8)`` in [0, 1], ``y_*`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def example_input(self) -> torch.Tensor:
        """One training image ``(1, 1, 8, 8)``: the example input for ``fxrazor.convert``."""
        return self.x_train[:1]


def load_digits_split(smoke: bool = False) -> Digits:
    """The digits, split 70/30 (stratified, ``random_state=0``); ``smoke``: the first
    256 training and 128 test images of that same split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)

    def images(a: Any) -> torch.Tensor:  # pixel values are 0..16
        return torch.as_tensor(a, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0

    def labels(a: Any) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.int64)

    data = Digits(images(x_tr), labels(y_tr), images(x_te), labels(y_te))
    if smoke:
        data = Digits(data.x_train[:SMOKE_TRAIN], data.y_train[:SMOKE_TRAIN],
                      data.x_test[:SMOKE_TEST], data.y_test[:SMOKE_TEST])
    return data


def seed_everything(seed: int) -> None:
    """Seed Python's ``random`` and torch (fxrazor's units sample with ``random``)."""
    random.seed(seed)
    torch.manual_seed(seed)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, seed: int = 0,
            epoch: int = 0, shuffle: bool = True) -> Iterator[Batch]:
    """``(inputs, targets)`` batches of one epoch; the order is a function of
    ``(seed, epoch)`` only, so runs replay and epochs differ."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(x), generator=g)
    else:
        order = torch.arange(len(x))
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def loader(data: Digits, batch_size: int = 64, seed: int = 0
           ) -> Callable[[int], Iterator[Batch]]:
    """``epoch -> batches`` of the training images, as ``fxrazor.distill.finetune`` and
    :func:`train` take it."""
    return lambda epoch: batches(data.x_train, data.y_train, batch_size, seed, epoch)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class SmallCNN(nn.Module):
    """conv-bn-relu x3 (widths w, 2w, 2w), a 2x2 max pool after the second, global average
    pooling and a linear classifier. Traceable by torch.fx."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_bn_relu(1, width), _conv_bn_relu(width, 2 * width),
                                      nn.MaxPool2d(2), _conv_bn_relu(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-bn, a shortcut (1x1 conv-bn where the shape
    changes), ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A stem conv, ``blocks`` basic blocks per stage at widths w and 2w (the second
    stage halves 8x8 to 4x4), global average pooling and a linear classifier."""

    def __init__(self, width: int = 16, blocks: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(1, width)
        layers: list[nn.Module] = []
        for stage, (cin, cout) in enumerate([(width, width), (width, 2 * width)]):
            for b in range(blocks):
                layers.append(BasicBlock(cin if b == 0 else cout, cout,
                                         2 if stage == 1 and b == 0 else 1))
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def small_cnn(width: int = 16, num_classes: int = 10) -> SmallCNN:
    """:class:`SmallCNN` (width 16: 14.5k parameters, 0.90 MFLOPs per image)."""
    return SmallCNN(width, num_classes)


def small_resnet(width: int = 16, blocks: int = 1, num_classes: int = 10) -> SmallResNet:
    """:class:`SmallResNet` (width 16, one block per stage: 19.7k parameters, 1.07 MFLOPs
    per image)."""
    return SmallResNet(width, blocks, num_classes)


def train(model: nn.Module, data: Digits, *, epochs: int, lr: float = 0.05, seed: int = 0,
          batch_size: int = 64, weight_decay: float = 5e-4,
          step: Callable[[nn.Module, Batch], torch.Tensor] | None = None) -> list[float]:
    """Train ``model`` on the training images with SGD (momentum 0.9, cosine learning
    rate to 0 over all steps) and return the mean loss of each epoch.

    ``step(model, batch) -> loss`` replaces the plain cross-entropy forward (an
    algorithm's own loss); the helper does the backward and the optimizer step.
    The batch order is a function of ``seed`` (torch's global seed is not touched).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    per_epoch = -(-len(data.x_train) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    criterion = nn.CrossEntropyLoss()
    losses = []
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for xb, yb in batches(data.x_train, data.y_train, batch_size, seed, epoch):
            loss = step(model, (xb, yb)) if step is not None else criterion(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()), count + 1
        losses.append(total / count)
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
             ) -> float:
    """Top-1 accuracy in [0, 1], in eval mode (the model's training flag is put back)."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    model.train(was_training)
    return correct / len(x)


def parse_args(description: str | None = None, argv: list[str] | None = None,
               extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    """The examples' options: ``--smoke``, ``--full`` (exclusive), ``--seeds``;
    ``extra(parser)`` adds an example's own. Sets torch to one thread (shared machines,
    and timings that compare)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny subset, 1 epoch (seconds)")
    mode.add_argument("--full", action="store_true", help="all data, full epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def epochs(args: argparse.Namespace, full: int, default: int | None = None) -> int:
    """1 under ``--smoke``, ``full`` under ``--full``, else ``default`` (or ``full``)."""
    if args.smoke:
        return 1
    return full if args.full or default is None else default


class stopwatch:  # noqa: N801 (a context manager read like a function)
    """``with stopwatch() as t: ...``; then ``t.seconds`` is the block's wall time."""

    def __enter__(self) -> stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


if __name__ == "__main__":
    args = parse_args(__doc__)
    data = load_digits_split(smoke=args.smoke)
    print(f"train {tuple(data.x_train.shape)} test {tuple(data.x_test.shape)}")
    for build in (small_cnn, small_resnet):
        seed_everything(args.seeds[0])
        net = build()
        with stopwatch() as t:
            train(net, data, epochs=epochs(args, full=20, default=5), seed=args.seeds[0])
        acc = accuracy(net, data.x_test, data.y_test)
        print(f"{type(net).__name__}: test accuracy {acc:.4f} ({t.seconds:.1f} s)")
