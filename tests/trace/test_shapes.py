"""Shape recording: the meta-device run records the same shapes and dtypes as a real run."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrazor.layers import LAYERS, layer_shapes
from fxrazor.trace.shapes import _MetaShapeRecorder, _ShapeRecorder

SHAPES = layer_shapes(LAYERS)


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
        joined = torch.cat([mixed, v, y], dim=-3)                # float16 + float32 → float32
        return v, counts, ratio, mixed, joined, torch.cat((y, y), 2)


def _recorded(gm: fx.GraphModule) -> dict[str, tuple]:
    return {n.name: (tuple(n.meta["tensor_meta"].shape), n.meta["tensor_meta"].dtype)
            for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")}


@pytest.mark.parametrize("batch", [1, 3])
def test_meta_recording_matches_a_real_run(batch: int) -> None:
    model = _Mixed().eval()
    x, steps = torch.randn(batch, 3, 5, 5), torch.arange(4)
    real, meta = fx.symbolic_trace(model), fx.symbolic_trace(model)
    _ShapeRecorder(real).run(x, steps)
    _MetaShapeRecorder(meta, SHAPES).run(x.to("meta"), steps.to("meta"))
    expected = _recorded(real)
    assert len(expected) > 15
    assert _recorded(meta) == expected


def test_meta_recording_finds_a_layer_shared_under_two_names() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Linear(4, 4)
            self.second = self.first  # the same layer, a second path to it

    graph = fx.Graph()  # tracing names a shared layer once; a rewritten graph may not
    first = graph.call_module("first", (graph.placeholder("x"),))
    graph.output(graph.call_module("second", (first,)))
    gm = fx.GraphModule(Shared(), graph)
    _MetaShapeRecorder(gm, SHAPES).run(torch.empty(2, 4, device="meta"))
    assert _recorded(gm)["second"] == ((2, 4), torch.float32)


def test_meta_recording_rejects_shapes_that_do_not_broadcast() -> None:
    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + x[:, :2]

    with pytest.raises(RuntimeError):
        recorder = _MetaShapeRecorder(fx.symbolic_trace(Bad()), SHAPES)
        recorder.run(torch.empty(1, 3, device="meta"))


_LAYERS = [
    (nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 11)),
    (nn.Conv1d(4, 6, 3), (4, 9)),                                    # unbatched
    (nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)), (1, 4, 13, 10)),
    (nn.Conv2d(4, 8, 3, padding="same", dilation=2, groups=2), (1, 4, 7, 6)),
    (nn.Conv2d(4, 8, 4, padding="valid", stride=3), (1, 4, 15, 16)),
    (nn.Conv2d(4, 4, 3, padding=2, padding_mode="reflect"), (1, 4, 5, 5)),
    (nn.Conv3d(2, 3, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)), (1, 2, 4, 9, 9)),
    (nn.Linear(5, 7), (5,)),
    (nn.Linear(5, 7), (2, 3, 4, 5)),
    (nn.AdaptiveAvgPool2d((None, 3)), (1, 4, 9, 8)),
    (nn.AdaptiveMaxPool1d(2), (3, 10)),
    (nn.AdaptiveAvgPool3d(1), (1, 2, 3, 4, 5)),
    (nn.MaxPool2d(3, 2, 1), (1, 4, 9, 9)),
    (nn.MaxPool2d(3, 2, ceil_mode=True), (1, 4, 8, 8)),
    (nn.MaxPool2d(2, 2, padding=1, ceil_mode=True), (1, 4, 5, 5)),  # a window dropped
    (nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1)), (1, 2, 7, 9)),
    (nn.MaxPool1d(2), (3, 7)),                                       # unbatched
    (nn.MaxPool3d(2, padding=1, ceil_mode=True), (1, 1, 5, 5, 5)),
    (nn.AvgPool2d(3, 1, 1, count_include_pad=False), (1, 4, 5, 5)),
    (nn.AvgPool2d(2, ceil_mode=True), (1, 4, 7, 7)),
    (nn.AvgPool1d(3, 2, ceil_mode=True), (2, 3, 10)),
    (nn.AvgPool3d((1, 2, 2)), (1, 2, 3, 6, 6)),
]


@pytest.mark.parametrize(("layer", "shape"), _LAYERS, ids=lambda v: str(v)[:40])
def test_layer_shape_formulas_match_the_real_layer(layer: nn.Module, shape: tuple) -> None:
    from fxrazor.trace.meta_shapes import layer_output

    expected = layer(torch.randn(shape))
    got = layer_output(layer, (torch.empty(shape, device="meta"),), {}, SHAPES)
    assert got is not None and got.is_meta
    assert (got.shape, got.dtype) == (expected.shape, expected.dtype)


@pytest.mark.parametrize(("layer", "shape", "dtype"), [
    (nn.Conv2d(4, 8, 3), (1, 5, 8, 8), torch.float32),          # wrong channel count
    (nn.Conv2d(4, 8, 5), (1, 4, 3, 3), torch.float32),          # empty output
    (nn.Conv2d(4, 8, 3), (1, 4, 8, 8), torch.float16),          # dtype differs from weight
    (nn.Linear(5, 7), (2, 6), torch.float32),
    (nn.AdaptiveMaxPool2d(2, return_indices=True), (1, 3, 4, 4), torch.float32),
    (nn.MaxPool2d(2, return_indices=True), (1, 3, 4, 4), torch.float32),
    (nn.MaxPool2d(5), (1, 3, 3, 3), torch.float32),                  # empty output
    (nn.MaxPool2d(2, padding=2), (1, 3, 8, 8), torch.float32),       # padding over half
    (nn.MaxPool2d(2), (3, 8), torch.float32),                        # too few dims
])
def test_layer_shape_formulas_leave_unusual_calls_to_the_layer(layer, shape, dtype) -> None:
    from fxrazor.trace.meta_shapes import layer_output

    assert layer_output(layer, (torch.empty(shape, dtype=dtype, device="meta"),), {}, SHAPES) is None


class _Shortcuts(nn.Module):
    """Ops with meta shortcuts: comparisons, roll, masked_fill, contiguous."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        below = x < y                                   # (2, 1, 3) vs (4, 1): broadcast
        rolled = torch.roll(x, shifts=(1, -2), dims=(0, 2)).roll(1, 1)
        filled = x.masked_fill(x.ge(0.5), -100.0)
        same = (x == 0.25).ne(below)
        return below, rolled, filled.contiguous(), same, torch.ge(y, 1)


def test_meta_shortcuts_match_a_real_run() -> None:
    x, y = torch.rand(2, 1, 3), torch.rand(4, 1)
    real, meta = fx.symbolic_trace(_Shortcuts()), fx.symbolic_trace(_Shortcuts())
    _ShapeRecorder(real).run(x, y)
    _MetaShapeRecorder(meta, SHAPES).run(x.to("meta"), y.to("meta"))
    assert _recorded(meta) == _recorded(real)


class _Reductions(nn.Module):
    """Reductions with meta shortcuts, as functions and methods, every argument form."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x.mean([2, 3]), x.mean((-1, 1), keepdim=True), torch.sum(x, 2),
                torch.amax(x, dim=(0, 3), keepdim=False), x.amin(-2, True),
                torch.mean(x.half(), dim=[1]), x.sum(dim=1, keepdim=True))


def test_reduction_shortcuts_match_a_real_run() -> None:
    from fxrazor.trace.meta_shapes import function_output

    x = torch.rand(2, 3, 4, 5)
    real, meta = fx.symbolic_trace(_Reductions()), fx.symbolic_trace(_Reductions())
    _ShapeRecorder(real).run(x)
    _MetaShapeRecorder(meta, SHAPES).run(x.to("meta"))
    assert len(_recorded(real)) == 9  # x, x.half() and seven reductions
    assert _recorded(meta) == _recorded(real)
    assert function_output("mean", (x.to("meta"), [2, 3]), {}) is not None  # no kernel run


@pytest.mark.parametrize(("args", "kwargs"), [
    ((torch.empty(2, 3, dtype=torch.int64, device="meta"), 1), {}),    # int sum is int64
    ((torch.empty(2, 3, device="meta"),), {}),                          # all dims: kernel
    ((torch.empty(2, 3, device="meta"), [1, -1]), {}),                  # repeated dim
    ((torch.empty(2, 3, device="meta"), 2), {}),                        # no such dim
    ((torch.empty(2, 3, device="meta"), 1), {"dtype": torch.float64}),  # a dtype
    ((torch.empty(2, 0, device="meta"), 1), {}),                        # empty input
])
def test_reduction_shortcuts_leave_unusual_calls_to_the_op(args, kwargs) -> None:
    from fxrazor.trace.meta_shapes import function_output

    assert function_output("sum", args, kwargs) is None
    assert function_output(torch.amax, args, kwargs) is None


def test_meta_shortcuts_leave_invalid_calls_to_the_op() -> None:
    from fxrazor.trace.meta_shapes import function_output

    x = torch.empty(2, 3, device="meta")
    too_big_mask = torch.empty(4, 3, dtype=torch.bool, device="meta")
    assert function_output("masked_fill", (x, too_big_mask, 0.0), {}) is None
    assert function_output(operator.floordiv, (x, 2), {}) is None        # no shortcut
    ints = torch.empty(2, 3, dtype=torch.int64, device="meta")
    assert function_output(operator.truediv, (ints, 2), {}) is None      # integer division
