"""Two gloo ranks on CPU, each given half of every batch, train exactly as one process on
the whole batches: the algorithms draw the same subnets on every rank (seed and step) and
average the gradients themselves (the losses are batch means, so the average of the two
halves' gradients is the whole batch's).

Oracle: after 3 SGD-with-momentum steps the weights of both ranks equal each other
exactly and those of a single process within float rounding. The model has no
BatchNorm, whose batch statistics would differ between a half and a whole batch.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from fxrazor.algorithms import SPOS, AutoSlim

STEPS, BATCH = 3, 8
ALGORITHMS = {"autoslim": AutoSlim, "spos": SPOS}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(BATCH, 3, 6, 6, generator=g), torch.randint(0, 5, (BATCH,), generator=g))
            for _ in range(STEPS)]


def _train(name: str, rank: int = 0, world: int = 1) -> dict[str, torch.Tensor]:
    """Train ``STEPS`` steps on this rank's share of each batch; the supernet's weights and
    the subnets drawn."""
    algo = ALGORITHMS[name](_model(), torch.randn(1, 3, 6, 6), seed=11)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.05, momentum=0.9)
    share = BATCH // world
    drawn = []
    for inputs, targets in _batches():
        part = slice(rank * share, (rank + 1) * share)
        algo.train_step((inputs[part], targets[part]), opt)
        drawn.append(algo.last_subnets)
    weights = {k: v.detach().clone() for k, v in algo.supernet.state_dict().items()}
    return {"weights": weights, "drawn": drawn}  # type: ignore[dict-item]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.save({name: _train(name, rank, world) for name in ALGORITHMS}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_ranks_on_half_batches_train_as_one_process_on_whole_ones(tmp_path,
                                                                       one_thread) -> None:
    # one process first: it also warms up what the ranks then inherit by fork (a spawned
    # rank would import torch and fxrazor again, seconds each on a loaded machine)
    singles = {name: _train(name) for name in ALGORITHMS}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank")
    mp.start_processes(_rank, args=(2, port, out), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    start = _model().state_dict()
    for name, single in singles.items():
        first, second = ranks[0][name], ranks[1][name]
        assert first["drawn"] == second["drawn"] == single["drawn"]
        for key, value in single["weights"].items():
            # every rank applied the same averaged gradients: bit for bit the same
            assert torch.equal(first["weights"][key], second["weights"][key]), key
            torch.testing.assert_close(first["weights"][key], value, rtol=1e-5, atol=1e-6)
            assert not torch.equal(value, start[key.removeprefix("graph_module.")]), key
