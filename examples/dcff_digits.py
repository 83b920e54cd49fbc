"""DCFF on digits: a compact network trained by dynamic-coded filter fusion at about half
the FLOPs, against the unpruned model and against L1 pruning plus fine-tuning.

For each model (``digits_common``'s small CNN by default) and seed:

1. the unpruned model, trained ``epochs`` epochs (SGD, lr 0.05, cosine schedule);
2. the L1 baseline, as ``prune_distill.py`` makes it: the unpruned model L1-pruned to
   half its FLOPs (channels given back while the FLOPs stay within half), frozen, and
   fine-tuned ``epochs`` epochs with cross-entropy (lr 0.01): ``2 * epochs`` in all;
3. DCFF from scratch for the same ``2 * epochs`` epochs: every unit at one width ratio,
   the largest ratio (steps of 0.01) whose frozen subnet has at most half the FLOPs;
   the fusion temperature follows DCFF's per-epoch schedule (``step_freq`` = the steps
   of an epoch); ``algo.export()`` freezes the fused filters into plain convs;
4. the control: the plain model at DCFF's widths (``width`` = the first conv's kept
   channels: the same channels and FLOPs) trained from scratch the same ``2 * epochs``
   epochs with cross-entropy, as the unpruned model.

FLOPs are ``FlopCounterMode``'s count on the frozen subnets (``fxrazor.estimate`` does
not model DCFF's fused convs). It prints one ``RESULT`` line per model and seed, a
table, and ``OK`` when every DCFF subnet and L1 subnet has at most half the FLOPs.

Run: ``python examples/dcff_digits.py --smoke`` (seconds), or ``--full --seeds 0 1 2``
(the numbers in docs/results.md).
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import algo_common as ac  # noqa: E402
import digits_common as dc  # noqa: E402
from prune_distill import pruned_copy, tune  # noqa: E402

from fxrazor.algorithms import DCFF  # noqa: E402

MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": dc.small_cnn, "resnet": dc.small_resnet}
LR, BATCH, BUDGET = 0.05, 64, 0.5


def width_for_budget(name: str, example: torch.Tensor, total_steps: int,
                     step_freq: int) -> tuple[float, float]:
    """The largest width ratio (0.99, 0.98, ...) whose DCFF subnet has at most
    :data:`BUDGET` of the FLOPs, and that subnet's FLOPs ratio."""
    full = ac.frozen_flops(MODELS[name](), example)
    for step in range(99, 0, -1):
        algo = DCFF(MODELS[name](), example, total_steps=total_steps, step_freq=step_freq,
                    target_ratio=step / 100)
        ratio = ac.frozen_flops(algo.export(), example) / full
        if ratio <= BUDGET:
            return step / 100, ratio
    raise RuntimeError("no width ratio meets the budget")


def train_dcff(name: str, data: dc.Digits, epochs: int, seed: int
               ) -> tuple[nn.Module, float, float]:
    """DCFF trained ``epochs`` epochs from scratch; the frozen subnet, its width ratio and
    its FLOPs ratio."""
    per_epoch = ac.steps_per_epoch(data, BATCH)
    total = epochs * per_epoch
    width, ratio = width_for_budget(name, data.example_input, total, per_epoch)
    dc.seed_everything(seed)
    algo = DCFF(MODELS[name](), data.example_input, total_steps=total, step_freq=per_epoch,
                target_ratio=width, seed=seed)
    opt, sched = ac.sgd_cosine(algo.supernet.model_params(), LR, total)
    ac.run_steps(lambda b: algo.train_step(b, opt), data, epochs=epochs, seed=seed,
                 batch_size=BATCH, schedulers=(sched,))
    return algo.export(), width, ratio


def run(name: str, data: dc.Digits, epochs: int, seed: int) -> dict[str, float]:
    """One model and seed: the module doc's steps."""

    def acc(m: nn.Module) -> float:
        return dc.accuracy(m, data.x_test, data.y_test)

    dc.seed_everything(seed)
    model = MODELS[name]()
    dc.train(model, data, epochs=epochs, lr=LR, seed=seed, batch_size=BATCH)
    model.eval()
    frozen, l1_ratio = pruned_copy(model, data.example_input, BUDGET)
    row = {"unpruned": acc(model), "l1_ratio": l1_ratio,
           "l1_ce": acc(tune(frozen, model, data, epochs, seed, kd_weight=0.0))}
    dcff, width, ratio = train_dcff(name, data, 2 * epochs, seed)
    row.update({"dcff_width": width, "dcff_ratio": ratio, "dcff": acc(dcff)})
    dc.seed_everything(seed)
    first_conv = next(m for m in dcff.modules() if isinstance(m, nn.Conv2d))
    scratch = MODELS[name](width=first_conv.out_channels)
    row["scratch_ratio"] = ac.frozen_flops(scratch, data.example_input) / ac.frozen_flops(
        model, data.example_input)
    dc.train(scratch, data, epochs=2 * epochs, lr=LR, seed=seed, batch_size=BATCH)
    row["scratch"] = acc(scratch)
    return row


def main() -> int:
    args = dc.parse_args(__doc__, extra=lambda p: p.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=["cnn"]))
    data = dc.load_digits_split(smoke=args.smoke)
    epochs = dc.epochs(args, full=15, default=5)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images; unpruned "
          f"{epochs} epochs, L1 {epochs} + fine-tune {epochs}, DCFF {2 * epochs}; seeds "
          f"{args.seeds}, {torch.get_num_threads()} thread(s)")
    rows: dict[str, list[dict[str, float]]] = {}
    ok = True
    for name in args.models:
        for seed in args.seeds:
            with dc.stopwatch() as t:
                row = run(name, data, epochs, seed)
            rows.setdefault(name, []).append(row)
            ok &= row["dcff_ratio"] <= BUDGET and row["l1_ratio"] <= BUDGET
            print(f"RESULT model={name} seed={seed} " + " ".join(
                f"{k}={v:.4f}" for k, v in row.items()) + f" seconds={t.seconds:.1f}")
    keys = list(next(iter(rows.values()))[0])
    table = [[name, len(runs), *(_spread([r[k] for r in runs]) for k in keys)]
             for name, runs in rows.items()]
    print(tabulate(table, headers=["model", "seeds", *keys]))
    if not ok:
        print("FAIL: a pruned subnet has more than half its model's FLOPs")
        return 1
    print("OK: every DCFF and L1 subnet has at most 0.50 of its model's FLOPs")
    return 0


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.4f}" if len(values) == 1 else \
        f"{mean:.4f} ± {statistics.stdev(values):.4f}"


if __name__ == "__main__":
    sys.exit(main())
