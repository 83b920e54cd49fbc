"""The sampling algorithms (SPOS, AutoSlim, BigNAS, SlimmableNetwork) on tiny models.

Oracles: which weights a step may touch follows from the subnets it trained (recorded in
``last_subnets``); the subnets are a function of the seed and step; AutoSlim's smaller
subnets learn the largest one's logits, recomputed here with plain torch ops; bad input
is refused before any weight changes.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxrazor
from fxrazor.algorithms import SPOS, AutoSlim, BigNAS, SlimmableNetwork
from fxrazor.errors import FxRazorError, InvalidArgumentError
from fxrazor.mutables import OneShotMutableOP


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors run faster on one thread, and far faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(),
                         nn.Linear(12, 4))


class OpNet(nn.Module):
    """A width unit (``a``) feeding an op mutable with two candidates that hold weights."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 16)
        self.op = OneShotMutableOP({"x": nn.Linear(16, 16),
                                    "y": nn.Sequential(nn.ReLU(), nn.Linear(16, 16))})
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.op(torch.relu(self.a(x)))))


def _op_net() -> nn.Module:
    torch.manual_seed(0)
    return OpNet()


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _batch(step: int, shape: tuple[int, ...] = (8, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(*shape, generator=g), torch.randint(0, 4, (shape[0],), generator=g)


def _weights(algo: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in algo.supernet.graph_module.named_parameters()}


def _train(algo, steps: int = 3, shape: tuple[int, ...] = (8, 6), lr: float = 0.1):
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=lr, momentum=0.9)
    history = []
    for step in range(steps):
        losses = algo.train_step(_batch(step, shape), opt)
        history.append((losses, copy.deepcopy(algo.last_subnets)))
    return history


MAKERS = {
    "spos": lambda seed=0: SPOS(_op_net(), torch.randn(2, 6), seed=seed),
    "autoslim": lambda seed=0: AutoSlim(_op_net(), torch.randn(2, 6), seed=seed),
    "bignas": lambda seed=0: BigNAS(_op_net(), torch.randn(2, 6), seed=seed),
    "slimmable": lambda seed=0: SlimmableNetwork(_mlp(), torch.randn(2, 6), seed=seed),
}
KEYS = {"spos": ["loss"], "autoslim": ["max", "min", "random0", "random1"],
        "bignas": ["max", "min", "random0", "random1"],
        "slimmable": ["width_0.25", "width_0.5", "width_0.75", "width_1"]}


@pytest.mark.parametrize("name", list(MAKERS))
def test_losses_are_finite_and_the_users_choices_and_model_are_kept(name: str) -> None:
    algo = MAKERS[name]()
    before = algo.supernet.choices()
    for losses, subnets in _train(algo):
        assert list(losses) == KEYS[name] == list(subnets)
        assert all(math.isfinite(v) for v in losses.values())
    assert algo.supernet.choices() == before  # the step puts the choices back
    assert algo.step_count == 3


def test_the_users_model_is_not_trained() -> None:
    model = _op_net()
    state = copy.deepcopy(model.state_dict())
    _train(AutoSlim(model, torch.randn(2, 6)), steps=1)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.parametrize("name", ["spos", "autoslim", "bignas"])
def test_the_subnets_are_a_function_of_the_seed_and_step(name: str) -> None:
    first = [s for _, s in _train(MAKERS[name](seed=3))]
    again = [s for _, s in _train(MAKERS[name](seed=3))]
    other = [s for _, s in _train(MAKERS[name](seed=4))]
    assert first == again
    assert first != other
    assert len({str(s) for s in first}) > 1  # the steps draw different subnets


def test_spos_leaves_weights_outside_every_drawn_subnet_as_they_were() -> None:
    algo = MAKERS["spos"](seed=3)
    start = _weights(algo)
    drawn = [s["loss"] for _, s in _train(algo)]
    after = _weights(algo)
    widest = max(s["a"] for s in drawn)
    ops = {s["op"] for s in drawn}
    # the seed draws neither the full width of unit "a" nor both ops: the test bites
    assert widest < 16 and ops in ({"x"}, {"y"})
    unused = "x" if ops == {"y"} else "y"
    for name, value in after.items():
        was = start[name]
        if f"_candidates.{unused}" in name:  # never on the drawn path
            assert torch.equal(value, was), name
        elif name.startswith("a."):  # channels past the widest drawn width: no gradient
            assert torch.equal(value[widest:], was[widest:]), name
            assert not torch.equal(value[:widest], was[:widest]), name
        else:
            assert not torch.equal(value, was), name


def test_autoslim_samples_widths_only_and_trains_what_the_subnets_use() -> None:
    algo = MAKERS["autoslim"]()
    start = _weights(algo)
    history = _train(algo)
    for _, subnets in history:
        assert {k for s in subnets.values() for k in s} == {"a", "op._candidates.x"}
        assert subnets["max"] == {"a": 1.0, "op._candidates.x": 1.0}
        assert subnets["min"] == {"a": 0.05, "op._candidates.x": 0.05}
    for name, value in _weights(algo).items():
        # the op keeps its choice ("x"): candidate "y" is never trained
        assert torch.equal(value, start[name]) == ("_candidates.y" in name), name


def test_bignas_samples_every_key_and_trains_each_drawn_op() -> None:
    algo = MAKERS["bignas"]()
    start = _weights(algo)
    history = _train(algo)
    keys = set(algo.supernet.choices())
    ops = set()
    for _, subnets in history:
        assert all(set(s) == keys for s in subnets.values())
        assert subnets["max"]["a"] == 16 and subnets["min"]["a"] == 1
        ops |= {s["op"] for s in subnets.values()}
    assert ops == {"x", "y"}
    for name, value in _weights(algo).items():
        assert not torch.equal(value, start[name]), name


def test_bignas_trains_a_value_space_from_its_largest_to_its_smallest_values() -> None:
    """An inverted residual block with a searched kernel size and expand ratio, bound on
    the supernet (as the BigNAS space of tests/e2e/test_bignas_space.py)."""
    from fxrazor.mutables.mutable_value import OneShotMutableValue
    from fxrazor.value_binding import bind_unit, bind_value

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 12, 1), nn.ReLU(),
                          nn.Conv2d(12, 12, 5, padding=2, groups=12), nn.ReLU(),
                          nn.Conv2d(12, 4, 1), nn.Flatten(), nn.Linear(4 * 5 * 5, 4))
    x = torch.randn(2, 3, 5, 5)
    sn = fxrazor.convert(model, x)
    bind_value(sn, "4", "kernel_size", OneShotMutableValue([3, 5]))
    bind_unit(sn, "2", OneShotMutableValue([1, 2, 3]), attr="expand_ratio", scale=4)
    algo = BigNAS(sn, num_random_samples=1, seed=2)
    start = _weights(algo)
    subnets = _train(algo, shape=(4, 3, 5, 5))[-1][1]
    assert subnets["max"]["4.kernel_size"] == 5 and subnets["min"]["4.kernel_size"] == 3
    assert subnets["max"]["2.expand_ratio"] == 3 and subnets["min"]["2.expand_ratio"] == 1
    assert set(subnets["random0"]) == set(sn.choices())
    for name, value in _weights(algo).items():
        assert not torch.equal(value, start[name]), name
    sn.set_choices(subnets["min"])
    frozen = algo.export()
    assert frozen.get_submodule("4").kernel_size == (3, 3)
    assert frozen.get_submodule("2").out_channels == 4


def test_autoslim_min_subnet_learns_the_max_subnets_logits_at_step_0() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    temperature = 2.0
    algo = AutoSlim(model, torch.randn(2, 6), num_random_samples=1,
                    distill_temperature=temperature)
    inputs, targets = _batch(0)
    sn = algo.supernet
    with torch.no_grad():
        sn.set_choices({"0": 1.0})
        teacher = sn(inputs)
        sn.set_choices({"0": 0.05})
        student = sn(inputs)
        sn.set_choices({"0": 1.0})
    want_min = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                        F.log_softmax(teacher / temperature, dim=-1),
                        reduction="batchmean", log_target=True) * temperature ** 2
    want_max = F.cross_entropy(teacher, targets)
    opt = torch.optim.SGD(sn.model_params(), lr=0.1)
    losses = algo.train_step((inputs, targets), opt)
    assert losses["min"] == pytest.approx(float(want_min), rel=1e-5)
    assert losses["max"] == pytest.approx(float(want_max), rel=1e-5)
    assert algo.last_subnets["min"] == {"0": 0.05}


def test_slimmable_trains_each_width_with_its_own_batchnorm_and_exports_it() -> None:
    x = torch.randn(2, 3, 6, 6)
    algo = SlimmableNetwork(_bn_net(), x, widths=(0.5, 1.0))
    bn = algo.supernet.graph_module.get_submodule("1")
    assert type(bn).__name__ == "SwitchableBatchNorm2d"
    start = _weights(algo)
    history = _train(algo, shape=(4, 3, 6, 6))
    assert history[-1][1] == {"width_0.5": {"0": 0.5}, "width_1": {"0": 1.0}}
    for name, value in _weights(algo).items():  # every width's BatchNorm set is trained
        assert not torch.equal(value, start[name]), name
    algo.eval()
    frozen = algo.export(0.5)
    assert frozen.get_submodule("0").out_channels == 4
    with torch.no_grad():
        algo.supernet.set_choices({"0": 0.5})
        torch.testing.assert_close(frozen(x), algo.supernet(x))
    assert algo.supernet.choices() == {"0": 0.5}
    with pytest.raises(InvalidArgumentError, match="not one of"):
        algo.export(0.75)


@pytest.mark.parametrize("name", list(MAKERS))
def test_bad_batches_and_optimizers_are_refused_before_any_weight_changes(name: str) -> None:
    algo = MAKERS[name]()
    start = _weights(algo)
    opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    with pytest.raises(InvalidArgumentError, match="only the batch dimension"):
        algo.train_step((torch.randn(8, 5), torch.zeros(8, dtype=torch.long)), opt)
    with pytest.raises(InvalidArgumentError, match="targets"):
        algo.train_step((torch.randn(8, 6), torch.zeros(7, dtype=torch.long)), opt)
    stranger = torch.optim.SGD(nn.Linear(6, 4).parameters(), lr=0.1)
    with pytest.raises(FxRazorError, match="not this algorithm's"):
        algo.train_step(_batch(0), stranger)
    after = _weights(algo)
    assert all(torch.equal(after[k], v) for k, v in start.items())
    assert algo.step_count == 0 and algo.last_subnets == {}


@pytest.mark.parametrize("make, match", [
    (lambda: AutoSlim(_mlp(), torch.randn(2, 6), num_random_samples=-1), "num_random"),
    (lambda: BigNAS(_mlp(), torch.randn(2, 6), distill_temperature=0.0), "temperature"),
    (lambda: SlimmableNetwork(_mlp(), torch.randn(2, 6), widths=(0.0, 1.0)), "widths"),
    (lambda: SlimmableNetwork(_mlp(), torch.randn(2, 6), unit="sequential"), "slimmable"),
    (lambda: SlimmableNetwork(fxrazor.convert(_mlp(), torch.randn(2, 6))), "slimmable"),
    (lambda: SPOS(_mlp()), "example_inputs"),
])
def test_bad_options_are_refused(make, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()


def test_searches_set_the_subnet_that_export_freezes() -> None:
    algo = SPOS(_mlp(), torch.randn(2, 6))
    _train(algo, steps=1)
    found = algo.search(lambda c: -abs(c["0"] - 5) - abs(c["2"] - 3), {"params": 200},
                        population_size=8, max_generations=2, num_mutation=4,
                        num_crossover=4)
    assert algo.supernet.choices() == found.subnets[0]
    frozen = algo.export()
    assert frozen.get_submodule("0").out_features == found.subnets[0]["0"]
    assert sum(p.numel() for p in frozen.parameters()) <= 200
