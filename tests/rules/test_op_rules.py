"""Op rules of functions and methods (reshapes, permutes, pooling, reductions, roll, pad):
exact units on small models, worked out by hand from the model's structure (see the
builders in ``tests/helpers/models.py``), never taken from the analysis itself.
"""

from __future__ import annotations

import models as M
import pytest
import torch
from torch import nn
from unit_checks import (
    analyse,
    expect,
    ident,
    membership,
    pinned_positions,
    pinned_whole,
    positions,
    reasons_of,
    unit_with,
)

import fxrazor


# --------------------------------------------------------------- 9. squeeze-excitation
@pytest.mark.parametrize("builder", [M.se_conv, M.se_linear], ids=["conv", "linear"])
def test_squeeze_excitation(builder):
    a = analyse(builder)
    assert membership(a) == expect(
        (8, {"conv0.out": 1, "fc1.in": 1, "fc2.out": 1, "conv1.in": 1}),
        (2, {"fc1.out": 1, "fc2.in": 1}),
    )
    assert positions(unit_with(a, "conv0.out"), "fc2.out") == ident(8)
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv1__out=4)


# ------------------------------------------------------------- 10. flatten → Linear
@pytest.mark.parametrize("how", ["module", "function", "view_size", "view_literal"])
def test_flatten_to_linear(how):
    a = analyse(M.flatten_linear, how)
    assert membership(a) == expect((4, {"conv.out": 1, "fc.in": 16}))
    u = a.units[0]
    assert positions(u, "fc.in") == [list(range(c * 16, c * 16 + 16)) for c in range(4)]
    assert pinned_positions(a) == pinned_whole(conv__in=3, fc__out=10)
    if how == "view_literal":  # x.view(-1, 64): the literal 64 must follow the conv unit
        (site,) = a.resize_sites
        assert site.kind == "arg" and site.where == ((2,),)  # node.args[2] is the 64
        (part,) = site.parts
        assert part.unit.tolist() == [0] * 64
        assert part.channel.tolist() == [c for c in range(4) for _ in range(16)]
    else:
        assert a.resize_sites == ()


# -------------------------------------------------------------- 11. channel shuffle
def test_channel_shuffle_follows_the_permutation():
    a = analyse(M.channel_shuffle)
    # view(n, 2, 4): channel c = g*4 + i; transpose → position 2*i + g of conv1's input
    perm = {g * 4 + i: 2 * i + g for g in range(2) for i in range(4)}
    assert membership(a) == expect((4, {"conv0.out": 2, "conv1.in": 2}))
    u = a.units[0]
    outs, ins = positions(u, "conv0.out"), positions(u, "conv1.in")
    for out_row, in_row in zip(outs, ins, strict=True):
        assert sorted(perm[p] for p in out_row) == sorted(in_row)
    # every group keeps the same channels: channel j of group 0 with channel j of group 1
    assert sorted(map(sorted, outs)) == [[j, j + 4] for j in range(4)]
    # the literals 4 (channels per group) and 8 (channels) follow the unit
    sites = {s.node: s for s in a.resize_sites}
    assert {s.where for s in sites.values()} == {((3,),), ((2,),)}  # node.args paths
    for site in sites.values():
        (part,) = site.parts
        assert (part.unit == 0).all() and len(part) in (4, 8)


# ------------------------------------------------------------ 12. pooling, reductions
def test_pooling_and_activations_keep_units():
    a = analyse(M.pooling)
    assert membership(a) == expect(
        (4, {"conv0.out": 1, "conv1.in": 1}), (6, {"conv1.out": 1, "conv2.in": 1}),
        (5, {"conv2.out": 1, "fc.in": 1}),
    )
    assert pinned_positions(a) == pinned_whole(conv0__in=3, fc__out=3)


def test_mean_over_channels_pins():
    a = analyse(M.mean_over_channels)
    assert a.units == ()
    assert pinned_positions(a) == pinned_whole(conv0__in=3, conv0__out=4, conv1__in=1,
                                               conv1__out=2)
    assert any("mean" in r and "reduces" in r for r in reasons_of(a, "conv0.out"))


def test_roll_and_pad_keep_other_dims_prunable() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)
            self.c, self.d = nn.Linear(4, 5), nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.pad(self.a(x), (0, 0, 1, x.shape[1] % 2))
            y = torch.roll(y, shifts=(-x.shape[1],), dims=(1,))  # rolls positions, not channels
            z = torch.roll(self.c(x), shifts=1, dims=-1)  # rolls channels: they stay
            return self.b(y).sum(1) + self.d(z).sum(1)

    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(2, 5, 4)
    sn = fxrazor.convert(model, x)
    assert [u.name for u in sn.units] == ["a"]
    assert any("rolls along it" in r for g in sn.analysis.pinned for r in g.reasons)
    sn.set_choices({"a": 2})
    frozen = fxrazor.freeze(sn)
    torch.testing.assert_close(frozen(x), sn(x))
    assert frozen.get_submodule("a").out_features == 2
