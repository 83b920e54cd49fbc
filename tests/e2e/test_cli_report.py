"""The command line's numbers mean what their labels say: FLOPs per sample equal what
torch's FlopCounterMode counts on one sample of the original model; default inputs are
the models' own sizes; a constant output is never passed off as an exactness check."""

from __future__ import annotations

import cli_factory
import cli_output
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import fxrazor
from fxrazor.cli import main
from fxrazor.cli.models import load_model
from fxrazor.cli.report import Exactness, check_exact


def _flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(x)
    return float(counter.get_total_flops())


def test_resnet50_flops_per_sample_are_flop_counter_mode_at_batch_1(capsys) -> None:
    torchvision = pytest.importorskip("torchvision")
    code = main(["inspect", "torchvision:resnet50", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    label, (flops,), (macs,) = cli_output.flops(out)
    assert label == "batch 1, input 3x224x224"
    counted = _flops(torchvision.models.resnet50(), torch.randn(1, 3, 224, 224))
    assert flops == pytest.approx(counted / 1e9, rel=1e-3)
    assert macs == pytest.approx(4.1, rel=0.01)  # the 4.1 GMACs ResNet-50 is known for
    assert cli_output.params(out)[0] == pytest.approx(25.557, rel=1e-3)


def test_a_larger_batch_is_divided_and_says_so(capsys) -> None:
    model, x = cli_factory.build()  # a batch of 2
    code = main(["prune", "cli_factory:build", "--ratio", "0.5", "--repeats", "0", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    label, (before, _after), _ = cli_output.flops(out)
    assert label == "counted at batch 2 and divided by 2, input 3x16x16"
    assert before == pytest.approx(_flops(model, x[:1]) / 1e9, rel=1e-3)


@pytest.mark.parametrize(("spec", "shape"), [
    ("torchvision:resnet50", (1, 3, 224, 224)),
    ("torchvision:inception_v3", (1, 3, 299, 299)),
    ("torchvision:fcn_resnet50", (1, 3, 520, 520)),
    ("torchvision:r3d_18", (1, 3, 16, 112, 112)),
    pytest.param("torchvision:vit_b_16", (1, 3, 224, 224), marks=pytest.mark.slow),
    pytest.param("timm:resnet18", (1, 3, 224, 224), marks=pytest.mark.slow),
])
def test_default_inputs_are_the_models_own_sizes(spec, shape) -> None:
    pytest.importorskip(spec.split(":")[0])
    loaded = load_model(spec)
    assert tuple(loaded.inputs.shape) == shape and not loaded.model.training
    assert tuple(load_model(spec, batch=3).inputs.shape) == (3, *shape[1:])


def test_a_zero_head_is_checked_on_randomised_weights(capsys) -> None:
    code = main(["prune", "cli_factory:zero_head", "--ratio", "0.5", "--repeats", "0", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    line, error, scale = cli_output.exactness(out)
    assert "randomised weights" in line and scale > 1e-2 and error <= 1e-4 * max(1.0, scale)


def test_the_randomised_check_leaves_the_supernet_alone() -> None:
    model, x = cli_factory.zero_head()
    sn = fxrazor.convert(model.eval(), x, unit="l1")
    sn.set_choices({u.name: u.num_channels // 2 for u in sn.units})
    before = {k: v.clone() for k, v in sn.graph_module.state_dict().items()}
    check = check_exact(sn, fxrazor.freeze(sn), x)
    assert check.randomised and check.checked and check.passed
    after = sn.graph_module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_output_constant_whatever_the_weights_is_not_called_exact(capsys) -> None:
    code = main(["prune", "cli_factory:constant_output", "--repeats", "0", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "frozen == supernet: not checked" in out and "max |diff|" not in out


def test_a_difference_is_reported_as_one() -> None:
    check = Exactness(error=0.5, scale=2.0)
    assert not check.passed
    assert check.line() == ("frozen != supernet: max |diff| 5.0e-01 (output scale 2.0e+00), "
                            "MORE than 1e-04 of the scale")


@pytest.mark.slow
def test_vit_b_16_zero_head_is_checked_on_randomised_weights(capsys) -> None:
    pytest.importorskip("torchvision")
    code = main(["prune", "torchvision:vit_b_16", "--ratio", "0.5", "--repeats", "0", "-q"])
    line, error, scale = cli_output.exactness(capsys.readouterr().out)
    assert code == 0 and "randomised weights" in line and scale > 1e-2


def test_inspect_draws_the_units(capsys, tmp_path) -> None:
    path = tmp_path / "units.svg"
    code = main(["inspect", "cli_factory:build", "--draw", str(path), "-q"])
    out = capsys.readouterr().out
    assert code == 0 and path.is_file() and f"drew the units to {path}" in out
    text = path.read_text()
    assert "model output" in text
    sn = fxrazor.convert(*cli_factory.build())
    assert all(u.name in text for u in sn.units)
