"""Shape recording: the meta-device run records the same shapes and dtypes as a real run."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrazor.shapes import _MetaShapeRecorder, _ShapeRecorder


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.register_buffer("half_bias", torch.zeros(8, 1, 1, dtype=torch.float16))

    def forward(self, x: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.act(self.bn(self.conv(x)))
        gate = torch.sigmoid(y.mean((2, 3), keepdim=True))  # broadcast (1, 8, 1, 1)
        z = self.half_bias + y * gate                            # float16 + float32
        w = F.leaky_relu(2 * z - 1, 0.1) / 3
        v = torch.add(w, z, alpha=0.5).relu().sub(y)
        counts = steps + 1                                       # integer stays integer
        ratio = steps / 2                                        # integer true division
        mixed = operator.mul(x.half(), 2.0)                      # float16 stays float16
        return v, counts, ratio, mixed


def _recorded(gm: fx.GraphModule) -> dict[str, tuple]:
    return {n.name: (tuple(n.meta["tensor_meta"].shape), n.meta["tensor_meta"].dtype)
            for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")}


@pytest.mark.parametrize("batch", [1, 3])
def test_meta_recording_matches_a_real_run(batch: int) -> None:
    model = _Mixed().eval()
    x, steps = torch.randn(batch, 3, 5, 5), torch.arange(4)
    real, meta = fx.symbolic_trace(model), fx.symbolic_trace(model)
    _ShapeRecorder(real).run(x, steps)
    _MetaShapeRecorder(meta).run(x.to("meta"), steps.to("meta"))
    expected = _recorded(real)
    assert len(expected) > 15
    assert _recorded(meta) == expected


def test_meta_recording_rejects_shapes_that_do_not_broadcast() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x[:, :2]

    with pytest.raises(RuntimeError):
        _MetaShapeRecorder(fx.symbolic_trace(Bad())).run(torch.empty(1, 3, device="meta"))
