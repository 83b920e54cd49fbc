"""DMCP on digits: differentiable Markov channel pruning towards half the FLOPs, the
exported subnet fine-tuned, against the unpruned model trained for the same epochs.

For each model (``digits_common``'s small CNN by default) and seed:

1. ``DMCP(model, target_flops=0.5)`` with units of 16 channel groups each
   (``pruning_cfg=(0.0625, 1.0, 0.0625)``: the library default, groups of 5%, gives a
   16-channel unit no group of one whole channel); train it ``epochs`` epochs: the
   weights on the max, min, random and direct subnets (SGD, cosine schedule), and, from
   the first third of the epochs on, the arch params (Adam) on the expected forward's
   loss plus the FLOPs loss;
2. ``algo.export()``: the subnet at the units' expected widths, frozen; its FLOPs ratio
   (``FlopCounterMode`` on the frozen subnet over the unpruned model's; DMCP's own count,
   ``algo.subnet_flops() / algo.full_flops``, next to it) and test accuracy as exported;
3. fine-tune the frozen subnet ``epochs`` epochs with cross-entropy (SGD, lr 0.01);
4. the unpruned model trained ``2 * epochs`` epochs (the same budget as steps 1 and 3).

It prints one ``RESULT`` line per model and seed, a table, and ``OK`` when every
exported subnet's FLOPs ratio lies within 5% of the target (0.475 to 0.525); under
``--smoke`` (one epoch: too few arch steps to reach the target) a miss is reported, not
failed. The arch params start at zero (every transition 0.5), so the expected width
starts near the units' minimum and the FLOPs loss pulls it up to the target.

Run: ``python examples/dmcp_digits.py --smoke`` (seconds), or ``--full --seeds 0 1 2``
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

from fxrazor.algorithms import DMCP  # noqa: E402
from fxrazor.mutables.dmcp_flops import expected_flops  # noqa: E402

MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": dc.small_cnn, "resnet": dc.small_resnet}
LR, FINETUNE_LR, ARCH_LR, BATCH = 0.05, 0.01, 0.05, 64
TARGET, TOLERANCE = 0.5, 0.05
PRUNING_CFG = (0.0625, 1.0, 0.0625)


def train_dmcp(name: str, data: dc.Digits, epochs: int, seed: int) -> DMCP:
    """DMCP's training of model ``name`` (weights and, after a third, the arch params)."""
    dc.seed_everything(seed)
    per_epoch = ac.steps_per_epoch(data, BATCH)
    algo = DMCP(MODELS[name](), data.example_input, target_flops=TARGET, seed=seed,
                arch_start_step=(epochs // 3) * per_epoch,
                unit_args={"pruning_cfg": PRUNING_CFG})
    opt, sched = ac.sgd_cosine(algo.supernet.model_params(), LR, epochs * per_epoch)
    arch_opt = torch.optim.Adam(algo.arch_parameters(), lr=ARCH_LR)
    ac.run_steps(lambda b: algo.train_step(b, opt, arch_optimizer=arch_opt), data,
                 epochs=epochs, seed=seed, batch_size=BATCH, schedulers=(sched,))
    return algo


def finetune(model: nn.Module, data: dc.Digits, epochs: int, seed: int) -> nn.Module:
    """Cross-entropy fine-tuning (``digits_common.train``, lr 0.01) in place."""
    dc.train(model, data, epochs=epochs, lr=FINETUNE_LR, seed=seed, batch_size=BATCH)
    return model


def run(name: str, data: dc.Digits, epochs: int, seed: int) -> dict[str, float]:
    """One model and seed: the module doc's steps."""

    def acc(m: nn.Module) -> float:
        return dc.accuracy(m, data.x_test, data.y_test)

    dc.seed_everything(seed)
    unpruned = MODELS[name]()
    full = ac.frozen_flops(unpruned, data.example_input)
    dc.train(unpruned, data, epochs=2 * epochs, lr=LR, seed=seed, batch_size=BATCH)
    algo = train_dmcp(name, data, epochs, seed)
    frozen = algo.export()
    row = {"unpruned": acc(unpruned),
           "ratio": ac.frozen_flops(frozen, data.example_input) / full,
           "dmcp_ratio": algo.subnet_flops() / algo.full_flops,
           "expected_ratio": _expected_flops(algo) / algo.full_flops,
           "exported": acc(frozen)}
    row["finetuned"] = acc(finetune(frozen, data, epochs, seed))
    print(f"DMCP widths model={name} seed={seed}: " + " ".join(
        f"{u.name}={u.activated_channels}/{u.num_channels}" for u in algo.dmcp_units()))
    return row


def _expected_flops(algo: DMCP) -> float:
    """E[FLOPs] under the units' chains, as DMCP's FLOPs loss sees it."""
    with torch.no_grad():
        return float(expected_flops(algo.supernet))


def main() -> int:
    args = dc.parse_args(__doc__, extra=lambda p: p.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=["cnn"]))
    data = dc.load_digits_split(smoke=args.smoke)
    epochs = dc.epochs(args, full=15, default=5)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, DMCP "
          f"{epochs} + fine-tune {epochs} epochs (unpruned: {2 * epochs}), seeds "
          f"{args.seeds}, {torch.get_num_threads()} thread(s)")
    rows: dict[str, list[dict[str, float]]] = {}
    ok = True
    for name in args.models:
        for seed in args.seeds:
            with dc.stopwatch() as t:
                row = run(name, data, epochs, seed)
            rows.setdefault(name, []).append(row)
            ok &= abs(row["ratio"] / TARGET - 1) <= TOLERANCE
            print(f"RESULT model={name} seed={seed} " + " ".join(
                f"{k}={v:.4f}" for k, v in row.items()) + f" seconds={t.seconds:.1f}")
    keys = list(next(iter(rows.values()))[0])
    table = [[name, len(runs), *(_spread([r[k] for r in runs]) for k in keys)]
             for name, runs in rows.items()]
    print(tabulate(table, headers=["model", "seeds", *keys]))
    if not ok and args.smoke:
        print(f"SMOKE: a FLOPs ratio lies outside {TARGET} ± {TOLERANCE:.0%}; not judged "
              f"(one epoch is too few arch steps to reach the target)")
        return 0
    if not ok:
        print(f"FAIL: an exported subnet's FLOPs ratio lies outside {TARGET} ± {TOLERANCE:.0%}")
        return 1
    print(f"OK: every exported subnet's FLOPs ratio lies within {TOLERANCE:.0%} of {TARGET}")
    return 0


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.4f}" if len(values) == 1 else \
        f"{mean:.4f} ± {statistics.stdev(values):.4f}"


if __name__ == "__main__":
    sys.exit(main())
