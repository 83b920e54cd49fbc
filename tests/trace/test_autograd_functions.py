"""A custom autograd Function is kept as one call: its backward is never lost."""

from __future__ import annotations

import copy
import pickle

import torch
from torch import nn

import fxrazor


class Triple(torch.autograd.Function):
    """Forward: a copy; backward: three times the gradient (no op traced inside it has
    that backward, so inlining the forward would change the gradients)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def, override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def, override]
        return 3 * grad


class WithFunction(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(Triple.apply(self.b(torch.relu(self.a(x)))))


def _grads(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(x).square().sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_functions_backward_runs_in_the_supernet_and_the_frozen_model() -> None:
    torch.manual_seed(0)
    model, x = WithFunction(), torch.randn(2, 3, 5, 5)
    expected = _grads(model, x)
    sn = fxrazor.convert(model, x)
    got = _grads(sn.graph_module, x)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad)
    # the gradient through the Function is three times that of a plain copy
    plain = copy.deepcopy(model)
    plain.forward = lambda t: plain.c(plain.b(torch.relu(plain.a(t))))  # type: ignore
    assert not torch.allclose(_grads(plain, x)["a.weight"], expected["a.weight"])
    sn.set_choices({"a": 3})
    frozen = fxrazor.freeze(sn)
    assert not any(type(m).__module__.startswith("fxrazor") for m in frozen.modules())
    torch.testing.assert_close(frozen(x), sn(x))
    assert frozen.fxr_autograd_Triple is Triple  # the frozen model calls the Function
    assert not hasattr(model, "fxr_autograd_Triple")  # the user's model is left alone


def test_channels_through_the_function_are_pinned_with_its_name() -> None:
    model, x = WithFunction(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    assert [u.name for u in sn.units] == ["a"]  # b's channels cross the Function
    reasons = [r for group in sn.analysis.pinned for r in group.reasons]
    assert any("custom autograd Function Triple" in r for r in reasons)


def test_a_supernet_with_a_kept_function_copies_and_pickles() -> None:
    model, x = WithFunction(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    for other in (copy.deepcopy(sn), pickle.loads(pickle.dumps(sn))):
        torch.testing.assert_close(other(x), sn(x))
    assert torch.autograd.Function.apply.__self__ is torch.autograd.Function  # restored
