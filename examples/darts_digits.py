"""DARTS on digits: search the architecture weights on half of the training images,
export the argmax architecture, retrain it from scratch and compare it with random
architectures of the same space.

The space is ``digits_nas_space``'s: four cells, each the softmax(alpha)-weighted sum of
conv3x3, conv5x5, sep3x3, maxpool, skip (``DiffMutableOP``; 625 architectures once each
cell takes its argmax). For each seed and order (first; second with ``--unrolled``):

1. split the training images (never the test ones) in halves (a fixed permutation,
   seed 0): the weights train on one, the architecture parameters on the other;
2. ``fxrazor.algorithms.DARTS``: per step an architecture step on a batch of the second
   half (Adam, lr 3e-3, betas (0.5, 0.999), weight decay 1e-3), then a weight step on a
   batch of the first (SGD, momentum 0.9, lr 0.05, cosine schedule);
3. ``algo.export()``: every cell at its most probable op (checked: the frozen cells are
   exactly the ops of the argmax of the architecture parameters);
4. train that architecture from scratch on all training images for the fixed budget and
   measure test accuracy; the yardstick is ``digits_nas_space.random_baseline``: 10
   random architectures with the same budget (the same as ``spos_digits.py``'s).

It prints one ``RESULT`` line per seed and order (with each cell's op probabilities) and
``OK`` when every export matched its argmax.

Run: ``python examples/darts_digits.py --smoke`` (seconds), or ``--full --seeds 0 1 2``
(first order), ``--second-only`` (second order) or ``--unrolled`` (both): the numbers in
docs/results.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_common as dc  # noqa: E402
import digits_nas_space as space  # noqa: E402

from fxrazor.algorithms import DARTS  # noqa: E402
from fxrazor.algorithms.darts import argmax_choices  # noqa: E402

LR, ARCH_LR, BATCH = 0.05, 3e-3, 64


def search(algo: DARTS, weights_half: dc.Digits, arch_half: dc.Digits, epochs: int,
           seed: int) -> list[float]:
    """DARTS steps: each weight batch of ``weights_half`` paired with a batch of
    ``arch_half`` (its own order); the mean training loss of each epoch."""
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=LR, momentum=0.9,
                          weight_decay=5e-4)
    arch_opt = torch.optim.Adam(algo.arch_parameters(), lr=ARCH_LR, betas=(0.5, 0.999),
                                weight_decay=1e-3)
    per_epoch = -(-len(weights_half.x_train) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    losses = []
    for epoch in range(epochs):
        total = []
        val = dc.batches(arch_half.x_train, arch_half.y_train, BATCH, seed + 1, epoch)
        for batch, val_batch in zip(
                dc.batches(weights_half.x_train, weights_half.y_train, BATCH, seed, epoch),
                val, strict=False):
            total.append(algo.train_step(batch, opt, val_batch=val_batch,
                                         arch_optimizer=arch_opt)["loss"])
            sched.step()
        losses.append(sum(total) / len(total))
    return losses


def probabilities(algo: DARTS) -> list[list[float]]:
    """Each cell's softmax(alpha), in the order of ``space.OPS``."""
    params = algo.supernet.arch_params()
    return [torch.softmax(params[f"cells:{i}"].detach(), 0).tolist()
            for i in range(space.NUM_CELLS)]


def export_is_argmax(algo: DARTS) -> tuple[space.Arch, bool]:
    """The argmax architecture, and whether ``algo.export()``'s cells are exactly its
    ops (compared by their printed structure)."""
    arch = space.arch_of(argmax_choices(algo))
    by_hand = tuple(list(space.OPS)[max(range(len(p)), key=p.__getitem__)]
                    for p in probabilities(algo))
    frozen = algo.export()
    cells = [_layers(frozen.get_submodule(f"cells.{i}")) for i in range(space.NUM_CELLS)]
    expected = [_layers(space.OPS[op](space.WIDTH)) for op in arch]
    return arch, arch == by_hand and cells == expected


def _layers(module: torch.nn.Module) -> list[str]:
    """The printed leaf layers (a frozen ``Sequential`` is a ``GraphModule``)."""
    return [repr(m) for m in module.modules() if not list(m.children())]


def run(data: dc.Digits, seed: int, unrolled: bool, args: Any) -> tuple[dict[str, Any], bool]:
    """One seed and order: steps 1-4 of the module doc."""
    weights_half, arch_half = space.split_train(data, held_out=0.5)
    dc.seed_everything(seed)
    algo = DARTS(space.op_supernet("darts", data.example_input), unrolled=unrolled,
                 seed=seed)
    losses = search(algo, weights_half, arch_half, dc.epochs(args, full=30, default=10),
                    seed)
    arch, ok = export_is_argmax(algo)
    probs = ";".join(",".join(f"{p:.2f}" for p in cell) for cell in probabilities(algo))
    test = space.retrain(arch, data, space.retrain_epochs(args), seed)
    return {"arch": "/".join(arch), "search_loss": f"{losses[-1]:.4f}", "test": f"{test:.4f}",
            "probs": probs}, ok


def main() -> int:
    def options(parser: Any) -> None:
        space.add_options(parser)
        parser.add_argument("--unrolled", action="store_true",
                            help="also run second-order DARTS for every seed")
        parser.add_argument("--second-only", action="store_true",
                            help="run second-order DARTS only")

    args = dc.parse_args(__doc__, extra=options)
    data = dc.load_digits_split(smoke=args.smoke)
    epochs = space.retrain_epochs(args)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, retrain "
          f"{epochs} epochs, seeds {args.seeds}, {torch.get_num_threads()} thread(s); "
          f"op order {'/'.join(space.OPS)}")
    with dc.stopwatch() as t:
        baseline = space.random_baseline(data, epochs, args.baseline_cache)
    print(f"random baseline: {len(baseline)} architectures ({t.seconds:.1f} s)")
    ok, searched = True, {}
    orders = (True,) if args.second_only else (False, True) if args.unrolled else (False,)
    for unrolled in orders:
        order = "second" if unrolled else "first"
        for seed in args.seeds:
            with dc.stopwatch() as t:
                row, matched = run(data, seed, unrolled, args)
            ok &= matched
            searched.setdefault(order, []).append(float(row["test"]))
            print(f"RESULT algo=darts order={order} seed={seed} "
                  + " ".join(f"{k}={v}" for k, v in row.items()) + f" seconds={t.seconds:.1f}")
    for order, accs in searched.items():
        print(f"{order} order:")
        space.compare(accs, baseline)
    if not ok:
        print("FAIL: an exported architecture is not the argmax of its alphas")
        return 1
    print("OK: every exported architecture is the argmax of its architecture parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
