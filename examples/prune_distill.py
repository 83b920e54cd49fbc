"""Pruning baselines on digits: L1 pruning to half the FLOPs, fine-tuned with and without
knowledge distillation from the unpruned model.

For each model (the small CNN and the small ResNet of ``digits_common``) and each seed:

1. train the unpruned model (SGD, cosine schedule); record its test accuracy and FLOPs
   (``fxrazor.estimate``);
2. convert it with ``unit="l1"``, ``prune(sn, {"flops": 0.5})`` (channels ranked by the L1
   norm of their weights, one global threshold, then channels given back by score while
   the FLOPs stay within half) and ``fxrazor.freeze`` the subnet;
3. fine-tune copies of the frozen subnet for the same number of epochs, with the same
   optimizer, schedule and batch order (``fxrazor.distill.finetune``), on
   (a) ``ce``: cross-entropy alone (``kd_weight=0``),
   (b) ``kd``: ``0.1 * cross-entropy + 0.9 * KD`` (temperature 4) from the unpruned model,
   (c) ``kd+feat``: (b) plus an MSE between the last feature maps, through a 1x1-conv
       connector (the pruned map is narrower);
4. the recipe "prune, distill, prune again": convert the KD student, prune it to half its
   FLOPs again (a quarter of the original) and distill once more from the unpruned model.

It prints one ``RESULT`` line per model and seed, a summary table (mean and spread over
the seeds), and ``OK`` when every pruned subnet has 0.49 to 0.50 of its model's FLOPs.

Run: ``python examples/prune_distill.py --smoke`` (seconds), or ``--full --seeds 0 1 2``
(the numbers in docs/results.md).
"""

from __future__ import annotations

import copy
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_common as dc  # noqa: E402

import fxrazor  # noqa: E402
from fxrazor.distill import finetune  # noqa: E402
from fxrazor.pruning import prune  # noqa: E402

MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": dc.small_cnn, "resnet": dc.small_resnet}
# the last feature map of each model: the pair of the feature-distillation run
FEATURES = {"cnn": "features.3.2", "resnet": "layers.1.relu2"}
LR, FINETUNE_LR, BATCH = 0.05, 0.01, 64
KD_WEIGHT, TEMPERATURE = 0.9, 4.0


def pruned_copy(model: nn.Module, example: torch.Tensor, fraction: float
                ) -> tuple[torch.fx.GraphModule, float]:
    """The frozen L1-pruned subnet with at most ``fraction`` of ``model``'s FLOPs, and its
    FLOPs ratio."""
    sn = fxrazor.convert(model, example, unit="l1")
    full = fxrazor.estimate(sn, sn.sample_choices("max"))["flops"]
    prune(sn, {"flops": fraction}, importance="l1")
    return fxrazor.freeze(sn), fxrazor.estimate(sn)["flops"] / full


def tune(student: nn.Module, teacher: nn.Module, data: dc.Digits, epochs: int, seed: int,
         kd_weight: float, feature: str | None = None) -> nn.Module:
    """Fine-tune a copy of ``student``: SGD (momentum 0.9), cosine schedule over all
    batches, the batch order of ``seed``; ``kd_weight=0`` is plain cross-entropy."""
    student = copy.deepcopy(student)
    torch.manual_seed(seed)  # the connector's initial weights
    opt = torch.optim.SGD(student.parameters(), lr=FINETUNE_LR, momentum=0.9,
                          weight_decay=5e-4)
    steps = epochs * -(-len(data.x_train) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    finetune(student, teacher, dc.loader(data, BATCH, seed), epochs=epochs, optimizer=opt,
             scheduler=sched, kd_weight=kd_weight, temperature=TEMPERATURE,
             feature_pairs={feature: feature} if feature else None)
    return student


def run(name: str, data: dc.Digits, epochs: int, seed: int) -> dict[str, float]:
    """One model and seed: every accuracy and ratio of the module doc's steps."""
    dc.seed_everything(seed)
    model = MODELS[name]()
    dc.train(model, data, epochs=epochs, lr=LR, seed=seed, batch_size=BATCH)
    model.eval()

    def acc(m: nn.Module) -> float:
        return dc.accuracy(m, data.x_test, data.y_test)

    frozen, ratio = pruned_copy(model, data.example_input, 0.5)
    row = {"base": acc(model), "flops_ratio": ratio, "pruned": acc(frozen)}
    row["ce"] = acc(tune(frozen, model, data, epochs, seed, kd_weight=0.0))
    kd_student = tune(frozen, model, data, epochs, seed, kd_weight=KD_WEIGHT)
    row["kd"] = acc(kd_student)
    row["kd+feat"] = acc(tune(frozen, model, data, epochs, seed, KD_WEIGHT, FEATURES[name]))
    again, ratio2 = pruned_copy(kd_student, data.example_input, 0.5)
    row["again_ratio"] = ratio * ratio2
    row["again_pruned"] = acc(again)
    row["again_kd"] = acc(tune(again, model, data, epochs, seed, kd_weight=KD_WEIGHT))
    return row


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def main() -> int:
    args = dc.parse_args(__doc__, extra=lambda p: p.add_argument(
        "--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS)))
    data = dc.load_digits_split(smoke=args.smoke)
    epochs = dc.epochs(args, full=15, default=5)
    print(f"digits: {len(data.x_train)} train / {len(data.x_test)} test images, "
          f"{epochs} epochs, seeds {args.seeds}, {torch.get_num_threads()} thread(s)")
    rows: dict[str, list[dict[str, float]]] = {}
    ok = True
    for name in args.models:
        for seed in args.seeds:
            with dc.stopwatch() as t:
                row = run(name, data, epochs, seed)
            rows.setdefault(name, []).append(row)
            ok &= 0.49 <= row["flops_ratio"] <= 0.50
            print(f"RESULT model={name} seed={seed} " + " ".join(
                f"{k}={v:.4f}" for k, v in row.items()) + f" seconds={t.seconds:.1f}")
    keys = list(next(iter(rows.values()))[0])
    table = [[name, len(runs), *(spread([r[k] for r in runs]) for k in keys)]
             for name, runs in rows.items()]
    print(tabulate(table, headers=["model", "seeds", *keys]))
    if not ok:
        print("FAIL: a pruned subnet's FLOPs ratio lies outside [0.49, 0.50]")
        return 1
    print("OK: every pruned subnet has 0.49-0.50 of its model's FLOPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
