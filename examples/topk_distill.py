"""Prune, distill, prune again with top-K candidates: an evolution search at half the
FLOPs keeps K=3 candidates, each is distilled briefly, the best on held-out images is
distilled to the end; then the same again at a quarter of the FLOPs.

For the small CNN of ``digits_common`` and each seed:

1. hold out a fixed 20% of the training split (``algo_common.split_holdout``): every
   choice between subnets is made on it, never on the test images; all training below
   uses the other 80% ("fit");
2. train the unpruned model on fit (SGD, cosine schedule; ``prune_distill``'s recipe);
3. convert it with ``unit="l1"`` (a unit's first n channels by the L1 norm of their
   weights) and run ``evolution_search(sn, score, {"flops": 0.5 * full_flops})``, where
   ``score`` is held-out accuracy after ``calibrate_bn`` over the fit images;
4. take the top K=3 candidates (best first), recalibrate and freeze each, and start each
   on the KD fine-tuning of ``prune_distill`` (``0.1 * CE + 0.9 * KD``, temperature 4,
   the unpruned model as teacher, SGD lr 0.01 with a cosine schedule over all 15 epochs);
   after the first 2 epochs, keep the candidate with the best held-out accuracy (ties: the
   better search rank) and run its remaining 13 epochs (the same 15-epoch run, only
   chosen at epoch 2: K * 2 + 13 epochs of fine-tuning in all);
5. for reference, in the same run: the search's top-1 candidate carried through all 15
   epochs (no choice after the brief distillation) and ``prune_distill``'s single L1
   subnet (``prune(sn, {"flops": 0.5})``) distilled 15 epochs with the same recipe;
6. prune again: steps 3-5 from the selected, distilled model (convert, search under a
   quarter of the *unpruned* model's FLOPs, top K, 2 epochs, select, 13 more); the
   teacher stays the unpruned model (as in ``prune_distill``, so the two "again" numbers
   compare); the L1 reference prunes its own KD student to half again.

It prints one ``RESULT`` line per seed, a ``candidates`` line per search, a table (mean
and spread over the seeds), and ``OK`` when every top-K candidate has at most 0.50 (first
search) and 0.25 (second) of the unpruned model's FLOPs.

Run: ``python examples/topk_distill.py --smoke`` (seconds), or ``--full --seeds 0 1 2``
(the numbers in docs/results.md).
"""

from __future__ import annotations

import copy
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import algo_common as ac  # noqa: E402
import digits_common as dc  # noqa: E402
import prune_distill as pd  # noqa: E402

import fxrazor  # noqa: E402
from fxrazor.distill import finetune  # noqa: E402
from fxrazor.search import calibrate_bn, evolution_search  # noqa: E402

K, BRIEF_EPOCHS = 3, 2
SEARCH = {  # evolution_search's options: full, smoke
    False: {"population_size": 16, "max_generations": 6, "num_mutation": 8,
            "num_crossover": 8, "top_k": 8, "mutate_prob": 0.25},
    True: {"population_size": 4, "max_generations": 1, "num_mutation": 2,
           "num_crossover": 2, "top_k": K, "mutate_prob": 0.25},
}
SUMMARY = ["base", "top1_pruned", "top1_kd", "sel_kd", "l1_kd", "again_top1_kd",
           "again_sel_kd", "again_l1_kd"]


@dataclass
class Tuning:
    """A student part-way through one KD fine-tuning run: its optimizer and schedule
    span the whole run, so running it in pieces is the same as running it at once."""

    student: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    done: int = 0


def start(student: nn.Module, fit: dc.Digits, epochs: int, seed: int) -> Tuning:
    """A copy of ``student`` with ``prune_distill.tune``'s optimizer and schedule over
    ``epochs`` epochs; nothing run yet."""
    student = copy.deepcopy(student)
    torch.manual_seed(seed)
    opt, sched = ac.sgd_cosine(student.parameters(), pd.FINETUNE_LR,
                               epochs * ac.steps_per_epoch(fit, pd.BATCH))
    return Tuning(student, opt, sched)


def advance(run: Tuning, teacher: nn.Module, fit: dc.Digits, epochs: int, seed: int
            ) -> nn.Module:
    """Run ``epochs`` more epochs of KD from ``teacher`` (the batch order of the epochs
    ``run.done`` onwards); the student."""
    if epochs > 0:
        offset = run.done
        finetune(run.student, teacher,
                 lambda e: dc.batches(fit.x_train, fit.y_train, pd.BATCH, seed, e + offset),
                 epochs=epochs, optimizer=run.opt, scheduler=run.sched,
                 kd_weight=pd.KD_WEIGHT, temperature=pd.TEMPERATURE)
        run.done += epochs
    return run.student


@dataclass(frozen=True)
class Stage:
    """What one prune step needs: the data, the teacher, the unpruned FLOPs, the run."""

    fit: dc.Digits
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    teacher: nn.Module
    full_flops: float
    epochs: int
    seed: int
    smoke: bool

    def val(self, m: nn.Module) -> float:
        return dc.accuracy(m, self.x_val, self.y_val)

    def test(self, m: nn.Module) -> float:
        return dc.accuracy(m, self.x_test, self.y_test)


def search_topk(source: nn.Module, st: Stage, budget: float
                ) -> tuple[list[nn.Module], list[float], list[float]]:
    """Evolution search on ``source`` (``unit="l1"``) under ``budget`` of the unpruned
    FLOPs; the top K candidates recalibrated and frozen, their FLOPs ratios (to the
    unpruned model) and search scores."""
    sn = fxrazor.convert(source, st.fit.example_input, unit="l1")

    def calibrated(choices: dict[str, Any]) -> fxrazor.Supernet:
        sn.set_choices(choices)
        calibrate_bn(sn, ac.calibration_batches(st.fit))
        return sn

    def score(choices: dict[str, Any]) -> float:
        return st.val(calibrated(choices))

    found = evolution_search(sn, score, {"flops": budget * st.full_flops}, seed=st.seed,
                             **SEARCH[st.smoke])
    tops = found.subnets[:K]
    ratios = [fxrazor.estimate(sn, c)["flops"] / st.full_flops for c in tops]
    frozen = [fxrazor.freeze(calibrated(c)) for c in tops]
    return frozen, ratios, list(found.scores[:K])


def topk_prune(source: nn.Module, st: Stage, budget: float, tag: str
               ) -> tuple[dict[str, float], nn.Module]:
    """Steps 3-4 (and the top-1 reference of 5) from ``source``; the row's numbers and
    the selected, fully distilled student."""
    frozen, ratios, scores = search_topk(source, st, budget)
    runs = [start(f, st.fit, st.epochs, st.seed) for f in frozen]
    brief = min(BRIEF_EPOCHS, st.epochs)
    vals = [st.val(advance(r, st.teacher, st.fit, brief, st.seed)) for r in runs]
    pick = max(range(len(runs)), key=lambda i: (vals[i], -i))
    print(f"candidates {tag} seed={st.seed}: " + " ".join(
        f"[{i}] ratio={r:.4f} search_val={s:.4f} val_after_{brief}ep={v:.4f}"
        for i, (r, s, v) in enumerate(zip(ratios, scores, vals, strict=True))))
    row = {"max_ratio": max(ratios), "top1_ratio": ratios[0],
           "top1_pruned": st.test(frozen[0])}
    row["top1_kd"] = st.test(advance(runs[0], st.teacher, st.fit, st.epochs - brief,
                                     st.seed))
    selected = advance(runs[pick], st.teacher, st.fit, st.epochs - runs[pick].done, st.seed)
    row |= {"sel_rank": float(pick), "sel_ratio": ratios[pick], "sel_kd": st.test(selected)}
    return row, selected


def l1_prune(source: nn.Module, st: Stage, fraction: float) -> tuple[float, nn.Module]:
    """``prune_distill``'s path: the L1 subnet at ``fraction`` of ``source``'s FLOPs,
    distilled all epochs; its FLOPs ratio to ``source`` and the student."""
    frozen, ratio = pd.pruned_copy(source, st.fit.example_input, fraction)
    return ratio, advance(start(frozen, st.fit, st.epochs, st.seed), st.teacher, st.fit,
                          st.epochs, st.seed)


def run(data: dc.Digits, epochs: int, seed: int, smoke: bool) -> dict[str, float]:
    """One seed: the module doc's steps; every accuracy and FLOPs ratio."""
    fit, x_val, y_val = ac.split_holdout(data)
    dc.seed_everything(seed)
    model = dc.small_cnn()
    dc.train(model, fit, epochs=epochs, lr=pd.LR, seed=seed, batch_size=pd.BATCH)
    model.eval()
    full = fxrazor.estimate(fxrazor.convert(model, fit.example_input))["flops"]
    st = Stage(fit, x_val, y_val, data.x_test, data.y_test, model, full, epochs, seed, smoke)
    row = {"base": st.test(model)}
    half, selected = topk_prune(model, st, 0.5, "half")
    row |= half
    row["l1_ratio"], l1_student = l1_prune(model, st, 0.5)
    row["l1_kd"] = st.test(l1_student)
    again, _ = topk_prune(selected, st, 0.25, "quarter")
    row |= {f"again_{k}": v for k, v in again.items()}
    ratio2, l1_again = l1_prune(l1_student, st, 0.5)
    row["again_l1_ratio"] = row["l1_ratio"] * ratio2
    row["again_l1_kd"] = st.test(l1_again)
    return row


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}"


def ratios_ok(row: dict[str, float]) -> bool:
    return (row["max_ratio"] <= 0.5 and row["again_max_ratio"] <= 0.25
            and 0.49 <= row["l1_ratio"] <= 0.5 and row["again_l1_ratio"] <= 0.25)


def main() -> int:
    args = dc.parse_args(__doc__)
    data = dc.load_digits_split(smoke=args.smoke)
    epochs = dc.epochs(args, full=15, default=5)
    print(f"digits: {len(data.x_train)} train (20% held out for choosing subnets) / "
          f"{len(data.x_test)} test images, {epochs} epochs, K={K}, brief "
          f"{min(BRIEF_EPOCHS, epochs)} epochs, seeds {args.seeds}, "
          f"{torch.get_num_threads()} thread(s)")
    rows = []
    ok = True
    for seed in args.seeds:
        with dc.stopwatch() as t:
            row = run(data, epochs, seed, args.smoke)
        rows.append(row)
        ok &= ratios_ok(row)
        print(f"RESULT model=cnn seed={seed} " + " ".join(
            f"{k}={v:.4f}" for k, v in row.items()) + f" seconds={t.seconds:.1f}")
    print(tabulate([[len(rows), *(spread([r[k] for r in rows]) for k in SUMMARY)]],
                   headers=["seeds", *SUMMARY]))
    for stage in ("", "again_"):
        wins = sum(r[f"{stage}sel_kd"] > r[f"{stage}l1_kd"] for r in rows)
        ties = sum(r[f"{stage}sel_kd"] == r[f"{stage}l1_kd"] for r in rows)
        print(f"COMPARE {stage or 'first_'}prune: selected beats the L1 subnet in {wins}, "
              f"ties in {ties}, loses in {len(rows) - wins - ties} of {len(rows)} seeds")
    if not ok:
        print("FAIL: a candidate exceeds its FLOPs budget (0.50, then 0.25)")
        return 1
    print("OK: every top-K candidate has at most 0.50, then 0.25 of the unpruned FLOPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
