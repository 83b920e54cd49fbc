"""A small single-path one-shot (SPOS) search space, end to end.

The supernet is a stem, four choice blocks and a classifier head. Each choice block is a
``OneShotMutableOP`` over depthwise-separable blocks with 3x3, 5x5 and 7x7 kernels, and a
``OneShotMutableValue`` (alias ``depth``) chooses how many of the blocks run.

The script samples a few subnets and prints their choices and sizes, exports one with
``export_fix_subnet``, writes it to YAML, loads it into a freshly built supernet with
``load_fix_subnet`` and checks that the fixed network computes exactly what the supernet
computes at that choice. It exits with status 1 if not.

Run: ``python examples/spos_search_space.py``
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

from fxrazor.mutables import OneShotMutableOP, OneShotMutableValue
from fxrazor.structures.subnet import export_fix_subnet, load_fix_subnet, save_fix_subnet

CHANNELS = 16
NUM_BLOCKS = 4
KERNELS = (3, 5, 7)
SEED = 0


class DepthwiseSeparable(nn.Module):
    """depthwise kxk conv -> pointwise conv, with a residual connection."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def choice_block(channels: int) -> OneShotMutableOP:
    return OneShotMutableOP(
        {f"dw{k}x{k}": DepthwiseSeparable(channels, k) for k in KERNELS},
    )


class SPOSNet(nn.Module):
    """stem -> the first ``depth`` of the choice blocks -> pooled linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, CHANNELS, 3, padding=1), nn.BatchNorm2d(CHANNELS), nn.ReLU()
        )
        self.blocks = nn.ModuleList(choice_block(CHANNELS) for _ in range(NUM_BLOCKS))
        self.depth = OneShotMutableValue(list(range(2, NUM_BLOCKS + 1)), alias="depth")
        self.head = nn.Linear(CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks[: self.depth.current_choice]:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def sample_subnet(net: SPOSNet) -> None:
    """Give every searchable module of ``net`` a random choice."""
    for module in net.modules():
        if isinstance(module, OneShotMutableOP | OneShotMutableValue):
            module.current_choice = module.sample_choice()


def count_params(modules: list[nn.Module]) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def active_params(net: SPOSNet) -> int:
    """Parameters the current subnet uses: stem, head and the chosen op of each used block."""
    # slice_weight: a fixed copy of the net, without the candidates not chosen
    _, fixed = export_fix_subnet(net, slice_weight=True)
    assert isinstance(fixed, SPOSNet)
    used = [fixed.stem, fixed.head, *fixed.blocks[: fixed.depth.current_choice]]
    return count_params(used)


def describe(net: SPOSNet) -> list[object]:
    depth = net.depth.current_choice
    ops = [b.current_choice if i < depth else "-" for i, b in enumerate(net.blocks)]
    return [depth, *ops, active_params(net)]


def main() -> int:
    random.seed(SEED)
    torch.manual_seed(SEED)
    supernet = SPOSNet().eval()
    print(f"supernet parameters: {count_params([supernet])}")

    rows = []
    for index in range(5):
        sample_subnet(supernet)
        rows.append([index, *describe(supernet)])
    headers = ["subnet", "depth", *(f"block{i}" for i in range(NUM_BLOCKS)), "params"]
    print(tabulate(rows, headers=headers))

    # The supernet keeps the last sampled subnet; export it and round-trip it via YAML.
    with tempfile.TemporaryDirectory() as tmp:
        subnet_cfg, _ = export_fix_subnet(supernet)
        path = save_fix_subnet(subnet_cfg, Path(tmp) / "subnet.yaml")
        print(f"\n{path.name}:\n{path.read_text()}")
        torch.manual_seed(SEED)  # the same weights as the supernet, default choices
        subnet = SPOSNet().eval()
        load_fix_subnet(subnet, path)

    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected, actual = supernet(x), subnet(x)
    try:
        torch.testing.assert_close(actual, expected)
    except AssertionError as e:
        print(f"FAILED: the fixed subnet differs from the supernet:\n{e}")
        return 1
    print(
        f"OK: fixed subnet output matches the supernet "
        f"(max abs diff {(actual - expected).abs().max().item():.3g}); "
        f"fixed model has {count_params([subnet])} parameters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
