"""copy_module: a deep copy whose weights are copied on first write, never shared in effect."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.trace.copying import copy_module

_is_cow = getattr(torch._C, "_is_cow_tensor", None)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 4))


def test_copy_equals_original_and_writes_stay_on_their_side() -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    twin = copy_module(model)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(twin.eval()(x), model.eval()(x))
    with torch.no_grad():
        twin[0].weight.add_(1.0)          # write through the copy
        model[4].bias.zero_()             # write through the original
    assert torch.equal(model[0].weight, before["0.weight"])
    assert torch.equal(twin[4].bias, before["4.bias"])
    assert not torch.equal(twin[0].weight, before["0.weight"])


def test_training_the_copy_leaves_the_original_untouched() -> None:
    model = _model()
    before = copy.deepcopy(model.state_dict())
    twin = copy_module(model).train()
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.5)
    twin(torch.randn(4, 3, 8, 8)).square().sum().backward()
    optimizer.step()                     # also BatchNorm running stats were written
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not torch.equal(twin[1].running_mean, before["1.running_mean"])


def test_tied_and_view_sharing_weights_stay_shared_in_the_copy() -> None:
    model = _model()
    model.extra = nn.Linear(8 * 6 * 6, 4)
    model.extra.weight = model[4].weight                      # tied parameter
    flat = torch.zeros(10)
    model.register_buffer("a", flat[:5])                      # two views of one storage
    model.register_buffer("b", flat[5:])
    twin = copy_module(model)
    assert twin.extra.weight is twin[4].weight
    with torch.no_grad():
        twin.a.fill_(1.0)
    assert twin.a.untyped_storage()._cdata == twin.b.untyped_storage()._cdata
    assert torch.equal(flat, torch.zeros(10))


def test_shared_memory_tensors_fall_back_to_a_plain_copy() -> None:
    model = _model()
    model[4].weight.share_memory_()
    twin = copy_module(model)
    assert torch.equal(twin[4].weight, model[4].weight) and model[4].weight.is_shared()
    if _is_cow is not None:
        assert not _is_cow(model[4].weight)       # the shared-memory original is left as is


@pytest.mark.skipif(_is_cow is None, reason="this torch has no copy-on-write tensors")
def test_convert_copies_weights_lazily_and_never_changes_the_model() -> None:
    model = _model().eval()
    before = copy.deepcopy(model.state_dict())
    sn = fxrazor.convert(model, torch.randn(1, 3, 8, 8))
    assert _is_cow(model[0].weight)               # no 100 MB copy paid up front
    sn.train()
    optimizer = torch.optim.SGD(sn.parameters(), lr=0.5)
    sn(torch.randn(4, 3, 8, 8)).square().sum().backward()
    optimizer.step()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


class _CustomCopy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)
        self.copied_by_hand = False

    def __deepcopy__(self, memo: dict) -> _CustomCopy:
        new = _CustomCopy()
        new.copied_by_hand = True
        return new


class _Odd(nn.Module):
    """Attributes of every kind a module tree holds, shared objects included."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Conv2d(3, 3, 1)
        self.branches = nn.ModuleList([self.shared, nn.ReLU()])
        self.config = {"sizes": [1, 2, (3, 4)], "name": "x", "dtype": torch.float16}
        self.alias = self.config["sizes"]
        self.tags = {"a", "b"}
        self.plain_tensor = torch.arange(4.0)
        self.custom = _CustomCopy()
        self.register_forward_hook(lambda mod, args, out: out * 2)
        self.empty_table: dict = {}  # empty containers shared with a child stay shared
        self.empty_names: set = set()
        self.branches[1].empty_table, self.branches[1].empty_names = \
            self.empty_table, self.empty_names


def _walk(a: object, b: object, seen: set[int]) -> None:
    """``b`` is a faithful deep copy of ``a``: same types and values, no shared mutables."""
    assert type(a) is type(b)
    if id(a) in seen or isinstance(a, (int, float, str, bytes, type(None), torch.dtype,
                                       _CustomCopy)):
        return
    seen.add(id(a))
    if isinstance(a, torch.Tensor):
        assert a is not b and torch.equal(a, b) and a.requires_grad == b.requires_grad
    elif isinstance(a, (dict, list, set, nn.Module)):
        assert a is not b
        if isinstance(a, nn.Module):
            a, b = vars(a), vars(b)
        if isinstance(a, dict):
            assert list(a) == list(b)
            for k in a:
                _walk(a[k], b[k], seen)
        elif isinstance(a, list):
            for x, y in zip(a, b, strict=True):
                _walk(x, y, seen)
        else:
            assert a == b
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _walk(x, y, seen)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vit_b_16", "odd"])
def test_copy_module_is_a_faithful_deep_copy(name: str) -> None:
    if name == "odd":
        model = _Odd()
    else:
        torchvision = pytest.importorskip("torchvision")
        model = torchvision.models.get_model(name, weights=None)
    twin = copy_module(model)
    _walk(model, twin, set())
    if name == "odd":
        assert twin.branches[0] is twin.shared and twin.alias is twin.config["sizes"]
        assert twin.custom.copied_by_hand          # a module's own __deepcopy__ is honoured
        assert twin.branches[1].empty_table is twin.empty_table
        assert twin.branches[1].empty_names is twin.empty_names
        x = torch.randn(1, 3, 2, 2)
        assert torch.equal(twin.shared(x), model.shared(x))
        assert len(twin._forward_hooks) == 1


def test_without_copy_on_write_tensors_the_copy_is_a_plain_deep_copy(monkeypatch) -> None:
    import fxrazor.trace.copying as copying

    monkeypatch.setattr(copying, "_lazy_clone", None)  # a torch without torch._lazy_clone
    model = _model()
    twin = copy_module(model)
    _walk(model, twin, set())
    if _is_cow is not None:
        assert not _is_cow(model[0].weight) and not _is_cow(twin[0].weight)
    with torch.no_grad():
        twin[0].weight.zero_()
    assert bool(model[0].weight.abs().sum() > 0)


class _Restoring(nn.Linear):
    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.restored = True


def test_copy_runs_a_modules_own_setstate_and_drops_a_compiled_forward() -> None:
    model = nn.Sequential(_Restoring(2, 2), nn.ReLU())
    model[1].__dict__["_compiled_call_impl"] = lambda *args: None  # as Module.compile sets
    for twin in (copy_module(model), copy.deepcopy(model)):  # as deepcopy does
        assert twin[0].restored and not hasattr(model[0], "restored")
        assert "_compiled_call_impl" not in vars(twin[1])
        assert "_compiled_call_impl" in vars(model[1])


class _NoCopy:
    def __deepcopy__(self, memo: dict) -> _NoCopy:
        raise TypeError("cannot be copied")


def test_a_compiled_forward_is_dropped_before_copying() -> None:
    model = nn.Sequential(nn.ReLU())
    model[0].__dict__["_compiled_call_impl"] = _NoCopy()  # never copied, as by deepcopy
    for twin in (copy_module(model), copy.deepcopy(model)):
        assert "_compiled_call_impl" not in vars(twin[0])
