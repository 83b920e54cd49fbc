"""A small search space for the mutator tests: channel units, one-shot op mutables (a
pair sharing an alias), a differentiable op, a differentiable route, and value mutables
recorded by hand the way value binding records them."""

from __future__ import annotations

import torch
from torch import nn

import fxrazor
from fxrazor.mutables import (
    DiffChoiceRoute,
    DiffMutableOP,
    OneShotMutableOP,
    OneShotMutableValue,
)
from fxrazor.supernet import Supernet

__all__ = ["SearchNet", "search_supernet", "KEYS"]

# The keys of SearchNet's supernet choices, in their order: units (graph order), op
# mutables (module order, an alias group at its first member), values (record order).
# 'project' is a unit because convert traces through the op mutables: project's 8 output
# channels pass every block unchanged (the 'id'/'pool'/'skip' candidates), so they form
# one unit with the in- and out-channels of every conv candidate and head's input.
KEYS = ["stem", "expand", "project", "shared", "solo", "dop", "route", "solo.kernel_size",
        "head.width"]


def _shared_candidates() -> dict[str, nn.Module]:
    return {"conv3x3": nn.Conv2d(8, 8, 3, padding=1), "conv1x1": nn.Conv2d(8, 8, 1),
            "id": nn.Identity()}


class SearchNet(nn.Module):
    """stem -> expand -> relu -> project -> op1 -> op2 (alias 'shared') -> solo -> dop;
    route([op1's out, solo's out, dop's out]) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 16, 1)
        self.project = nn.Conv2d(16, 8, 1)
        self.op1 = OneShotMutableOP(_shared_candidates(), alias="shared")
        self.op2 = OneShotMutableOP(_shared_candidates(), alias="shared")
        self.solo = OneShotMutableOP({"pool": nn.AvgPool2d(3, 1, 1),
                                      "conv": nn.Conv2d(8, 8, 3, padding=1)})
        self.dop = DiffMutableOP({"id": nn.Identity(), "relu": nn.ReLU(),
                                  "conv": nn.Conv2d(8, 8, 1)})
        self.route = DiffChoiceRoute({"skip": nn.Identity(), "conv": nn.Conv2d(8, 8, 1),
                                      "pool": nn.MaxPool2d(3, 1, 1)},
                                     num_chosen=2, with_arch_param=True)
        self.head = nn.Conv2d(8, 4, 1)
        # convert runs the model once: the differentiable blocks need an arch param by
        # then; the supernet binds its own ones afterwards
        self.dop.set_forward_args(torch.zeros(3))
        self.route.set_forward_args(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.project(torch.relu(self.expand(x)))
        a = self.op1(y)
        b = self.op2(a)
        c = self.solo(b)
        d = self.dop(c)
        return self.head(self.route([a, c, d]))


def search_supernet(seed: int = 0) -> tuple[Supernet, torch.Tensor]:
    """The supernet of a seeded SearchNet, with two value mutables recorded on it (one of
    them under two keys), and an example input."""
    torch.manual_seed(seed)
    x = torch.randn(2, 3, 6, 6)
    sn = fxrazor.convert(SearchNet(), x)
    kernel = OneShotMutableValue([3, 5, 7])
    width = OneShotMutableValue([4, 8])
    sn.__dict__["_fxr_value_mutables"] = {"solo.kernel_size": kernel, "head.width": width,
                                          "dop.kernel_size": kernel}
    sn.sync_value_modules()  # as value binding does after each bind
    return sn, x
