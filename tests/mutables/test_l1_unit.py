"""L1MutableChannelUnit: importance from the current weights (arXiv 1608.08710, MMRazor's
aggregation), computed by hand here: per producing member the mean |w| of each channel's
slice, then the average over the members."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from oracles import assert_close
from torch import nn

import fxrazor
from fxrazor.errors import InvalidChoiceError
from fxrazor.mutables.l1_unit import L1MutableChannelUnit
from fxrazor.verify.oracle import zero_pruned_channels


def _mean_rows(w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Mean |w| per index of ``dim`` (by hand: move the dim first, flatten the rest)."""
    return w.detach().abs().transpose(0, dim).reshape(w.shape[dim], -1).mean(1)


def _only_unit(sn: fxrazor.Supernet) -> L1MutableChannelUnit:
    (unit,) = sn.units
    assert isinstance(unit, L1MutableChannelUnit)
    return unit


class ConvPair(nn.Module):
    """A transposed conv and a conv (and a scale parameter) write one unit, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 6, 1)  # (in, out, k, k): out channels on dim 1
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.gamma = nn.Parameter(torch.randn(6, 1, 1))
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.up(x) + self.conv(x)) * self.gamma)


class EmbedPair(nn.Module):
    """An embedding (channels on weight dim 1) and a linear layer write one unit, summed."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.lin = nn.Linear(5, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, idx: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(idx) + self.lin(z))


def test_importance_averages_mean_abs_weights_over_conv_transposed_and_parameter() -> None:
    torch.manual_seed(0)
    model = ConvPair().eval()
    sn = fxrazor.convert(model, torch.randn(1, 3, 5, 5), unit="l1")
    expected = (_mean_rows(model.up.weight, 1) + _mean_rows(model.conv.weight)
                + _mean_rows(model.gamma)) / 3
    torch.testing.assert_close(_only_unit(sn).importance, expected)


def test_importance_averages_embedding_and_linear() -> None:
    torch.manual_seed(0)
    model = EmbedPair().eval()
    sn = fxrazor.convert(model, (torch.randint(0, 10, (2, 4)), torch.randn(2, 4, 5)),
                         unit="l1")
    expected = (_mean_rows(model.emb.weight, 1) + _mean_rows(model.lin.weight)) / 2
    torch.testing.assert_close(_only_unit(sn).importance, expected)


def _conv_bn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 2, 1)).eval()
    with torch.no_grad():  # give the BN statistics that are not the identity
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model, torch.randn(2, 3, 6, 6)


def test_l1_keeps_the_channels_whose_weights_grew() -> None:
    model, x = _conv_bn()
    sn = fxrazor.convert(model, x, unit="l1")
    unit = _only_unit(sn)
    grown = [1, 4, 6]
    with torch.no_grad():
        sn.graph_module.get_submodule("0").weight[grown] *= 100
    unit.current_choice = 3
    assert unit.current_mask.nonzero().flatten().tolist() == grown
    frozen = fxrazor.freeze(sn)
    assert frozen.get_submodule("0").out_channels == 3
    with torch.no_grad():
        assert_close(frozen(x), sn(x))
    # the model itself was not touched
    assert not torch.equal(model[0].weight, sn.graph_module.get_submodule("0").weight)


def test_the_mask_is_made_at_choice_time_and_on_refresh() -> None:
    model, x = _conv_bn()
    sn = fxrazor.convert(model, x, unit="l1")
    unit = _only_unit(sn)
    sn.set_choices({unit.name: 2})
    before = unit.current_mask
    weak = (~before).nonzero().flatten()[:2]
    with torch.no_grad():
        sn.graph_module.get_submodule("0").weight[weak] *= 100
    assert torch.equal(unit.current_mask, before)  # weights changed, no new choice yet
    unit.refresh()
    assert unit.current_mask.nonzero().flatten().tolist() == sorted(weak.tolist())
    # a choice set on the mutable channel itself (past the unit) is ranked when read
    unit.mutable_channel.current_choice = 3
    assert int(unit.current_mask.sum()) == 3 and unit.current_mask[weak].all()


def test_zero_invariance_oracle_with_l1_choices() -> None:
    model, x = _conv_bn()
    with torch.no_grad():
        model[0].weight[[0, 5]] *= 50  # rank two channels first in the model itself
    sn = fxrazor.convert(model, x, unit="l1")
    sn.set_choices({"0": 2})
    assert _only_unit(sn).current_mask.nonzero().flatten().tolist() == [0, 5]
    frozen = fxrazor.freeze(sn)
    with torch.no_grad():
        assert_close(zero_pruned_channels(model, sn)(x), frozen(x))
        assert_close(frozen(x), sn(x))


def test_set_importance_overrides_the_weights_until_cleared() -> None:
    model, x = _conv_bn()
    sn = fxrazor.convert(model, x, unit="l1")
    unit = _only_unit(sn)
    unit.current_choice = 2
    by_weights = unit.current_mask
    unit.set_importance(torch.arange(8.0))
    assert unit.current_mask.nonzero().flatten().tolist() == [6, 7]
    assert torch.equal(unit.importance, torch.arange(8.0))
    unit.set_importance(None)
    assert torch.equal(unit.current_mask, by_weights)
    with pytest.raises(InvalidChoiceError, match=r"shape \(8,\)"):
        unit.set_importance(torch.ones(3))
    with pytest.raises(InvalidChoiceError, match="list"):
        unit.set_importance([1.0] * 8)  # type: ignore[arg-type]
    assert torch.equal(unit.current_mask, by_weights)  # nothing changed by the bad calls


def test_meta_weights_keep_the_first_channels() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    sn = fxrazor.convert(model, torch.empty(1, 4, device="meta"), unit="l1")
    unit = _only_unit(sn)
    unit.current_choice = 3
    assert unit.current_mask.tolist() == [True] * 3 + [False] * 5


def test_a_unit_without_weights_keeps_the_first_channels() -> None:
    unit = L1MutableChannelUnit(5)
    unit.current_choice = 2
    assert unit.current_mask.tolist() == [True, True, False, False, False]


def test_deepcopy_and_pickle_keep_reading_their_own_weights() -> None:
    model, x = _conv_bn()
    sn = fxrazor.convert(model, x, unit="l1")
    sn.set_choices({"0": 3})
    # the unit refers to the graph without owning it: no module cycle, no extra state
    assert [type(m).__name__ for m in _only_unit(sn).modules()] == \
        ["L1MutableChannelUnit", "SquentialMutableChannel"]
    buffer = io.BytesIO()
    torch.save(sn, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(sn), torch.load(buffer, weights_only=False)):
        assert torch.equal(_only_unit(twin).current_mask, _only_unit(sn).current_mask)
        with torch.no_grad():
            assert_close(twin(x), sn(x))
            twin.graph_module.get_submodule("0").weight[[2, 3, 7]] *= 100
        _only_unit(twin).refresh()
        assert _only_unit(twin).current_mask.nonzero().flatten().tolist() == [2, 3, 7]
        assert _only_unit(sn).current_mask.nonzero().flatten().tolist() != [2, 3, 7]


def test_a_unit_pickled_with_an_importance_buffer_still_ranks_by_it() -> None:
    state = dict(L1MutableChannelUnit(4).__dict__)  # as the buffer-holding version had it
    for key in ("_fxr_weights", "_fxr_importance", "_fxr_mask", "_fxr_mask_k"):
        del state[key]
    state["_buffers"] = {"importance": torch.tensor([0.0, 3.0, 1.0, 2.0])}
    old = L1MutableChannelUnit.__new__(L1MutableChannelUnit)
    old.__setstate__(state)
    old.current_choice = 2
    assert old.current_mask.tolist() == [False, True, False, True]
    assert "importance" not in dict(old.named_buffers())
