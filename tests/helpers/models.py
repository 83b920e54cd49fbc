"""Tiny models, one per channel-dependency pattern, for the channel-analysis tests.

Every builder returns ``(model, example_input)``; layers have few channels and inputs are
8x8 (or smaller), so that the expected units can be worked out by hand.

Example:
    >>> model, x = chain()
    >>> tuple(model(x).shape)
    (1, 10)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "chain", "residual_identity", "residual_projection", "dense_concat", "inception_concat",
    "concat_of_concats", "add_of_concats", "self_concat", "slice_channels", "split_channels",
    "chunk_channels", "depthwise", "depthwise_multiplier", "group_conv", "group_norm",
    "layer_norm_channels_last", "instance_norm", "se_conv", "se_linear", "flatten_linear",
    "channel_shuffle", "pooling", "mean_over_channels", "conv1d_chain", "conv3d_chain",
    "conv_transpose_chain", "linear_3d", "linear_4d", "token_mixing", "shared_conv",
    "concat_height", "unknown_cumsum", "unknown_fft", "unknown_on_side", "opaque_gate",
    "single_linear", "param_scale", "scalar_head", "one_channel_bottleneck", "two_heads",
    "param_full_size", "ALL_BUILDERS",
]


def _img(c: int = 3, size: int = 8, batch: int = 1) -> Tensor:
    return torch.randn(batch, c, size, size)


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def chain() -> tuple[nn.Module, Tensor]:
    """conv1(3→8) → bn1 → relu → conv2(8→4) → bn2 → relu → pool → flatten → fc(4→10)."""
    return _Chain().eval(), _img()


class _Block(nn.Module):
    def __init__(self, c: int, hidden: int, c_out: int | None = None) -> None:
        super().__init__()
        c_out = c_out or c
        self.conv1 = nn.Conv2d(c, hidden, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, c_out, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = None
        if c_out != c:
            self.shortcut = nn.Sequential(nn.Conv2d(c, c_out, 1), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(y + skip)


class _ResNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], stem: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1)
        self.bn = nn.BatchNorm2d(stem)
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def residual_identity() -> tuple[nn.Module, Tensor]:
    """stem(3→8) + two identity-shortcut blocks (hidden 4) sharing the residual stream."""
    return _ResNet([_Block(8, 4), _Block(8, 4)], 8, 8).eval(), _img()


def residual_projection() -> tuple[nn.Module, Tensor]:
    """stem(3→4) + one block 4→8 (hidden 6) whose shortcut is 1x1 conv + bn."""
    return _ResNet([_Block(4, 6, 8)], 4, 8).eval(), _img()


class _Dense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(4, 2, 3, padding=1)
        self.conv_c = nn.Conv2d(6, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.conv_a(x)
        return self.conv_c(torch.cat([a, self.conv_b(a)], 1))


def dense_concat() -> tuple[nn.Module, Tensor]:
    """a = conv_a(x) (4 ch); conv_c(cat([a, conv_b(a) (2 ch)]))."""
    return _Dense(), _img()


class _Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.b1 = nn.Conv2d(8, 2, 1)
        self.b2 = nn.Conv2d(8, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.b3 = nn.Conv2d(8, 4, 1)
        self.head = nn.Conv2d(9, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        y = torch.cat([self.b1(x), self.b2(x), self.b3(self.pool(x))], dim=1)
        return self.head(y)


def inception_concat() -> tuple[nn.Module, Tensor]:
    """stem(3→8) → three branches (2, 3, 4 ch; the last after a pool) → cat → head(9→5)."""
    return _Inception(), _img()


class _CatCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 2, 1)
        self.b = nn.Conv2d(3, 3, 1)
        self.c = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(9, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        inner = torch.cat([self.a(x), self.b(x)], 1)
        return self.head(torch.cat([inner, self.c(x)], 1))


def concat_of_concats() -> tuple[nn.Module, Tensor]:
    """head(cat([cat([a (2), b (3)]), c (4)])), all of a, b, c reading the input."""
    return _CatCat(), _img()


class _AddCats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(3, 2, 1)
        self.d = nn.Conv2d(3, 6, 1)
        self.e = nn.Conv2d(8, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        left = torch.cat([self.a(x), self.b(x)], 1)
        right = torch.cat([self.c(x), self.d(x)], 1)
        return self.e(left + right)


def add_of_concats() -> tuple[nn.Module, Tensor]:
    """e(cat([a (4), b (4)]) + cat([c (2), d (6)])): the two split points differ."""
    return _AddCats(), _img()


class _SelfCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 5, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x, x], 1))


def self_concat() -> tuple[nn.Module, Tensor]:
    """conv2(cat([x, x])) with x = conv1(input) of 4 channels."""
    return _SelfCat(), _img()


class _TwoWay(nn.Module):
    """conv0(3→8) → split into 2 parts on dim 1 → conv_a, conv_b → add → conv_c."""

    def __init__(self, how: str, first: int) -> None:
        super().__init__()
        self.how = how
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_a = nn.Conv2d(first, 2, 1)
        self.conv_b = nn.Conv2d(8 - first, 2, 1)
        self.conv_c = nn.Conv2d(2, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv0(x)
        if self.how == "slice":
            a, b = x[:, :4], x[:, 4:]
        elif self.how == "split":
            a, b = torch.split(x, [3, 5], 1)
        else:
            a, b = x.chunk(2, 1)
        return self.conv_c(self.conv_a(a) + self.conv_b(b))


def slice_channels() -> tuple[nn.Module, Tensor]:
    """x[:, :4] → conv_a, x[:, 4:] → conv_b."""
    return _TwoWay("slice", 4), _img()


def split_channels() -> tuple[nn.Module, Tensor]:
    """torch.split(x, [3, 5], 1) → conv_a(3→2), conv_b(5→2)."""
    return _TwoWay("split", 3), _img()


def chunk_channels() -> tuple[nn.Module, Tensor]:
    """x.chunk(2, 1) → conv_a(4→2), conv_b(4→2)."""
    return _TwoWay("chunk", 4), _img()


def depthwise() -> tuple[nn.Module, Tensor]:
    """conv0(3→8) → bn0 → relu → dw(8→8, groups=8) → bn1 → relu → pw(8→6)."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 1),
    )
    return model.eval(), _img()


def depthwise_multiplier() -> tuple[nn.Module, Tensor]:
    """conv0(3→4) → dw(4→8, groups=4) → pw(8→6): each input channel feeds 2 outputs."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1, groups=4),
        nn.Conv2d(8, 6, 1),
    )
    return model, _img()


def group_conv() -> tuple[nn.Module, Tensor]:
    """conv0(3→8) → gconv(8→6, groups=2) → conv2(6→4)."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1, groups=2),
        nn.Conv2d(6, 4, 1),
    )
    return model, _img()


def group_norm() -> tuple[nn.Module, Tensor]:
    """conv0(3→8) → GroupNorm(2 groups, 8) → relu → conv1(8→4)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1))
    return model, _img()


class _ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.ln = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.conv1 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv0(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.ln(y))))
        return self.conv1(y.permute(0, 3, 1, 2))


def layer_norm_channels_last() -> tuple[nn.Module, Tensor]:
    """conv0(3→8) → permute to NHWC → LayerNorm(8) → fc1(8→16) → fc2(16→8) → NCHW → conv1."""
    return _ChannelsLast(), _img()


def instance_norm() -> tuple[nn.Module, Tensor]:
    """conv0(3→8) → InstanceNorm2d(8, affine=True) → conv1(8→4)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True),
                          nn.Conv2d(8, 4, 1))
    return model, _img()


class _SE(nn.Module):
    def __init__(self, linear: bool) -> None:
        super().__init__()
        self.linear = linear
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        if linear:
            self.fc1, self.fc2 = nn.Linear(8, 2), nn.Linear(2, 8)
        else:
            self.fc1, self.fc2 = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv0(x))
        s = self.pool(x)
        if self.linear:
            n, c = x.size(0), x.size(1)
            s = self.fc2(F.relu(self.fc1(s.view(n, c)))).view(n, c, 1, 1)
        else:
            s = self.fc2(F.relu(self.fc1(s)))
        return self.conv1(x * torch.sigmoid(s))


def se_conv() -> tuple[nn.Module, Tensor]:
    """Squeeze-excitation with 1x1 convs fc1(8→2), fc2(2→8) on conv0's output."""
    return _SE(linear=False), _img()


def se_linear() -> tuple[nn.Module, Tensor]:
    """Squeeze-excitation with Linear fc1(8→2), fc2(2→8) and views."""
    return _SE(linear=True), _img()


class _FlattenLinear(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.how == "module":
            x = self.flatten(x)
        elif self.how == "function":
            x = torch.flatten(x, 1)
        elif self.how == "view_size":
            x = x.view(x.size(0), -1)
        else:
            x = x.view(-1, 64)
        return self.fc(x)


def flatten_linear(how: str = "module") -> tuple[nn.Module, Tensor]:
    """conv(3→4) on 4x4 → flatten (``how``: module, function, view_size, view_literal) →
    fc(64→10); batch 2."""
    return _FlattenLinear(how), _img(size=4, batch=2)


class _Shuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv0(x)
        n, h, w = x.size(0), x.size(2), x.size(3)
        x = x.view(n, 2, 4, h, w).transpose(1, 2).contiguous().view(n, 8, h, w)
        return self.conv1(x)


def channel_shuffle() -> tuple[nn.Module, Tensor]:
    """conv0(3→8) → shuffle with 2 groups → conv1(8→4)."""
    return _Shuffle(), _img()


class _Pools(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.maxpool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1)
        self.avgpool = nn.AvgPool2d(2)
        self.adaptive = nn.AdaptiveAvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 5, 1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.maxpool(self.conv0(x)))
        x = F.max_pool2d(self.conv1(x), 1)
        x = torch.sigmoid(self.adaptive(self.avgpool(x)))
        return self.fc(F.silu(self.conv2(x)).mean((2, 3)))


def pooling() -> tuple[nn.Module, Tensor]:
    """conv0(3→4) → maxpool → conv1(4→6) → avg/adaptive pool → conv2(6→5) → mean → fc."""
    return _Pools(), _img()


class _MeanC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(1, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv0(x).mean(1, keepdim=True))


def mean_over_channels() -> tuple[nn.Module, Tensor]:
    """conv0(3→4) → mean over channels → conv1(1→2)."""
    return _MeanC(), _img()


def conv1d_chain() -> tuple[nn.Module, Tensor]:
    """Conv1d(3→8) → BatchNorm1d → relu → Conv1d(8→4) on length 8."""
    model = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Conv1d(8, 4, 3))
    return model.eval(), torch.randn(1, 3, 8)


def conv3d_chain() -> tuple[nn.Module, Tensor]:
    """Conv3d(3→4) → BatchNorm3d → Conv3d(4→2) on 4x4x4."""
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.Conv3d(4, 2, 1))
    return model.eval(), torch.randn(1, 3, 4, 4, 4)


def conv_transpose_chain() -> tuple[nn.Module, Tensor]:
    """Conv2d(3→8) → ConvTranspose2d(8→4, stride 2) → ConvTranspose2d(4→2)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2),
                          nn.ConvTranspose2d(4, 2, 3))
    return model, _img(size=4)


def linear_3d() -> tuple[nn.Module, Tensor]:
    """fc1(6→8) → gelu → fc2(8→6) on (N=1, L=5, C=6)."""
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 6)), torch.randn(1, 5, 6)


def linear_4d() -> tuple[nn.Module, Tensor]:
    """fc1(6→8) → relu → fc2(8→3) on (1, 4, 4, 6)."""
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), torch.randn(1, 4, 4, 6)


class _TokenMix(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(6, 8)
        self.tok = nn.Linear(5, 5)
        self.fc1 = nn.Linear(8, 6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc0(x)
        x = self.tok(x.transpose(1, 2)).transpose(1, 2)
        return self.fc1(x)


def token_mixing() -> tuple[nn.Module, Tensor]:
    """fc0(6→8) on (1, L=5, 6) → transpose → tok Linear(5→5) over tokens → back → fc1(8→6)."""
    return _TokenMix(), torch.randn(1, 5, 6)


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 1)
        self.shared = nn.Conv2d(4, 6, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.shared(self.conv_a(x)) + self.shared(self.conv_b(x)))


def shared_conv() -> tuple[nn.Module, Tensor]:
    """head(shared(conv_a(x)) + shared(conv_b(x))): one conv module called twice."""
    return _Shared(), _img()


class _CatH(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(3, 4, 1)
        self.conv_c = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_c(torch.cat([self.conv_a(x), self.conv_b(x)], dim=2))


def concat_height() -> tuple[nn.Module, Tensor]:
    """conv_c(cat([conv_a(x), conv_b(x)], dim=2)): a concat along height."""
    return _CatH(), _img()


class _Unknown(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 6, 1)
        self.conv2 = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv0(x)
        if self.how == "cumsum":
            return self.conv1(torch.cumsum(x, 1))
        if self.how == "fft":
            return self.conv1(torch.fft.fft2(x).real)
        return self.conv2(torch.cumsum(self.conv1(x), 1))


def unknown_cumsum() -> tuple[nn.Module, Tensor]:
    """conv1(torch.cumsum(conv0(x), 1))."""
    return _Unknown("cumsum"), _img()


def unknown_fft() -> tuple[nn.Module, Tensor]:
    """conv1(torch.fft.fft2(conv0(x)).real)."""
    return _Unknown("fft"), _img()


def unknown_on_side() -> tuple[nn.Module, Tensor]:
    """conv2(torch.cumsum(conv1(conv0(x)), 1)): only conv1's output meets the unknown op."""
    return _Unknown("side"), _img()


class _Gate(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # data-dependent: symbolic tracing cannot follow it
            return x * 2
        return x


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 6, 1)
        self.gate = _Gate()
        self.conv2 = nn.Conv2d(6, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.gate(self.conv1(self.conv0(x))))


def opaque_gate() -> tuple[nn.Module, Tensor]:
    """conv2(gate(conv1(conv0(x)))) where gate's forward branches on data."""
    return _Gated(), _img()


class _OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


def single_linear() -> tuple[nn.Module, Tensor]:
    """A single Linear(4→3): nothing can be pruned."""
    return _OneLinear(), torch.randn(2, 4)


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.conv1 = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv0(x) * self.scale)


def param_scale() -> tuple[nn.Module, Tensor]:
    """conv1(conv0(x) * scale) with a (1, 4, 1, 1) parameter used directly."""
    return _Scale(), _img()


def scalar_head() -> tuple[nn.Module, Tensor]:
    """fc1(4→8) → relu → fc2(8→1): the model output has a single feature."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), torch.randn(2, 4)


def one_channel_bottleneck() -> tuple[nn.Module, Tensor]:
    """conv0(3→1) → conv1(1→4): a single channel between two convs."""
    return nn.Sequential(nn.Conv2d(3, 1, 1), nn.Conv2d(1, 4, 1)), _img()


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(x)
        return self.head(self.bn(x)), self.head(x)


def two_heads() -> tuple[nn.Module, Tensor]:
    """(head(bn(conv(x))), head(conv(x))): one head module giving both model outputs."""
    return _TwoHeads().eval(), _img()


class _ParamFull(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 1)
        self.pos = nn.Parameter(torch.zeros(1, 4, 8, 8))
        self.conv1 = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv0(x) + self.pos)


def param_full_size() -> tuple[nn.Module, Tensor]:
    """conv1(conv0(x) + pos) with a (1, 4, 8, 8) parameter: its H and W dims cannot go."""
    return _ParamFull(), _img()


ALL_BUILDERS = [
    chain, residual_identity, residual_projection, dense_concat, inception_concat,
    concat_of_concats, add_of_concats, self_concat, slice_channels, split_channels,
    chunk_channels, depthwise, depthwise_multiplier, group_conv, group_norm,
    layer_norm_channels_last, instance_norm, se_conv, se_linear, flatten_linear,
    channel_shuffle, pooling, mean_over_channels, conv1d_chain, conv3d_chain,
    conv_transpose_chain, linear_3d, linear_4d, token_mixing, shared_conv, concat_height,
    unknown_cumsum, unknown_fft, unknown_on_side, opaque_gate, single_linear, param_scale,
    scalar_head, one_channel_bottleneck, two_heads, param_full_size,
]
