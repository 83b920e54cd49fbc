"""Small models for the API tests; each builder returns ``(model, example_input)``.

Channel counts are small enough that the units and kept channels can be worked out by hand.

Example:
    >>> model, x = conv_bn_chain()
    >>> tuple(model(x).shape)
    (2, 2, 8, 8)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "assert_same_state",
    "conv_bn_chain",
    "two_conv",
    "KwargModel",
    "FunctionalLinear",
    "AttentionBlock",
    "state_of",
    "tree_of",
]


def conv_bn_chain() -> tuple[nn.Module, Tensor]:
    """conv(3->8)-bn-relu-conv(8->6)-bn-relu-conv(6->2): units ``'0'`` (8) and ``'3'`` (6)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 2, 1),
    )
    return model.eval(), torch.randn(2, 3, 8, 8)


def two_conv() -> tuple[nn.Module, Tensor]:
    """conv(3->6, 1x1)-conv(6->2, 1x1), no norm: one unit ``'0'`` whose only producer is
    the first conv, so its L1 importance is the L1 norm of that conv's weight rows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1))
    with torch.no_grad():
        # distinct row norms in a scrambled order: 3.0, 0.3, 1.5, 6.0, 0.6, 4.5 per entry
        scale = torch.tensor([3.0, 0.3, 1.5, 6.0, 0.6, 4.5])
        model[0].weight.copy_(scale.view(6, 1, 1, 1) * torch.ones(6, 3, 1, 1))
        model[0].weight[:, 1] *= -1  # signs must not matter
    return model.eval(), torch.randn(2, 3, 5, 5)


class KwargModel(nn.Module):
    """``forward(x, y=None)``: conv(3->8)-conv(8->2), ``y`` (N, 1, H, W) gates the middle."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 8, 1)
        self.d = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.c(x)
        if y is not None:
            h = h * y
        return self.d(h)


class FunctionalLinear(nn.Module):
    """A hidden layer written with ``F.linear`` on the module's own parameters (4->8->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4))
        self.b = nn.Parameter(torch.randn(8))
        self.out = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(F.linear(x, self.w, self.b)))


class AttentionBlock(nn.Module):
    """``nn.MultiheadAttention`` (16 wide, 4 heads, batch first) then a 16->3 linear."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.attn(x, x, x, need_weights=False)[0])


def state_of(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of ``model``'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def tree_of(model: nn.Module) -> list[tuple[str, type]]:
    """``(qualified name, type)`` of every submodule, in order."""
    return [(name, type(m)) for name, m in model.named_modules()]


def assert_same_state(before: dict[str, Tensor], model: nn.Module) -> None:
    """``model``'s state dict has the keys of ``before``, in order, and equal tensors."""
    after = model.state_dict()
    assert list(after) == list(before)
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert changed == []
