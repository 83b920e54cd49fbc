"""SPOS on digits: train a one-shot supernet, search it by evolution, retrain the winner
from scratch and compare it with random architectures of the same space.

The space is ``digits_nas_space``'s: four cells, each one of conv3x3, conv5x5, sep3x3,
maxpool, skip (625 architectures). For each seed:

1. split the training images (never the test ones) into 80% to train the supernet and a
   held-out 20% to score subnets (a fixed permutation, seed 0);
2. train the supernet with ``fxrazor.algorithms.SPOS``: one uniformly drawn path per
   step (SGD, momentum 0.9, lr 0.05, cosine schedule);
3. ``algo.search``: evolution search, a subnet's score its held-out accuracy after
   recalibrating BatchNorm on 8 training batches (``fxrazor.search.calibrate_bn``);
4. ``algo.export()`` the best subnet (checked: the frozen network computes what the
   supernet computes at those choices), then train its architecture from scratch on
   all training images for the fixed budget and measure test accuracy;
5. the yardstick: ``NUM_RANDOM`` (10) random architectures trained with the same budget
   (``digits_nas_space.random_baseline``, the same for every seed and for
   ``darts_digits.py``), and how well the supernet ranked them (Kendall's tau between
   their supernet scores and their retrained test accuracies).

It prints one ``RESULT`` line per seed and ``OK`` when every export matched.

Run: ``python examples/spos_digits.py --smoke`` (seconds), or ``--full --seeds 0 1 2``
(the numbers in docs/results.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_common as dc  # noqa: E402
import digits_nas_space as space  # noqa: E402

from fxrazor.algorithms import SPOS  # noqa: E402
from fxrazor.search import calibrate_bn  # noqa: E402

LR, BATCH, CALIBRATION_BATCHES = 0.05, 64, 8
SEARCH = {  # evolution_search's options: full, smoke
    False: {"population_size": 20, "max_generations": 10, "num_mutation": 10,
            "num_crossover": 10, "top_k": 5, "mutate_prob": 0.25},
    True: {"population_size": 4, "max_generations": 1, "num_mutation": 2,
           "num_crossover": 2, "top_k": 2, "mutate_prob": 0.25},
}


def train_supernet(algo: SPOS, part: dc.Digits, epochs: int, seed: int) -> list[float]:
    """SPOS steps over ``part``'s images; the mean loss of each epoch."""
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=LR, momentum=0.9,
                          weight_decay=5e-4)
    per_epoch = -(-len(part.x_train) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * per_epoch)
    losses = []
    for epoch in range(epochs):
        total = []
        for batch in dc.batches(part.x_train, part.y_train, BATCH, seed, epoch):
            total.append(algo.train_step(batch, opt)["loss"])
            sched.step()
        losses.append(sum(total) / len(total))
    return losses


class Scorer:
    """``choices -> held-out accuracy`` of the supernet at those choices, BatchNorm
    recalibrated on training batches first; memoised by architecture."""

    def __init__(self, algo: SPOS, part: dc.Digits, held: dc.Digits) -> None:
        self.sn, self.part, self.held = algo.supernet, part, held
        self.memo: dict[space.Arch, float] = {}

    def __call__(self, choices: dict[str, Any]) -> float:
        arch = space.arch_of(choices)
        if arch not in self.memo:
            before = self.sn.choices()
            self.sn.set_choices(choices)
            calibrate_bn(self.sn, dc.batches(self.part.x_train, self.part.y_train, BATCH),
                         CALIBRATION_BATCHES)
            self.memo[arch] = dc.accuracy(self.sn, self.held.x_train, self.held.y_train)
            self.sn.set_choices(before)
        return self.memo[arch]


def export_matches(algo: SPOS, x: torch.Tensor) -> bool:
    """The exported (frozen) subnet computes what the supernet computes at its choices."""
    frozen = algo.export().eval()
    algo.supernet.eval()
    with torch.no_grad():
        return torch.allclose(frozen(x), algo.supernet(x), rtol=1e-5, atol=1e-6)


def run(data: dc.Digits, seed: int, args: Any, baseline: list[tuple[space.Arch, float]]
        ) -> tuple[dict[str, Any], bool]:
    """One seed: steps 1-4 of the module doc, and the supernet's ranking of the baseline."""
    part, held = space.split_train(data, held_out=0.2)
    dc.seed_everything(seed)
    algo = SPOS(space.op_supernet("spos", data.example_input), seed=seed)
    losses = train_supernet(algo, part, dc.epochs(args, full=40, default=10), seed)
    score = Scorer(algo, part, held)
    found = algo.search(score, **SEARCH[bool(args.smoke)])
    arch = space.arch_of(algo.supernet.choices())
    scored = len(score.memo)
    # the exported subnet holds the supernet's weights (BN last calibrated for it)
    score.memo.pop(arch)
    score(space.choices_of(arch))
    ok = export_matches(algo, data.x_test[:64])
    tau = kendalltau([score(space.choices_of(a)) for a, _ in baseline],
                     [acc for _, acc in baseline]).statistic
    test = space.retrain(arch, data, space.retrain_epochs(args), seed)
    return {"arch": "/".join(arch), "supernet_loss": f"{losses[-1]:.4f}",
            "held_out": f"{found.scores[0]:.4f}", "scored": scored, "test": f"{test:.4f}",
            "tau": f"{tau:.3f}"}, ok


def main() -> int:
    args = dc.parse_args(__doc__, extra=space.add_options)
    data = dc.load_digits_split(smoke=args.smoke)
    epochs = space.retrain_epochs(args)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, retrain "
          f"{epochs} epochs, seeds {args.seeds}, {torch.get_num_threads()} thread(s)")
    with dc.stopwatch() as t:
        baseline = space.random_baseline(data, epochs, args.baseline_cache)
    print(f"random baseline: {len(baseline)} architectures ({t.seconds:.1f} s)")
    ok, searched = True, []
    for seed in args.seeds:
        with dc.stopwatch() as t:
            row, matched = run(data, seed, args, baseline)
        ok &= matched
        searched.append(float(row["test"]))
        print(f"RESULT algo=spos seed={seed} " + " ".join(f"{k}={v}" for k, v in row.items())
              + f" seconds={t.seconds:.1f}")
    space.compare(searched, baseline)
    if not ok:
        print("FAIL: an exported subnet differs from the supernet at its choices")
        return 1
    print("OK: every exported subnet computes what the supernet computes at its choices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
