"""Layer groups (``fxrazor.layer_groups``): one unit per layer, grouped by role from the
units' paths; one width set on every layer at once; a group tied into one search choice.
The oracle of the widths is the kept channel count of every unit, read one by one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import InvalidArgumentError, InvalidChoiceError, UnknownUnitError
from fxrazor.layer_groups import group_by_layer, layer_groups, set_layer_widths, tie_layer_groups

D = 8


class Block(nn.Module):
    """A residual encoder layer: a per-head projection pair named like attention, and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Sequential(nn.Linear(D, 12), nn.Linear(12, D))
        self.mlp = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class Net(nn.Module):
    def __init__(self, layers: int = 3) -> None:
        super().__init__()
        self.embed = nn.Linear(4, D)
        self.layers = nn.ModuleList(Block() for _ in range(layers))
        self.head = nn.Linear(D, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@pytest.fixture
def sn():
    return fxrazor.convert(Net(), torch.randn(2, 4))


def _kept(sn, pattern: str, layers: int = 3) -> list[int]:
    return [sn.unit(pattern.replace("*", str(i))).activated_channels for i in range(layers)]


def test_groups_by_role_and_layer(sn) -> None:
    groups = layer_groups(sn)
    assert {k: (g.pattern, list(g.units)) for k, g in groups.items()} == {
        "hidden": ("embed", [""]),
        "attention": ("layers.*.attn.0", ["0", "1", "2"]),
        "mlp": ("layers.*.mlp.0", ["0", "1", "2"]),
    }
    assert groups["mlp"].widths(sn) == {"0": 16, "1": 16, "2": 16}


def test_patterns_keep_indices_that_do_not_vary() -> None:
    names = ["enc.layers.0.mlp.0", "enc.layers.1.mlp.0", "dec.layers.0.mlp.0", "dec.layers.1.mlp.0",
             "dec.layers.0.mlp.2"]
    assert group_by_layer(names) == {
        "enc.layers.*.mlp.0": {"0": "enc.layers.0.mlp.0", "1": "enc.layers.1.mlp.0"},
        "dec.layers.*.mlp.0": {"0": "dec.layers.0.mlp.0", "1": "dec.layers.1.mlp.0"},
        "dec.layers.*.mlp.2": {"0": "dec.layers.0.mlp.2"},  # a layer's own extra unit
    }
    assert group_by_layer(["embed", "head.0"]) == {"embed": {"": "embed"},
                                                   "head.0": {"": "head.0"}}


def test_two_patterns_of_one_role_are_named_by_pattern() -> None:
    class EncDec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = Net(2), Net(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x).repeat(1, 2))

    groups = layer_groups(fxrazor.convert(EncDec(), torch.randn(2, 4)))
    assert "mlp" not in groups
    assert {"encoder.layers.*.mlp.0", "decoder.layers.*.mlp.0"} <= set(groups)


def test_set_layer_widths_sets_every_layer_at_once(sn) -> None:
    set_layer_widths(sn, {"mlp": 5, "attention": 7})
    assert _kept(sn, "layers.*.mlp.0") == [5, 5, 5]
    assert _kept(sn, "layers.*.attn.0") == [7, 7, 7]
    before = sn.choices()
    with pytest.raises(InvalidChoiceError):  # 99 > 16: refused, nothing half-applied
        set_layer_widths(sn, {"attention": 3, "mlp": 99})
    assert sn.choices() == before
    with pytest.raises(UnknownUnitError, match="'ffn'.*'attention', 'hidden', 'mlp'"):
        set_layer_widths(sn, {"ffn": 3})


def test_tied_group_is_one_choice(sn) -> None:
    keys = tie_layer_groups(sn, choices={"mlp": [4, 8, 16]})
    assert keys == {"attention": [f"layers.{i}.attn.0.width" for i in range(3)],
                    "mlp": [f"layers.{i}.mlp.0.width" for i in range(3)]}
    assert sn.choices() == {"embed": D, "attention": 12, "mlp": 16}
    sn.set_choices({"mlp": 4, "attention": 3})
    assert _kept(sn, "layers.*.mlp.0") == [4, 4, 4]
    assert _kept(sn, "layers.*.attn.0") == [3, 3, 3]
    set_layer_widths(sn, {"mlp": 8})  # a tied group's key is passed on as it is
    assert _kept(sn, "layers.*.mlp.0") == [8, 8, 8]
    for _ in range(5):  # a sample picks one width for every layer
        sn.set_choices(sn.sample_choices())
        assert len(set(_kept(sn, "layers.*.mlp.0"))) == 1
    x = torch.randn(2, 4)
    assert torch.allclose(fxrazor.freeze(sn)(x), sn(x))


def test_a_refused_tie_changes_nothing(sn) -> None:
    choices = sn.choices()
    with pytest.raises(InvalidChoiceError, match="width 32"):  # 32 > 16 channels
        tie_layer_groups(sn, ["attention", "mlp"], choices={"mlp": [8, 32]})
    assert sn.choices() == choices  # the attention group, tied first, is untied again

    class Uneven(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Sequential(nn.Linear(4, w), nn.Linear(w, 4))
                                        for w in (6, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers[1](self.layers[0](x))

    uneven = fxrazor.convert(Uneven(), torch.randn(2, 4))
    with pytest.raises(InvalidArgumentError, match="differ in channel count"):
        tie_layer_groups(uneven)
    with pytest.raises(UnknownUnitError, match="'ffn'"):
        tie_layer_groups(sn, ["ffn"])
