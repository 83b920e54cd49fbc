"""A small op search space on digits, shared by ``spos_digits.py`` and ``darts_digits.py``.

The network: a stem (3x3 conv 1 -> 16, BN, ReLU) on the 8x8 image, two cells at 8x8, a
2x2 max pool, two cells at 4x4 and a linear classifier on the flattened 16x4x4 map. A
cell is residual, ``BN(x + op(x))``, and keeps its 16 channels; ``op`` is one of five
(:data:`OPS`):

    conv3x3   3x3 conv, BN, ReLU
    conv5x5   5x5 conv, BN, ReLU
    sep3x3    depthwise 3x3 conv, pointwise 1x1 conv, BN, ReLU
    maxpool   3x3 max pool, stride 1
    skip      identity (the cell then only rescales: it is as good as absent)

The residual form keeps what each channel means the same whichever op a cell runs; with
plain ``x = op(x)`` cells, SPOS's shared weights barely trained (the loss stayed near
2.0 after 6 epochs, against 0.1 with residual cells).

5^4 = 625 architectures. The same candidates sit in a ``OneShotMutableOP`` (one op runs,
for SPOS) or a ``DiffMutableOP`` (the softmax(alpha)-weighted sum of all five, for
DARTS), or are plain modules (:func:`fixed_net`: an architecture trained from scratch).
An architecture is a tuple of four op names, cell by cell.

:func:`random_baseline` trains :data:`NUM_RANDOM` architectures drawn uniformly with fixed
seeds, each with the same budget as a searched one, and is the yardstick of both examples
(``--baseline-cache FILE`` reuses a baseline already computed with the same settings).

Run this file for a quick self-check: ``python examples/digits_nas_space.py``.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_common as dc  # noqa: E402

import fxrazor  # noqa: E402
from fxrazor.mutables import DiffMutableOP, OneShotMutableOP  # noqa: E402

__all__ = ["NUM_CELLS", "NUM_RANDOM", "OPS", "WIDTH", "Arch", "NasNet", "arch_of",
           "add_options", "choices_of", "compare", "fixed_net", "op_supernet", "random_arch",
           "random_baseline", "retrain", "retrain_epochs", "split_train", "summary"]

WIDTH, NUM_CELLS, NUM_RANDOM = 16, 4, 10
Arch = tuple[str, ...]


def _conv(c: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, bias=False), nn.BatchNorm2d(c),
                         nn.ReLU())


def _sep(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


OPS: dict[str, Callable[[int], nn.Module]] = {
    "conv3x3": lambda c: _conv(c, 3),
    "conv5x5": lambda c: _conv(c, 5),
    "sep3x3": _sep,
    "maxpool": lambda c: nn.MaxPool2d(3, stride=1, padding=1),
    "skip": lambda c: nn.Identity(),
}


def _cell(kind: str, op: str | None) -> nn.Module:
    if kind == "fixed":
        assert op is not None
        return OPS[op](WIDTH)
    candidates = {name: make(WIDTH) for name, make in OPS.items()}
    if kind == "spos":
        return OneShotMutableOP(candidates)
    cell = DiffMutableOP(candidates)
    cell.set_forward_args(torch.zeros(len(OPS)))  # for the trace; the supernet owns alpha
    return cell


class NasNet(nn.Module):
    """stem -> cells 0, 1 (8x8) -> max pool -> cells 2, 3 (4x4) -> flatten -> linear.

    ``kind``: ``"spos"`` (``OneShotMutableOP`` cells), ``"darts"`` (``DiffMutableOP``
    cells) or ``"fixed"`` (the plain ops of ``arch``).
    """

    def __init__(self, kind: str = "fixed", arch: Arch | None = None) -> None:
        super().__init__()
        ops = arch if arch is not None else (None,) * NUM_CELLS
        if len(ops) != NUM_CELLS or kind not in ("spos", "darts", "fixed"):
            raise ValueError(f"kind {kind!r} with arch {arch!r}")
        self.stem = nn.Sequential(nn.Conv2d(1, WIDTH, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(WIDTH), nn.ReLU())
        self.cells = nn.ModuleList(_cell(kind, op) for op in ops)
        # after every cell's sum: one scale whichever op ran (skip and maxpool have no BN)
        self.norms = nn.ModuleList(nn.BatchNorm2d(WIDTH) for _ in ops)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(WIDTH * 16, 10)  # the 4x4 map, flattened

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, cell in enumerate(self.cells):
            if i == NUM_CELLS // 2:
                x = self.pool(x)
            x = self.norms[i](x + cell(x))
        return self.head(torch.flatten(x, 1))


def fixed_net(arch: Arch) -> NasNet:
    """The plain network of ``arch`` (freshly initialised from torch's global seed)."""
    return NasNet("fixed", tuple(arch))


def op_supernet(kind: str, example: torch.Tensor) -> fxrazor.Supernet:
    """The converted supernet of :class:`NasNet` with ``kind`` cells; every channel unit
    is fixed at its full width, so the cells' ops are all that is searched."""
    sn = fxrazor.convert(NasNet(kind), example)
    for unit in sn.units:
        unit.fix_chosen(unit.num_channels)
    return sn


def arch_of(choices: dict[str, Any]) -> Arch:
    """The architecture of a supernet's choices (keys ``cells.<i>``)."""
    return tuple(str(choices[f"cells.{i}"]) for i in range(NUM_CELLS))


def choices_of(arch: Arch) -> dict[str, str]:
    """The supernet's choices of an architecture."""
    return {f"cells.{i}": op for i, op in enumerate(arch)}


def retrain_epochs(args: Any) -> int:
    """The budget of every retrained architecture: 15 epochs (``--full``), 1 (``--smoke``),
    else 5."""
    return dc.epochs(args, full=15, default=5)


def random_arch(seed: int) -> Arch:
    """An architecture drawn uniformly, a function of ``seed`` only."""
    rng = random.Random(seed)
    return tuple(rng.choice(list(OPS)) for _ in range(NUM_CELLS))


def split_train(data: dc.Digits, held_out: float, seed: int = 0
                ) -> tuple[dc.Digits, dc.Digits]:
    """The training images split in two by a seeded permutation: ``(rest, held-out
    fraction)``, each as a :class:`Digits` whose *test* fields are the original test set
    (kept only so the type fits; the searches never read it)."""
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    cut = len(order) - round(held_out * len(order))
    a, b = order[:cut], order[cut:]
    return (dc.Digits(data.x_train[a], data.y_train[a], data.x_test, data.y_test),
            dc.Digits(data.x_train[b], data.y_train[b], data.x_test, data.y_test))


def retrain(arch: Arch, data: dc.Digits, epochs: int, seed: int, lr: float = 0.05) -> float:
    """Train ``arch`` from scratch on all training images (initial weights and batch
    order from ``seed``) and return its test accuracy: the budget every architecture of
    both examples gets."""
    dc.seed_everything(seed)
    model = fixed_net(arch)
    dc.train(model, data, epochs=epochs, lr=lr, seed=seed)
    return dc.accuracy(model, data.x_test, data.y_test)


def random_baseline(data: dc.Digits, epochs: int, cache: str | None = None
                    ) -> list[tuple[Arch, float]]:
    """:data:`NUM_RANDOM` random architectures (``random_arch(1000 + i)``), each retrained
    with seed ``i``: ``[(arch, test accuracy)]``. With ``cache``, a JSON file of the same
    settings (images, epochs) is read instead, or written after computing."""
    key = {"train": len(data.x_train), "test": len(data.x_test), "epochs": epochs,
           "num_random": NUM_RANDOM}
    path = Path(cache) if cache else None
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return [(tuple(a), float(acc)) for a, acc in stored["runs"]]
    runs = []
    for i in range(NUM_RANDOM):
        arch = random_arch(1000 + i)
        runs.append((arch, retrain(arch, data, epochs, seed=i)))
    if path is not None:
        path.write_text(json.dumps({"key": key, "runs": [[list(a), acc] for a, acc in runs]}))
    return runs


def summary(values: list[float]) -> str:
    """``mean ± sample standard deviation`` (the mean alone for one value)."""
    mean = statistics.fmean(values)
    return f"{mean:.4f}" if len(values) < 2 else f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def add_options(parser: Any) -> None:
    """The examples' own option: ``--baseline-cache FILE``."""
    parser.add_argument("--baseline-cache", metavar="FILE", default=None,
                        help="JSON file of the random baseline: read when its settings "
                             "match, else computed and written")


def compare(searched: list[float], baseline: list[tuple[Arch, float]]) -> None:
    """Print the random architectures and one ``RESULT baseline`` and one
    ``RESULT compare`` line: searched test accuracies against the random ones."""
    for arch, acc in baseline:
        print(f"  random {'/'.join(arch):36s} test={acc:.4f}")
    randoms = [acc for _, acc in baseline]
    mean = statistics.fmean(randoms)
    print(f"RESULT baseline n={len(randoms)} test={summary(randoms)} "
          f"min={min(randoms):.4f} max={max(randoms):.4f}")
    above = sum(acc > mean for acc in searched)
    print(f"RESULT compare searched={summary(searched)} random={summary(randoms)} "
          f"searched_above_random_mean={above}/{len(searched)}")


if __name__ == "__main__":
    dc.parse_args(__doc__)
    x = torch.randn(2, 1, 8, 8)
    for kind in ("spos", "darts"):
        sn = op_supernet(kind, x[:1])
        print(kind, sn.choices(), sum(p.numel() for p in sn.model_params()), "weights")
    for arch in (random_arch(0), ("skip",) * NUM_CELLS):
        net = fixed_net(arch)
        print(arch, tuple(net(x).shape), sum(p.numel() for p in net.parameters()), "weights")
