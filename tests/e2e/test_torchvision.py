"""End-to-end checks on real torchvision models: convert, sample, freeze, script, export.

Every model is built and converted once (``_case`` keeps the current model; its tests run
together); each subnet is checked with :func:`fxrazor.verify.equivalence.check_subnet` and
sampled with a fixed seed, so a failure names a reproducible subnet.
"""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torchvision
from oracles import assert_close, count_params
from torch import fx, nn

import fxrazor
from fxrazor.verify.equivalence import (
    FullWidthCheck,
    SubnetCheck,
    check_full_width,
    check_subnet,
    output_error,
    output_scale,
)

pytestmark = [
    pytest.mark.slow,
    # TorchScript is deprecated in recent torch, but scripting must keep working for users
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*TorchScript:UserWarning"),
]

__all__: list[str] = []

MODELS = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "densenet121",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
    "regnet_y_400mf",
    "googlenet",
    "squeezenet1_0",
    "vgg11_bn",
]
EXPORTED = ["resnet18", "mobilenet_v2"]
SEEDS = (0, 1, 2)
RTOL = 1e-5  # of the output's largest magnitude: float32 sums in another order differ


@dataclass
class Subnet:
    seed: int
    choices: dict[str, Any]
    check: SubnetCheck  # the frozen subnet, its output, and its errors against the
    # supernet and the zero oracle (the original model with the pruned channels zeroed)


@dataclass
class Case:
    model: nn.Module
    x: torch.Tensor
    ref: torch.Tensor  # the original model's output
    full_width: FullWidthCheck  # the supernet right after convert against the model
    state_before: dict[str, torch.Tensor]
    full_choices: dict[str, Any]  # the supernet's choices right after convert
    subnets: list[Subnet]


def _randomize_norm_stats(model: nn.Module, seed: int = 1) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    Fresh torchvision models have running mean 0 and variance 1, and several zero-init
    the last norm of each block, so some (mobilenet, efficientnet) output ~1e-9: a wrong
    slice of the statistics would go unnoticed and every output comparison would pass.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def _build(name: str, **kwargs: Any) -> nn.Module:
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True)
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    _randomize_norm_stats(model)
    return model


_current: dict[str, Case] = {}


def _case(name: str) -> Case:
    """The case of model ``name``, built on first use. One model at a time: the tests of a
    model run together (module-scoped parameters), and the previous model is dropped before
    the next is built, so memory holds one model, not all of them."""
    if name not in _current:
        _current.clear()
        gc.collect()  # graph modules hold reference cycles
        _current[name] = _build_case(name)
    return _current[name]


def _build_case(name: str) -> Case:
    torch.manual_seed(0)
    random.seed(0)
    model = _build(name)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        sn = fxrazor.convert(model, x)
        sn.graph_module.graph.lint()  # convert itself skips the check for speed
        full_choices = sn.choices()
        full_width = check_full_width(model, sn, x)
        subnets = []
        for seed in SEEDS:
            random.seed(seed)
            choices = sn.sample_choices()
            sn.set_choices(choices)
            # BatchNorm only: the zero oracle applies to every model here, so it always runs
            subnets.append(Subnet(seed, choices, check_subnet(model, sn, x, oracle=True)))
    return Case(model, x, ref, full_width, state_before, full_choices, subnets)


def _atol(out: torch.Tensor) -> float:
    """An absolute tolerance relative to the output's magnitude (float32 sums differ)."""
    return 1e-5 * max(float(out.abs().max()), 1e-30)


def _exact(error: float | None, scale: float) -> bool:
    """Equal up to float32 summation order: a tolerance relative to the output's magnitude."""
    return error is not None and error <= RTOL * scale


@pytest.mark.parametrize("name", MODELS, scope="module")
def test_full_width_supernet_equals_model(name: str) -> None:
    case = _case(name)
    assert _exact(case.full_width.error, case.full_width.scale), case.full_width
    # converting, sampling and freezing leave the original model's weights alone
    after = case.model.state_dict()
    assert after.keys() == case.state_before.keys()
    assert all(torch.equal(after[k], v) for k, v in case.state_before.items())


@pytest.mark.parametrize("name", MODELS, scope="module")
def test_frozen_random_subnets_equal_supernet(name: str) -> None:
    case = _case(name)
    original_params = count_params(case.model)
    for sub in case.subnets:
        assert sub.choices.keys() == case.full_choices.keys()
        assert sub.choices != case.full_choices
        assert _exact(sub.check.frozen_error, sub.check.output_scale), sub.check.frozen_error
        assert count_params(sub.check.frozen) < original_params, f"seed {sub.seed}"
        gap = output_error(sub.check.frozen_output, case.ref)
        assert gap > 1e-3 * float(case.ref.abs().max()), \
            f"seed {sub.seed}: pruning left the output unchanged"


@pytest.mark.parametrize("name", MODELS, scope="module")
def test_frozen_equals_model_with_pruned_channels_zeroed(name: str) -> None:
    case = _case(name)
    for sub in case.subnets:
        assert _exact(sub.check.oracle_error, output_scale(sub.check.frozen_output)), \
            f"seed {sub.seed}: {sub.check.oracle_error}"


@pytest.mark.parametrize("name", MODELS, scope="module")
def test_frozen_holds_no_fxrazor_types(name: str) -> None:
    for sub in _case(name).subnets:
        assert type(sub.check.frozen) is not fxrazor.Supernet
        assert isinstance(sub.check.frozen, fx.GraphModule)
        foreign = [type(m).__qualname__ for m in sub.check.frozen.modules()
                   if type(m).__module__.startswith("fxrazor")]
        assert foreign == []


@pytest.mark.parametrize("name", MODELS, scope="module")
def test_frozen_scripts_and_round_trips(name: str, tmp_path) -> None:
    case = _case(name)
    sub = case.subnets[-1]
    scripted = torch.jit.script(sub.check.frozen)
    path = tmp_path / f"{name}.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert_close(scripted(case.x), sub.check.frozen_output, rtol=1e-5, atol=_atol(sub.check.frozen_output))
        assert_close(loaded(case.x), sub.check.frozen_output, rtol=1e-5, atol=_atol(sub.check.frozen_output))


@pytest.mark.parametrize("name", EXPORTED, scope="module")
def test_frozen_exports_and_round_trips(name: str, tmp_path) -> None:
    case = _case(name)
    sub = case.subnets[-1]
    program = torch.export.export(sub.check.frozen, (case.x,))
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, str(path))
    reloaded = torch.export.load(str(path))
    with torch.no_grad():
        assert_close(program.module()(case.x), sub.check.frozen_output, rtol=1e-5,
                     atol=_atol(sub.check.frozen_output))
        assert_close(reloaded.module()(case.x), sub.check.frozen_output, rtol=1e-5,
                     atol=_atol(sub.check.frozen_output))


_CHILD = textwrap.dedent("""
    import sys
    import torch
    model = torch.jit.load(sys.argv[1])
    x, expected = torch.load(sys.argv[2])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert "fxrazor" not in sys.modules, "loading the subnet imported fxrazor"
    print("ok")
""")


def test_frozen_runs_without_fxrazor_in_a_fresh_process(tmp_path) -> None:
    case = _case("resnet18")
    sub = case.subnets[0]
    model_path, data_path = tmp_path / "subnet.pt", tmp_path / "data.pt"
    torch.jit.save(torch.jit.script(sub.check.frozen), str(model_path))
    torch.save((case.x, sub.check.frozen_output), data_path)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(model_path), str(data_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _producer_conv(unit: Any, model: nn.Module) -> str:
    """The name of the first full-model Conv2d that produces the unit's channels 1:1."""
    modules = dict(model.named_modules())
    for spec in unit.output_related:
        if spec["expand_ratio"] == 1 and isinstance(modules.get(spec["name"]), nn.Conv2d):
            return spec["name"]
    raise AssertionError(f"unit {unit.name} has no Conv2d producer: {unit.output_related}")


def test_mobilenet_v2_at_half_width_matches_width_mult_half() -> None:
    torch.manual_seed(0)
    model = _build("mobilenet_v2")
    half = _build("mobilenet_v2", width_mult=0.5)
    half_modules = dict(half.named_modules())
    x = torch.randn(2, 3, 64, 64)
    sn = fxrazor.convert(model, x)
    choices = {u.name: half_modules[_producer_conv(u, model)].out_channels for u in sn.units}
    # the half model halves every width but the last (1280 stays); some must shrink
    assert sum(choices[u.name] < u.num_channels for u in sn.units) >= 20
    sn.set_choices(choices)
    frozen = fxrazor.freeze(sn)
    got = {k: tuple(v.shape) for k, v in frozen.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in half.state_dict().items()}
    assert sorted(got) == sorted(expected)
    wrong = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert wrong == {}
    check = check_subnet(model, sn, x, frozen=frozen, oracle=True)
    assert _exact(check.frozen_error, check.output_scale), check.frozen_error
    assert _exact(check.oracle_error, output_scale(check.frozen_output)), check.oracle_error
