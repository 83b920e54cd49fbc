"""One-call pruning to a target: counts, rankings and FLOPs checked on the frozen subnet."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import fxrazor
from fxrazor.errors import InvalidArgumentError
from fxrazor.importance import importance
from fxrazor.pruning import prune


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3), nn.BatchNorm2d(24), nn.ReLU(),
                          nn.Conv2d(24, 8, 1)).eval()
    return model, torch.randn(1, 3, 12, 12)


def _frozen_flops(sn: fxrazor.Supernet, x: torch.Tensor):
    def estimate(choices: dict) -> dict:
        before = sn.choices()
        sn.set_choices(choices)
        try:
            with FlopCounterMode(display=False) as counter:
                fxrazor.freeze(sn)(x)
        finally:
            sn.set_choices(before)
        return {"flops": counter.get_total_flops()}
    return estimate


def test_a_ratio_keeps_that_fraction_of_the_most_important_channels() -> None:
    model, x = _cnn()
    sn = fxrazor.convert(model, x, unit="l1")
    scores = importance(sn, "l1")
    chosen = sn.prune(0.5)
    assert chosen == {"0": 8, "3": 12}
    for name, keep in chosen.items():
        top = set(torch.topk(scores[name], keep).indices.tolist())
        assert set(sn.unit(name).current_mask.nonzero().flatten().tolist()) == top


@pytest.mark.parametrize("scope", ["global", "local"])
def test_a_flops_target_is_met_from_just_under(scope: str) -> None:
    model, x = _cnn()
    sn = fxrazor.convert(model, x, unit="l1")
    estimate = _frozen_flops(sn, x)
    full = estimate(sn.sample_choices("max"))["flops"]
    chosen = prune(sn, {"flops": 0.5}, scope=scope, estimator=estimate)
    got = estimate(chosen)["flops"] / full
    assert 0.45 <= got <= 0.5, (chosen, got)
    # nothing left on the table: one more channel in any unit would cross the target
    for name, count in chosen.items():
        if count < sn.unit(name).num_channels:
            assert estimate({**chosen, name: count + 1})["flops"] > 0.5 * full, name
    with torch.no_grad():
        torch.testing.assert_close(fxrazor.freeze(sn)(x), sn(x))


def test_round_to_and_ratio_bounds() -> None:
    model, x = _cnn()
    sn = fxrazor.convert(model, x, unit="l1")
    chosen = sn.prune(0.3, round_to=4)
    assert all(v % 4 == 0 for v in chosen.values()), chosen
    assert sn.prune(0.1, min_ratio=0.5) == {"0": 8, "3": 12}


def test_a_data_criterion_prunes_from_its_calibration_batches() -> None:
    """Wanda from a loader: with a ratio, each unit keeps its highest-scoring channels as
    importance() scores them from the same batches."""
    model, x = _cnn()
    loader = [torch.randn(4, 3, 12, 12) for _ in range(2)]
    sn = fxrazor.convert(model, x, unit="l1")
    scores = importance(sn, "wanda", loader=loader)
    chosen = sn.prune(0.5, importance="wanda", loader=loader)
    assert chosen == {"0": 8, "3": 12}
    for unit in sn.channel_mutator.mutable_units:
        top = set(scores[unit.name].argsort(descending=True)[:chosen[unit.name]].tolist())
        assert set(unit.current_mask.nonzero().flatten().tolist()) == top
    with pytest.raises(InvalidArgumentError, match="loader"):
        sn.prune(0.5, importance="wanda")


def test_bad_targets_and_first_k_units_are_refused() -> None:
    model, x = _cnn()
    with pytest.raises(InvalidArgumentError, match="unit='l1'"):
        fxrazor.convert(model, x).prune(0.5)
    sn = fxrazor.convert(model, x, unit="l1")
    before = sn.choices()
    with pytest.raises(InvalidArgumentError, match="below the smallest subnet"):
        sn.prune({"flops": 0.01}, min_ratio=0.5, estimator=_frozen_flops(sn, x))
    for bad in ({"latency": 0.5}, 1.5, {"flops": 0.5, "params": 0.5}):
        with pytest.raises(InvalidArgumentError):
            sn.prune(bad)
    assert sn.choices() == before


TEN = ["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_small",
       "efficientnet_b0", "shufflenet_v2_x1_0", "regnet_x_400mf", "squeezenet1_0",
       "mnasnet1_0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TEN)
def test_half_the_flops_on_torchvision(name: str) -> None:
    """prune(target={"flops": 0.5}): the frozen subnet's FlopCounterMode count is in
    [0.49, 0.50] of the original model's, and it computes what the supernet computes."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    with torch.no_grad():  # norms as after training: torchvision's zero-init residual
        for m in model.modules():  # scales make some outputs ~1e-11 (any subnet agrees)
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    original = counter.get_total_flops()
    sn = fxrazor.convert(model, x, unit="l1").eval()
    sn.prune({"flops": 0.5})
    frozen = fxrazor.freeze(sn)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        got = frozen(x)
    assert 0.49 <= counter.get_total_flops() / original <= 0.50
    with torch.no_grad():
        expected = sn(x)
    assert expected.std() > 1e-3  # outputs that can tell subnets apart
    torch.testing.assert_close(got, expected)
