"""Layers written as functions on the model's own parameters (timm's BatchNormAct2d,
StdConv2d, ...): the rules of fxrazor.rules.functional_layers tie the parameters' dims to
the channels, pruning slices them and freeze stores the slices.

Every expected output is computed here with plain torch on hand-sliced tensors; the
frozen model must equal the supernet, and full width the original model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from oracles import assert_close
from torch import nn

import fxrazor
from fxrazor.verify.equivalence import check_full_width, check_subnet, oracle_applies


class ConvBnAct(nn.Module):
    """F.conv2d and F.batch_norm on parameters (the shape of timm's BatchNormAct2d), then a
    functional 1x1 conv that reads the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(8, 3, 3, 3)), nn.Parameter(torch.randn(8))
        self.gamma, self.beta = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))
        self.register_buffer("mean", torch.randn(8) * 0.1)
        self.register_buffer("var", torch.rand(8) + 0.5)
        self.w2 = nn.Parameter(torch.randn(4, 8, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.w1, self.b1, 1, 1)
        y = F.relu(F.batch_norm(y, self.mean, self.var, self.gamma, self.beta, False, 0.1, 1e-5))
        return F.conv2d(y, self.w2)


class StdConv(nn.Conv2d):
    """Weight standardisation as timm's StdConv2d writes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _standardise(w: torch.Tensor) -> torch.Tensor:
    """Each output filter over its own inputs and taps: (w - mean) / sqrt(var + eps)."""
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return (w - mean) / torch.sqrt(var + 1e-6)


def _kept(sn: fxrazor.Supernet, name: str) -> torch.Tensor:
    return sn.unit(name).current_mask.nonzero().flatten()


def _only_unit(sn: fxrazor.Supernet) -> str:
    assert len(sn.units) == 1, [u.name for u in sn.units]
    return sn.units[0].name


def test_functional_conv_and_batch_norm_prune_their_parameters() -> None:
    torch.manual_seed(0)
    model, x = ConvBnAct().eval(), torch.randn(2, 3, 6, 6)
    sn = fxrazor.convert(model, x)
    name = _only_unit(sn)
    assert sn.unit(name).num_channels == 8 and sn.analysis.unknown_ops == ()
    assert check_full_width(model, sn, x).error == 0.0
    sn.set_choices({name: 3})
    k = _kept(sn, name)
    m = model
    y = F.conv2d(x, m.w1[k], m.b1[k], 1, 1)
    y = (y - m.mean[k, None, None]) / torch.sqrt(m.var[k, None, None] + 1e-5)
    y = F.relu(y * m.gamma[k, None, None] + m.beta[k, None, None])
    expected = F.conv2d(y, m.w2[:, k])
    frozen = fxrazor.freeze(sn)
    assert_close(frozen(x), expected)
    assert_close(sn(x), expected)
    assert dict(frozen.named_buffers())["mean"].shape == (3,)  # stored sliced
    assert dict(frozen.named_parameters())["w2"].shape == (4, 3, 1, 1)
    check = check_subnet(model, sn, x)
    assert check.oracle_error is not None and check.passed()  # eval statistics: exact


def test_weight_standardisation_prunes_inputs_with_their_own_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), StdConv(6, 4, 3, padding=1)).eval()
    x = torch.randn(2, 3, 5, 5)
    sn = fxrazor.convert(model, x)
    name = _only_unit(sn)  # the std conv's outputs are the model output
    assert check_full_width(model, sn, x).error < 1e-5
    sn.set_choices({name: 4})
    k = _kept(sn, name)
    conv, std = model[0], model[2]
    y = F.relu(F.conv2d(x, conv.weight[k], conv.bias[k]))
    # statistics over the kept input channels only: the weight is sliced, then standardised
    expected = F.conv2d(y, _standardise(std.weight[:, k]), std.bias, padding=1)
    assert_close(fxrazor.freeze(sn)(x), expected)
    assert_close(sn(x), expected)
    # zeroing an input column is not removing it from the statistics: no oracle here
    assert not oracle_applies(sn)
    check = check_subnet(model, sn, x)
    assert check.oracle_error is None and check.passed()


def test_weight_standardisation_prunes_outputs_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(StdConv(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
    x = torch.randn(1, 3, 6, 6)
    sn = fxrazor.convert(model, x)
    name = _only_unit(sn)
    sn.set_choices({name: 2})
    k = _kept(sn, name)
    std, conv = model[0], model[2]
    expected = F.conv2d(F.relu(F.conv2d(x, _standardise(std.weight)[k], std.bias[k])),
                        conv.weight[:, k], conv.bias)
    assert_close(fxrazor.freeze(sn)(x), expected)
    # output filters are standardised one by one: zeroing a filter is removing it
    assert oracle_applies(sn) and check_subnet(model, sn, x).passed()


class Depthwise(nn.Module):
    def __init__(self, keyword: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.dw = nn.Parameter(torch.randn(12, 1, 3, 3))  # a channel multiplier of 2
        self.head = nn.Conv2d(12, 2, 1)
        self.keyword = keyword

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = F.conv2d(y, self.dw, groups=6) if self.keyword else \
            F.conv2d(y, self.dw, None, 1, 0, 1, 6)
        return self.head(y)


def test_functional_depthwise_conv_follows_its_groups() -> None:
    torch.manual_seed(0)
    model, x = Depthwise().eval(), torch.randn(1, 3, 5, 5)
    sn = fxrazor.convert(model, x)
    name = _only_unit(sn)
    assert sn.unit(name).num_channels == 6
    sn.set_choices({name: 2})
    k = _kept(sn, name)
    out_k = torch.stack([2 * k, 2 * k + 1], 1).flatten()  # both outputs of each kept input
    m = model
    y = F.conv2d(F.conv2d(x, m.conv.weight[k], m.conv.bias[k]), m.dw[out_k], groups=len(k))
    expected = F.conv2d(y, m.head.weight[:, out_k], m.head.bias)
    assert_close(fxrazor.freeze(sn)(x), expected)
    assert_close(sn(x), expected)
    assert check_subnet(model, sn, x).passed()


def test_keyword_groups_of_a_depthwise_conv_pin_with_the_reason() -> None:
    sn = fxrazor.convert(Depthwise(keyword=True).eval(), torch.randn(1, 3, 5, 5))
    assert sn.units == []
    reasons = {r for g in sn.analysis.pinned for r in g.reasons}
    assert any("groups cannot follow" in r for r in reasons), reasons


class Grouped(nn.Module):
    def __init__(self, norm_groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.w = nn.Parameter(torch.randn(4, 4, 1, 1))  # 2 groups of 4 inputs -> 2 x 2
        self.gn_w, self.gn_b = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8))
        self.norm_groups = norm_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(self.conv(x), self.norm_groups, self.gn_w, self.gn_b, 1e-5)
        return F.conv2d(y, self.w, None, 1, 0, 1, 2)


def test_grouped_functional_conv_ties_channels_across_groups() -> None:
    torch.manual_seed(0)
    model, x = Grouped(norm_groups=8).eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    name = _only_unit(sn)
    assert sn.unit(name).num_channels == 4  # channel j of group 0 goes with j of group 1
    sn.set_choices({name: 2})
    j = _kept(sn, name)
    k = torch.cat([j, j + 4])
    m = model
    # one channel per group: the group count follows the kept channels
    y = F.group_norm(F.conv2d(x, m.conv.weight[k], m.conv.bias[k]), len(k), m.gn_w[k], m.gn_b[k])
    expected = F.conv2d(y, m.w[:, j], groups=2)
    assert_close(fxrazor.freeze(sn)(x), expected)
    assert_close(sn(x), expected)
    assert oracle_applies(sn)  # per-channel statistics: zeroing is removing


def test_functional_group_norm_keeps_its_groups_and_has_no_oracle() -> None:
    torch.manual_seed(0)
    model, x = Grouped(norm_groups=2).eval(), torch.randn(1, 3, 4, 4)
    sn = fxrazor.convert(model, x)
    name = _only_unit(sn)
    sn.set_choices({name: 3})
    j = _kept(sn, name)
    k = torch.cat([j, j + 4])
    m = model
    y = F.conv2d(x, m.conv.weight[k], m.conv.bias[k]).reshape(1, 2, -1)
    y = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True)
                                                    + 1e-5)
    y = y.reshape(1, 6, 4, 4) * m.gn_w[k, None, None] + m.gn_b[k, None, None]
    expected = F.conv2d(y, m.w[:, j], groups=2)
    assert_close(fxrazor.freeze(sn)(x), expected)
    assert not oracle_applies(sn)
    assert check_subnet(model, sn, x).passed()


class Transposed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.w, self.b = nn.Parameter(torch.randn(6, 4, 2, 2)), nn.Parameter(torch.randn(4))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.conv_transpose2d(self.conv(x), self.w, self.b, 2))


def test_functional_transposed_conv_reads_and_makes_channels() -> None:
    torch.manual_seed(0)
    model, x = Transposed().eval(), torch.randn(1, 3, 3, 3)
    sn = fxrazor.convert(model, x)
    assert sorted(u.num_channels for u in sn.units) == [4, 6]
    choices = {u.name: u.num_channels // 2 for u in sn.units}
    sn.set_choices(choices)
    first, second = sorted(sn.units, key=lambda u: -u.num_channels)
    a, b = _kept(sn, first.name), _kept(sn, second.name)
    m = model
    y = F.conv_transpose2d(F.conv2d(x, m.conv.weight[a], m.conv.bias[a]), m.w[a][:, b],
                           m.b[b], 2)
    expected = F.conv2d(y, m.head.weight[:, b], m.head.bias)
    assert_close(fxrazor.freeze(sn)(x), expected)
    assert check_subnet(model, sn, x).passed()
