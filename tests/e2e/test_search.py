"""Searches over a supernet's choices: evolution, greedy, BN calibration (made-up scores
and resources, so the expected results are known by hand)."""

from __future__ import annotations

import importlib.util
import json
import math
import random

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import InvalidArgumentError
from fxrazor.search import SearchError, calibrate_bn, evolution_search, greedy_search


def _supernet() -> fxrazor.Supernet:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                          nn.Linear(12, 2))
    return fxrazor.convert(model, torch.randn(2, 6))


def _cost(choices: dict) -> dict:
    """A made-up resource: what the hidden widths cost (16 and 12 at full width)."""
    return {"flops": 3 * choices["0"] + 5 * choices["2"], "params": choices["0"] * choices["2"]}


def _score(choices: dict) -> float:
    """A made-up score with its best feasible point away from the corners."""
    return -((choices["0"] - 9) ** 2) - 2 * (choices["2"] - 7) ** 2 + 0.1 * choices["0"]


LIMIT = {"flops": 60}


def test_evolution_respects_the_limit_and_beats_300_random_feasible_subnets() -> None:
    sn = _supernet()
    before = sn.choices()
    found = evolution_search(sn, _score, LIMIT, estimator=_cost, population_size=20,
                             max_generations=10, num_mutation=10, num_crossover=10, top_k=5,
                             mutate_prob=0.3, seed=1)
    assert sn.choices() == before  # the supernet is left as it was
    assert found.scores == sorted(found.scores, reverse=True)  # best first
    best = found.subnets[0]
    assert _cost(best)["flops"] <= 60 and found.resources("flops")[0] == _cost(best)["flops"]
    rng = random.Random(0)
    randoms = [c for c in ({"0": rng.randint(1, 16), "2": rng.randint(1, 12)}
                           for _ in range(3000)) if _cost(c)["flops"] <= 60][:300]
    assert len(randoms) == 300
    assert found.scores[0] >= max(_score(c) for c in randoms)


def test_evolution_is_repeatable_and_resumes_to_the_same_result(tmp_path) -> None:
    sn = _supernet()
    options = dict(estimator=_cost, population_size=10, num_mutation=5, num_crossover=5,
                   top_k=4, seed=3)
    whole = evolution_search(sn, _score, LIMIT, max_generations=6, **options)
    again = evolution_search(sn, _score, LIMIT, max_generations=6, **options)
    assert whole.subnets == again.subnets and whole.scores == again.scores
    path = tmp_path / "search.json"
    evolution_search(sn, _score, LIMIT, max_generations=3, checkpoint=path, **options)
    resumed = evolution_search(sn, _score, LIMIT, max_generations=6, checkpoint=path,
                               resume=True, **options)
    assert resumed.subnets == whole.subnets and resumed.scores == whole.scores


def test_bad_input_is_refused_and_leaves_the_supernet_as_it_was() -> None:
    sn = _supernet()
    sn.set_choices({"0": 5})
    before = sn.choices()
    with pytest.raises(InvalidArgumentError, match="unknown constraint keys"):
        evolution_search(sn, _score, {"flop": 10}, estimator=_cost)
    with pytest.raises(SearchError, match="no random subnet meets"):
        evolution_search(sn, _score, {"flops": 1}, estimator=_cost, max_trials=20)

    def raises(choices: dict) -> float:
        sn.set_choices({"0": 1})  # a score_fn may set choices: they are put back
        raise RuntimeError("boom")

    with pytest.raises(SearchError, match="score_fn failed .* boom"):
        evolution_search(sn, raises, estimator=_cost, population_size=3)
    with pytest.raises(SearchError, match="NaN"):
        evolution_search(sn, lambda c: math.nan, population_size=3)
    with pytest.raises(SearchError, match="smallest width"):
        greedy_search(sn, _score, {"flops": 5}, estimator=_cost)
    assert sn.choices() == before


def test_greedy_shrinks_the_unit_that_costs_least_until_the_limit_holds() -> None:
    sn = _supernet()
    # a score that only minds unit "0": greedy shrinks unit "2" first, one channel a step
    found = greedy_search(sn, lambda c: float(c["0"]), {"flops": 60}, estimator=_cost,
                          step=1 / 12)
    best = found.subnets[0]
    # 3 * 16 + 5 * w2 <= 60 needs w2 <= 2; "2" shrinks 12 -> 2 while "0" stays 16
    assert best == {"0": 16, "2": 2} and found.scores[0] == 16.0
    assert found.resources("flops")[0] == 58


def test_greedy_resumes_from_its_checkpoint_without_redoing_steps(tmp_path, capsys) -> None:
    sn = _supernet()
    whole = greedy_search(sn, lambda c: float(c["0"]), {"flops": 60}, estimator=_cost,
                          step=1 / 12)
    calls = []

    def failing(c: dict) -> float:
        calls.append(c)
        if len(calls) > 8:  # the 5th step's trials: 4 steps done and written
            raise RuntimeError("interrupted")
        return float(c["0"])

    path = tmp_path / "greedy.json"
    with pytest.raises(SearchError, match="interrupted"):
        greedy_search(sn, failing, {"flops": 60}, estimator=_cost, step=1 / 12,
                      checkpoint=path)
    assert json.loads(path.read_text())["steps"] == 4
    calls.clear()
    resumed = greedy_search(sn, lambda c: calls.append(c) or float(c["0"]), {"flops": 60},
                            estimator=_cost, step=1 / 12, checkpoint=path, resume=True,
                            progress=True)
    assert resumed.subnets == whole.subnets and resumed.scores == whole.scores
    assert len(calls) == 2 * (10 - 4)  # two trials a step, the 6 steps left
    if importlib.util.find_spec("tqdm"):
        assert "greedy" in capsys.readouterr().err


def test_greedy_never_goes_below_a_router_top_k() -> None:
    class Routed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gate, self.out = nn.Linear(5, 6), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.gate(x)
            ids = torch.topk(torch.softmax(logits, -1), 2, dim=-1)[1].reshape(-1)
            from fxrazor.trace import routing
            return self.out(logits * routing.expert_counts(ids.float(), 6))

    sn = fxrazor.convert(Routed(), torch.randn(4, 5))
    with pytest.raises(SearchError, match="smallest width"):
        greedy_search(sn, lambda c: 0.0, {"params": 1}, estimator=lambda c: {"params": c["gate"]},
                      step=0.2)
    found = greedy_search(sn, lambda c: 0.0, {"params": 2},
                          estimator=lambda c: {"params": c["gate"]}, step=0.2)
    assert found.subnets[0] == {"gate": 2}


def test_calibrated_statistics_are_the_subnets_batch_averages() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 2, 1)).eval()
    sn = fxrazor.convert(model, torch.randn(1, 3, 4, 4))
    sn.set_choices({"0": 5})
    batches = [torch.randn(4, 3, 5, 5) for _ in range(3)]
    assert calibrate_bn(sn, [(b, None) for b in batches], num_batches=2) == 2
    frozen = fxrazor.freeze(sn)
    with torch.no_grad():
        outs = [model[0](b)[:, :5] for b in batches[:2]]  # the kept conv channels
    want_mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    want_var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    bn = frozen.get_submodule("1")
    torch.testing.assert_close(bn.running_mean, want_mean)
    torch.testing.assert_close(bn.running_var, want_var)
    assert not sn.graph_module.get_submodule("1").training  # the modes are put back
    assert sn.graph_module.get_submodule("1").momentum == 0.1


def _rank_search(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        scored: list[dict] = []

        def score(choices: dict) -> float:
            scored.append(choices)
            return _score(choices)

        found = evolution_search(_supernet(), score, LIMIT, estimator=_cost,
                                 population_size=10, max_generations=4, num_mutation=5,
                                 num_crossover=5, top_k=4, seed=5)
        torch.save({"subnets": found.subnets, "scores": found.scores, "scored": len(scored)},
                   f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_shard_the_scoring_and_find_what_one_process_finds(tmp_path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rank")
    mp.spawn(_rank_search, args=(2, port, out), nprocs=2, join=True)
    single = evolution_search(_supernet(), _score, LIMIT, estimator=_cost, population_size=10,
                              max_generations=4, num_mutation=5, num_crossover=5, top_k=4,
                              seed=5)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for got in ranks:
        assert got["subnets"] == single.subnets and got["scores"] == single.scores
    # each rank scored about half of the candidates
    assert 0 < ranks[0]["scored"] and 0 < ranks[1]["scored"]
    assert abs(ranks[0]["scored"] - ranks[1]["scored"]) <= 4


def test_searches_and_pruning_use_the_analytic_estimate_by_default() -> None:
    """No estimator given: fxrazor.estimate bounds the FLOPs, exact for the frozen subnet."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3), nn.ReLU(), nn.Conv2d(24, 4, 1)).eval()
    x = torch.randn(1, 3, 10, 10)
    sn = fxrazor.convert(model, x, unit="l1")
    full = fxrazor.estimate(sn)["flops"]

    def frozen_flops() -> int:
        with FlopCounterMode(display=False) as counter:
            fxrazor.freeze(sn)(x)
        return counter.get_total_flops()

    found = evolution_search(sn, lambda c: c["0"] + c["3"], {"flops": full // 2},
                             population_size=8, max_generations=3, num_mutation=4,
                             num_crossover=4, top_k=3)
    sn.set_choices(found.subnets[0])
    assert frozen_flops() == found.resources("flops")[0] <= full // 2
    greedy = greedy_search(sn, lambda c: c["0"] + c["3"], {"flops": full // 2}, step=0.1)
    sn.set_choices(greedy.subnets[0])
    assert frozen_flops() <= full // 2
    sn.prune({"flops": 0.5})
    assert 0.45 * full <= frozen_flops() <= 0.5 * full
