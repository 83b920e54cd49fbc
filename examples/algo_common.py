"""Pieces the algorithm examples on digits share (``autoslim_digits.py``,
``dmcp_digits.py``, ``dcff_digits.py``): a held-out part of the training split for
choosing subnets, a training loop around ``algo.train_step``, and FLOPs of a frozen
subnet as ``fxrazor.estimate`` counts them.

The held-out part is a fixed function of the training split (the same images for every
seed), so a search never looks at the test images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import digits_common as dc
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Holdout", "calibration_batches", "frozen_flops", "run_steps", "sgd_cosine",
           "split_holdout", "steps_per_epoch"]

Batch = tuple[torch.Tensor, torch.Tensor]
Holdout = tuple[dc.Digits, torch.Tensor, torch.Tensor]


def split_holdout(data: dc.Digits, fraction: float = 0.2) -> Holdout:
    """``(fit, x_val, y_val)``: ``fraction`` of the training images, drawn once with a
    fixed generator, held out for scoring; ``fit`` keeps the rest and the test images."""
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))
    n_val = max(1, round(fraction * len(order)))
    val, fit = order[:n_val], order[n_val:]
    return (dc.Digits(data.x_train[fit], data.y_train[fit], data.x_test, data.y_test),
            data.x_train[val], data.y_train[val])


def sgd_cosine(params: Any, lr: float, total_steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD (momentum 0.9, weight decay 5e-4) with a cosine schedule to 0 over
    ``total_steps``: the recipe of ``digits_common.train``."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))


def steps_per_epoch(data: dc.Digits, batch_size: int) -> int:
    return -(-len(data.x_train) // batch_size)


def run_steps(step: Callable[[Batch], dict[str, float]], data: dc.Digits, *, epochs: int,
              seed: int, batch_size: int = 64,
              schedulers: tuple[torch.optim.lr_scheduler.LRScheduler, ...] = ()
              ) -> list[dict[str, float]]:
    """Call ``step(batch)`` (an algorithm's ``train_step`` with its optimizers) on every
    batch of ``epochs`` epochs (``digits_common.batches``' seeded order), stepping the
    schedulers after each; the mean losses of each epoch."""
    history = []
    for epoch in range(epochs):
        sums: dict[str, float] = {}
        count = 0
        for batch in dc.batches(data.x_train, data.y_train, batch_size, seed, epoch):
            for key, value in step(batch).items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            for sched in schedulers:
                sched.step()
        history.append({k: v / count for k, v in sums.items()})
    return history


def calibration_batches(data: dc.Digits, batch_size: int = 64) -> Iterator[Batch]:
    """The fit images in order (no shuffle): what ``calibrate_bn`` runs."""
    return dc.batches(data.x_train, data.y_train, batch_size, shuffle=False)


def frozen_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one run of ``model`` on ``example`` (``FlopCounterMode``'s count, which
    ``fxrazor.estimate`` reproduces for a supernet)."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    with torch.no_grad(), counter:
        model.eval()(example)
    model.train(was_training)
    return int(counter.get_total_flops())
