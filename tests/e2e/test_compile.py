"""torch.compile of a supernet: one graph per distinct subnet, none on a revisit, and the
compiled output equals the eager one."""

from __future__ import annotations

import torch
from torch import nn

import fxrazor


def test_one_compile_per_subnet_and_none_on_a_revisit() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 6, 1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))
    x = torch.randn(2, 3, 8, 8)
    sn = fxrazor.convert(model, x).eval()
    compiled = torch.compile(sn, backend="eager")
    subnets = [{"0": 8, "3": 6}, {"0": 2, "3": 3}, {"0": 5, "3": 1}]
    graphs = []
    for _ in range(2):
        for choices in subnets:
            sn.set_choices(choices)
            got = compiled(x)
            torch.testing.assert_close(got, sn(x))
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs == [1, 2, 3, 3, 3, 3]
