"""AutoSlim on digits under torch.distributed, launched by torchrun.

    torchrun --standalone --nproc_per_node=2 examples/train_distributed.py --backend gloo
    torchrun --standalone --nproc_per_node=2 examples/train_distributed.py --backend gloo --smoke

Every rank builds the same supernet (the small CNN of ``digits_common``, same seed) and
the same ``AutoSlim`` algorithm (same ``seed``: each step draws the same subnets on every
rank, without a broadcast). Each rank takes its shard of every batch, ``x[rank::world]``;
``algo.train_step`` averages the gradients over the ranks itself (one flat all-reduce per
step), so the supernet is not wrapped in ``DistributedDataParallel`` and the optimizer is
built from ``algo.supernet.model_params()`` as in one process.

Rank 0 prints the losses of each epoch, then every rank's weights are compared: the
maximum over ranks of ``|w - w_rank0|`` (rank 0's weights broadcast, the difference
all-reduced with MAX) must be 0, and rank 0 prints ``OK``. BatchNorm's running
statistics are per rank (each saw its own shards); they are averaged over the ranks
before rank 0 measures the test accuracy of the largest and smallest subnets (the
smallest after ``fxrazor.search.calibrate_bn``).

``--backend nccl``: one GPU per process; each rank moves the algorithm (``algo.to``) and
its batches to ``cuda:LOCAL_RANK`` (set by torchrun). It is written, not tested here (no GPU).

Run by hand without torchrun it trains as a single process (world size 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
import digits_common as dc  # noqa: E402

from fxrazor.algorithms import AutoSlim  # noqa: E402
from fxrazor.search import calibrate_bn  # noqa: E402

LR, BATCH = 0.05, 64


def setup(backend: str) -> tuple[int, int, torch.device]:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR,
    ...) and pick this rank's device; world size 1 when not launched by torchrun."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cpu")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def train(algo: AutoSlim, data: dc.Digits, epochs: int, rank: int, world: int,
          device: torch.device, seed: int) -> None:
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=LR, momentum=0.9,
                          weight_decay=5e-4)
    steps = epochs * -(-len(data.x_train) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    for epoch in range(epochs):
        totals: dict[str, float] = {}
        count = 0
        # every rank walks the same batches (same seed) and keeps its shard of each
        for x, y in dc.batches(data.x_train, data.y_train, BATCH, seed, epoch):
            shard = (x[rank::world].to(device), y[rank::world].to(device))
            for key, value in algo.train_step(shard, opt).items():
                totals[key] = totals.get(key, 0.0) + value
            sched.step()
            count += 1
        if rank == 0:
            print(f"epoch {epoch}: " + " ".join(f"{k}={v / count:.4f}"
                                                for k, v in totals.items()), flush=True)


def weights_max_diff(algo: AutoSlim, world: int) -> float:
    """The largest ``|w - w_rank0|`` over every weight and rank (0.0 in one process)."""
    flat = torch.cat([p.detach().reshape(-1) for p in algo.supernet.model_params()])
    if world == 1:
        return 0.0
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def average_buffers(algo: AutoSlim, world: int) -> None:
    """Average the floating-point buffers (BN running statistics) over the ranks."""
    if world == 1:
        return
    for buffer in algo.supernet.graph_module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world


def evaluate(algo: AutoSlim, data: dc.Digits, device: torch.device) -> dict[str, float]:
    """Test accuracy of the largest subnet and of the smallest (BN recalibrated)."""
    sn = algo.supernet
    x, y = data.x_test.to(device), data.y_test.to(device)
    sn.set_choices(sn.sample_choices("max"))
    result = {"max": dc.accuracy(sn, x, y)}
    sn.set_choices(sn.sample_choices("min"))
    calibrate_bn(sn, ((a.to(device), b) for a, b in dc.batches(data.x_train, data.y_train)), 8)
    result["min"] = dc.accuracy(sn, x, y)
    sn.set_choices(sn.sample_choices("max"))
    return result


def main() -> int:
    def options(parser: Any) -> None:
        parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")

    args = dc.parse_args(__doc__, extra=options)
    rank, world, device = setup(args.backend)
    seed = args.seeds[0]
    try:
        data = dc.load_digits_split(smoke=args.smoke)
        dc.seed_everything(seed)  # the same initial weights on every rank
        algo = AutoSlim(dc.small_cnn(), data.example_input, seed=seed, num_random_samples=1)
        algo.to(device)  # before the optimizer is built (in train)
        epochs = dc.epochs(args, full=15, default=5)
        if rank == 0:
            print(f"world {world}, backend {args.backend if world > 1 else 'none'}, "
                  f"{len(data.x_train)} train images ({BATCH // world} per rank per step), "
                  f"{epochs} epochs", flush=True)
        with dc.stopwatch() as t:
            train(algo, data, epochs, rank, world, device, seed)
        diff = weights_max_diff(algo, world)
        average_buffers(algo, world)
        if rank == 0:
            acc = evaluate(algo, data, device)
            print(f"RESULT world={world} test_max={acc['max']:.4f} test_min={acc['min']:.4f} "
                  f"max_weight_diff={diff:.3g} seconds={t.seconds:.1f}", flush=True)
            print(f"OK: all {world} ranks hold identical weights" if diff == 0.0 else
                  f"FAIL: the ranks' weights differ by up to {diff:.3g}", flush=True)
        return 0 if diff == 0.0 else 1
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
