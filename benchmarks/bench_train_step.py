"""What training a supernet costs against training the subnet it stands for, and what
``torch.compile`` makes of a supernet step.

1. Step ratio: torchvision ``resnet50(weights=None)``, batch ``--batch`` (8) x3x224x224,
   CPU, train mode, SGD with momentum, cross-entropy. The supernet at the half-width
   subnet (every unit at half its channels) against ``fxrazor.freeze`` of that subnet:
   one step = zero_grad, forward, backward, optimizer step. Interleaved, median of
   ``--repeats``. Goal: supernet / frozen <= 1.2. Before timing, one step on each from the
   same weights is checked to give the same loss.
2. ``torch.compile`` of a supernet step (forward + loss; backward outside): resnet18 at
   4x3x32x32, backend ``--backend`` (``aot_eager`` by default: it counts what dynamo
   compiles without inductor's minutes of code generation on a CPU), 5 subnets (max, min,
   3 random) visited twice. Reported per visit: dynamo's compiled frames and unique graphs
   so far, the wall time, and |compiled loss - eager loss|. Recompiles are what a new
   subnet adds; a revisited subnet should add none.

Exits 1 if a loss check fails; timings never fail the run.

Run: ``python benchmarks/bench_train_step.py [--repeats 5] [--skip-compile]``
"""

from __future__ import annotations

import sys
import time

import torch
import torchvision
from common import half_width_choices, interleaved_medians, make_parser, print_table, setup_torch

import fxrazor

__all__ = ["main"]


def step_ratio(batch: int, repeats: int, warmup: int) -> bool:
    model = torchvision.models.resnet50(weights=None)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    sn = fxrazor.convert(model, torch.randn(1, 3, 224, 224))
    sn.set_choices(half_width_choices(sn))
    frozen = fxrazor.freeze(sn)
    sn.train()
    frozen.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    with torch.no_grad():  # same weights, same batch: same loss (BN in train mode)
        ok = torch.allclose(loss_fn(sn(x), y), loss_fn(frozen(x), y), rtol=1e-4, atol=1e-5)
    opt_s = torch.optim.SGD(sn.model_params(), lr=1e-3, momentum=0.9)
    opt_f = torch.optim.SGD(frozen.parameters(), lr=1e-3, momentum=0.9)

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    t = interleaved_medians({"supernet": lambda: step(sn, opt_s),
                             "frozen": lambda: step(frozen, opt_f)}, repeats, warmup)
    print_table(["resnet50 train step", "median s", "/ frozen"],
                [["supernet at half width", t["supernet"], t["supernet"] / t["frozen"]],
                 ["frozen half-width subnet", t["frozen"], 1.0]])
    ratio = t["supernet"] / t["frozen"]
    print(f"supernet step / frozen step = {ratio:.2f} (goal <= 1.2: "
          f"{'met' if ratio <= 1.2 else 'NOT met'}); losses equal: {ok}")
    return ok


def compile_visits(backend: str) -> bool:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    sn = fxrazor.convert(torchvision.models.resnet18(weights=None), torch.randn(4, 3, 32, 32))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 1000, (4,))
    subnets = [sn.sample_choices("max"), sn.sample_choices("min"),
               *(sn.sample_choices() for _ in range(3))]
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(inputs: torch.Tensor) -> torch.Tensor:
        return loss_fn(sn(inputs), y)

    compiled = torch.compile(step, backend=backend)
    rows, ok = [], True
    for visit in range(2):
        for i, choices in enumerate(subnets):
            sn.set_choices(choices)
            start = time.perf_counter()
            loss = compiled(x)
            loss.backward()
            seconds = time.perf_counter() - start
            gap = float((loss.detach() - step(x).detach()).abs())
            ok &= gap <= 1e-4
            rows.append([visit + 1, ["max", "min", "random 1", "random 2", "random 3"][i],
                         counters["frames"]["ok"], counters["stats"]["unique_graphs"],
                         seconds, gap])
    print_table(["visit", "subnet", "frames compiled", "unique graphs", "s", "|loss gap|"],
                rows)
    return ok


def main() -> int:
    parser = make_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backend", default="aot_eager")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    setup_torch(args.threads)
    ok = step_ratio(args.batch, args.repeats, args.warmup)
    if not args.skip_compile:
        ok &= compile_visits(args.backend)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
