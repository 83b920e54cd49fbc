"""A converted or frozen model keeps its forward signature: arguments the example inputs
leave out keep their names, defaults and annotations, take their default, and refuse any
other value; the frozen module scripts and exports."""

from __future__ import annotations

import inspect
import pickle
import warnings
from typing import Optional  # noqa: UP035 - the annotation under test is spelled this way

import pytest
import torch
from torch import Tensor, nn

import fxrazor
from fxrazor.errors import InvalidArgumentError
from fxrazor.trace.signature import SPECIALIZED_KEY


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 1)

    def forward(self, image, scale: float = 1.0):
        return self.c2(torch.relu(self.c1(image))) * scale


class _Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 8)
        self.l2 = nn.Linear(8, 4)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:  # noqa: UP045
        y = self.l2(torch.relu(self.l1(x)))
        if attn_mask is not None:
            y = y + attn_mask
        return y


class _Unannotated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 6)
        self.l2 = nn.Linear(6, 4)

    def forward(self, x, mask=None, flag=True, repeats=2):
        y = self.l2(self.l1(x))
        if mask is not None:
            y = y * mask
        return y * repeats if flag else y


CASES = [(_Scaled, (1, 3, 6, 6), {"scale": 2.0}),
         (_Masked, (2, 3, 4), {"attn_mask": torch.ones(2, 3, 4)}),
         (_Unannotated, (2, 4), {"repeats": 3})]


def _signature(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.default, p.annotation) for p in inspect.signature(fn, eval_str=True).parameters.values()]


def _subnet(model: nn.Module, x: Tensor) -> tuple[fxrazor.Supernet, torch.fx.GraphModule]:
    sn = fxrazor.convert(model, x)
    sn.set_choices({u.name: max(1, u.num_channels // 2) for u in sn.units})
    sn(x)  # the lazily generated code exists from the first call
    return sn, fxrazor.freeze(sn)


@pytest.mark.parametrize(("cls", "shape", "other"), CASES)
def test_signature_names_defaults_and_annotations_are_the_models(cls, shape, other) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(shape)
    sn, frozen = _subnet(model, x)
    expected = _signature(model.forward)
    assert _signature(sn.graph_module.forward) == expected or cls is _Unannotated
    assert _signature(frozen.forward)[0] == expected[0]
    # names and defaults always; annotations where the model gives them
    assert [(n, d) for n, d, _ in _signature(frozen.forward)] == [(n, d) for n, d, _ in expected]
    given = {n: a for n, _, a in expected if a is not inspect.Parameter.empty}
    assert {n: a for n, _, a in _signature(frozen.forward) if n in given} == given
    assert set(sn.graph_module.meta[SPECIALIZED_KEY]) == {n for n, *_ in expected[1:]}
    assert sn.analysis.unknown_ops == ()  # the guards have a rule: they pin nothing
    assert frozen.meta[SPECIALIZED_KEY] == sn.graph_module.meta[SPECIALIZED_KEY]


@pytest.mark.parametrize(("cls", "shape", "other"), CASES)
def test_default_passed_explicitly_works_and_another_value_is_refused(cls, shape, other) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(shape)
    sn = fxrazor.convert(model, x)
    frozen = fxrazor.freeze(sn)
    defaults = {n: d for n, d, _ in _signature(model.forward)[1:]}
    with torch.no_grad():
        want = model(x)
        for module in (sn, sn.graph_module, frozen):
            torch.testing.assert_close(module(x, **defaults), want)
            torch.testing.assert_close(module(x), want)
            with pytest.raises(InvalidArgumentError, match=next(iter(other))):
                module(x, **other)
        positional = frozen(x, *defaults.values())
        torch.testing.assert_close(positional, want)
    # an unpickled frozen module (fx traces its code again) keeps the guard
    loaded = pickle.loads(pickle.dumps(frozen))
    with pytest.raises(InvalidArgumentError):
        loaded(x, **other)


@pytest.mark.parametrize(("cls", "shape", "other"), CASES)
def test_frozen_scripts_and_exports(cls, shape, other) -> None:
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(shape)
    _, frozen = _subnet(model, x)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = frozen(x)
        scripted = torch.jit.script(frozen)
        torch.testing.assert_close(scripted(x), want)
        with pytest.raises(torch.jit.Error, match="specialised"):
            scripted(x, **other)
        program = torch.export.export(frozen, (x,))
        torch.testing.assert_close(program.module()(x), want)


@pytest.mark.slow
def test_timm_vit_with_attn_mask_converts_scripts_and_exports() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    sn = fxrazor.convert(model, x)
    sn.set_choices(sn.sample_choices())
    frozen = fxrazor.freeze(sn)
    assert _signature(frozen.forward) == _signature(model.forward)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = sn(x)
        torch.testing.assert_close(frozen(x, attn_mask=None), want)
        torch.testing.assert_close(torch.jit.script(frozen)(x), want)
        torch.testing.assert_close(torch.export.export(frozen, (x,)).module()(x), want)
