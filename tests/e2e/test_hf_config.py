"""``fxrazor.hf`` without transformers: a stand-in model built from a config of sizes,
the way a ``PreTrainedModel`` is. The new config's sizes are counted by hand; the model
built from it must compute the frozen subnet's output, and where the config's sizes mean
something else than the units pruned (here a constant derived from a size), the check
refuses it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import PretrainedExportError
from fxrazor.hf import pruned_config, to_pretrained


class Config:
    architectures = None

    def __init__(self, hidden_size: int = 4, intermediate_size: int = 8) -> None:
        self.hidden_size, self.intermediate_size = hidden_size, intermediate_size

    def to_dict(self) -> dict:
        return dict(vars(self))


class Mlp(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.up = nn.Linear(config.hidden_size, config.intermediate_size)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x).relu())

    def save_pretrained(self, directory: str) -> None:
        raise NotImplementedError


class MeanScaledMlp(Mlp):
    """Divides by a size of its config: the frozen subnet keeps the original's 8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x).relu() / self.config.intermediate_size)


def test_sizes_weights_and_outputs() -> None:
    torch.manual_seed(0)
    model = Mlp(Config())
    x = torch.randn(3, 4)
    sn = fxrazor.convert(model, x)
    sn.set_choices({"up": 5})
    config = pruned_config(sn, model)
    assert (config.hidden_size, config.intermediate_size) == (4, 5)
    assert model.config.intermediate_size == 8  # the model's own config is untouched
    pruned = to_pretrained(sn, model)
    assert type(pruned) is Mlp and not pruned.training
    assert torch.equal(pruned.up.weight, model.up.weight[:5])  # the first 5 kept
    assert torch.equal(pruned.down.weight, model.down.weight[:, :5])
    with torch.no_grad():
        expected = model.down.weight[:, :5] @ (x @ model.up.weight[:5].T
                                                + model.up.bias[:5]).relu().T
        assert torch.allclose(pruned(x), expected.T + model.down.bias, atol=1e-6)
        assert torch.allclose(pruned(x), fxrazor.freeze(sn)(x), atol=1e-6)


def test_a_size_that_means_something_else_is_caught() -> None:
    model = MeanScaledMlp(Config())
    sn = fxrazor.convert(model, torch.randn(3, 4))
    sn.set_choices({"up": 5})
    with pytest.raises(PretrainedExportError, match="computes other"):
        to_pretrained(sn, model)
    assert to_pretrained(sn, model, check=False).up.out_features == 5
