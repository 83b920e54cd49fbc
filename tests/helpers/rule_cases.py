"""One tiny model per channel rule key (``fxrazor.rules``), for ``tests/rules/test_rule_coverage.py``.

A :class:`Probe` runs a convolution and then the case's call on its output ``y``
(2x6x4x4); ``_1d``/``_3d`` reshape ``y`` for 1-d and 3-d ops. A case calls the op its key
names, on inputs for which it is finite.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

from fxrazor.analysis.context import fn_name
from fxrazor.trace import routing
from fxrazor.trace import signature as _sig
from fxrazor.trace.routing import expert_counts

__all__ = ["Call", "Probe", "FUNCTION_CASES", "NAMED_FUNCTION_CASES", "NAMED_LAYERS",
           "METHOD_CASES", "MODULE_CASES", "UNTRACEABLE_FUNCTIONS", "UNTRACEABLE_METHODS",
           "records", "qualified"]

Call = Callable[[Any, torch.Tensor], Any]  # (the probe model, y) -> output


def _1d(y: torch.Tensor) -> torch.Tensor:
    return y.flatten(2)  # 2x6x16


def _3d(y: torch.Tensor) -> torch.Tensor:
    return y.unsqueeze(2)  # 2x6x1x4x4


def _top2(y: torch.Tensor) -> torch.Tensor:
    """A router's picks: per image, the 2 channels with the largest mean (their ids)."""
    return torch.topk(y.mean((2, 3)).softmax(-1), 2, dim=-1)[1].flatten()


def _pos(y: torch.Tensor) -> torch.Tensor:
    return y.abs() + 0.5


FUNCTION_CASES: dict[Any, Call] = {
    operator.add: lambda m, y: y + 1, operator.sub: lambda m, y: y - 1,
    operator.mul: lambda m, y: y * 2, operator.truediv: lambda m, y: y / 2,
    operator.floordiv: lambda m, y: y // 0.5, operator.pow: lambda m, y: y ** 2,
    operator.neg: lambda m, y: -y, operator.pos: lambda m, y: +y,
    operator.mod: lambda m, y: y % 0.5, operator.abs: lambda m, y: abs(y),
    torch.add: lambda m, y: torch.add(y, 1), torch.sub: lambda m, y: torch.sub(y, 1),
    torch.subtract: lambda m, y: torch.subtract(y, 1), torch.mul: lambda m, y: torch.mul(y, 2),
    torch.multiply: lambda m, y: torch.multiply(y, 2), torch.div: lambda m, y: torch.div(y, 2),
    torch.divide: lambda m, y: torch.divide(y, 2),
    torch.true_divide: lambda m, y: torch.true_divide(y, 2),
    torch.pow: lambda m, y: torch.pow(y, 2), torch.maximum: lambda m, y: torch.maximum(y, -y),
    torch.minimum: lambda m, y: torch.minimum(y, -y),
    torch.where: lambda m, y: torch.where(y > 0, y, -y), torch.abs: lambda m, y: torch.abs(y),
    torch.neg: lambda m, y: torch.neg(y), torch.exp: lambda m, y: torch.exp(y),
    torch.log: lambda m, y: torch.log(_pos(y)), torch.sqrt: lambda m, y: torch.sqrt(_pos(y)),
    torch.rsqrt: lambda m, y: torch.rsqrt(_pos(y)), torch.sigmoid: lambda m, y: torch.sigmoid(y),
    torch.tanh: lambda m, y: torch.tanh(y), torch.relu: lambda m, y: torch.relu(y),
    torch.clamp: lambda m, y: torch.clamp(y, -0.2, 0.2),
    torch.clip: lambda m, y: torch.clip(y, -0.2, 0.2), torch.erf: lambda m, y: torch.erf(y),
    torch.sin: lambda m, y: torch.sin(y), torch.cos: lambda m, y: torch.cos(y),
    torch.square: lambda m, y: torch.square(y),
    torch.reciprocal: lambda m, y: torch.reciprocal(_pos(y)),
    torch.sign: lambda m, y: torch.sign(y), torch.lerp: lambda m, y: torch.lerp(y, -y, 0.3),
    torch.addcmul: lambda m, y: torch.addcmul(y, y, y),
    torch.addcdiv: lambda m, y: torch.addcdiv(y, y, _pos(y)),
    torch.zeros_like: lambda m, y: y + torch.zeros_like(y),
    torch.ones_like: lambda m, y: y * torch.ones_like(y),
    torch.empty_like: lambda m, y: y + torch.empty_like(y).zero_(),
    torch.full_like: lambda m, y: y * torch.full_like(y, 2.0),
    torch.rand_like: lambda m, y: y + 0 * torch.rand_like(y),
    torch.randn_like: lambda m, y: y + 0 * torch.randn_like(y),
    torch.floor: lambda m, y: torch.floor(y * 4), torch.ceil: lambda m, y: torch.ceil(y * 4),
    torch.round: lambda m, y: torch.round(y * 4), torch.exp2: lambda m, y: torch.exp2(y),
    torch.log1p: lambda m, y: torch.log1p(_pos(y)), torch.expm1: lambda m, y: torch.expm1(y),
    F.relu: lambda m, y: F.relu(y), F.relu6: lambda m, y: F.relu6(y),
    F.gelu: lambda m, y: F.gelu(y), F.silu: lambda m, y: F.silu(y),
    F.hardswish: lambda m, y: F.hardswish(y), F.hardsigmoid: lambda m, y: F.hardsigmoid(y),
    F.sigmoid: lambda m, y: F.sigmoid(y), F.tanh: lambda m, y: F.tanh(y),
    F.mish: lambda m, y: F.mish(y), F.elu: lambda m, y: F.elu(y), F.selu: lambda m, y: F.selu(y),
    F.celu: lambda m, y: F.celu(y), F.leaky_relu: lambda m, y: F.leaky_relu(y, 0.1),
    F.hardtanh: lambda m, y: F.hardtanh(y), F.softplus: lambda m, y: F.softplus(y),
    F.logsigmoid: lambda m, y: F.logsigmoid(y),
    F.dropout: lambda m, y: F.dropout(y, 0.5, False),
    F.dropout1d: lambda m, y: F.dropout1d(_1d(y), 0.5, False),
    F.dropout2d: lambda m, y: F.dropout2d(y, 0.5, False),
    F.dropout3d: lambda m, y: F.dropout3d(_3d(y), 0.5, False),
    F.alpha_dropout: lambda m, y: F.alpha_dropout(y, 0.5, False),
    F.relu_: lambda m, y: F.relu_(y * 1), F.softsign: lambda m, y: F.softsign(y),
    F.tanhshrink: lambda m, y: F.tanhshrink(y),
    F.threshold: lambda m, y: F.threshold(y, 0.1, 0.0),
    operator.eq: lambda m, y: (y == 0).float(), operator.ne: lambda m, y: (y != 0).float(),
    operator.lt: lambda m, y: (y < 0).float(), operator.le: lambda m, y: (y <= 0).float(),
    operator.gt: lambda m, y: (y > 0).float(), operator.ge: lambda m, y: (y >= 0).float(),
    torch.eq: lambda m, y: torch.eq(y, 0).float(), torch.ne: lambda m, y: torch.ne(y, 0).float(),
    torch.lt: lambda m, y: torch.lt(y, 0).float(), torch.le: lambda m, y: torch.le(y, 0).float(),
    torch.gt: lambda m, y: torch.gt(y, 0).float(), torch.ge: lambda m, y: torch.ge(y, 0).float(),
    torch.logical_and: lambda m, y: torch.logical_and(y > 0, y < 0.2).float(),
    torch.logical_or: lambda m, y: torch.logical_or(y > 0.2, y < 0).float(),
    torch.logical_not: lambda m, y: torch.logical_not(y > 0).float(),
    # contractions
    torch.matmul: lambda m, y: torch.matmul(y, y.transpose(-1, -2)),
    torch.bmm: lambda m, y: torch.bmm(_1d(y), _1d(y).transpose(1, 2)),
    torch.einsum: lambda m, y: torch.einsum("nchw,nchw->nc", y, y),
    F.scaled_dot_product_attention: lambda m, y: F.scaled_dot_product_attention(y, y, y),
    F.linear: lambda m, y: F.linear(y, m.w, m.b),
    F.layer_norm: lambda m, y: F.layer_norm(y, (4,), m.g, m.b[:4]),
    torch.layer_norm: lambda m, y: torch.layer_norm(y, [4], m.g, None, 1e-5),
    F.embedding: lambda m, y: y + F.embedding(torch.arange(4, device=y.device) % 5, m.w),
    torch.addmm: lambda m, y: torch.addmm(m.b, y.reshape(-1, 4), m.w.t()),
    # layers written as functions (F.convNd is torch.convNd)
    F.conv1d: lambda m, y: F.conv1d(y.flatten(2), torch.ones(2, 6, 3)),
    F.conv2d: lambda m, y: F.conv2d(y, m.conv.weight[:2].repeat(1, 2, 1, 1), m.b[:2]),
    F.conv3d: lambda m, y: F.conv3d(y.unsqueeze(2), torch.ones(2, 3, 1, 1, 1), None, 1, 0, 1, 2),
    F.conv_transpose1d: lambda m, y: F.conv_transpose1d(y.flatten(2), torch.ones(6, 2, 3)),
    F.conv_transpose2d: lambda m, y: F.conv_transpose2d(y, torch.ones(6, 2, 2, 2), m.b[:2]),
    F.conv_transpose3d: lambda m, y: F.conv_transpose3d(y.unsqueeze(2), torch.ones(6, 1, 1, 1, 1)),
    F.batch_norm: lambda m, y: F.batch_norm(y, torch.zeros(6), torch.ones(6), m.conv.bias),
    F.instance_norm: lambda m, y: F.instance_norm(y, weight=m.conv.bias),
    F.group_norm: lambda m, y: F.group_norm(y, 3, m.conv.bias, None),
    torch.group_norm: lambda m, y: torch.group_norm(y, 6),
    operator.matmul: lambda m, y: y @ y.transpose(-1, -2),
    # joining and slicing
    torch.cat: lambda m, y: torch.cat([y, -y], 1),
    torch.concat: lambda m, y: torch.concat([y, -y], 1),
    torch.concatenate: lambda m, y: torch.concatenate([y, -y], 1),
    torch.stack: lambda m, y: torch.stack([y, -y], 1),
    torch.split: lambda m, y: torch.split(y, [2, 4], 1)[1],
    torch.chunk: lambda m, y: torch.chunk(y, 2, 1)[0], operator.getitem: lambda m, y: y[:, :3],
    torch.narrow: lambda m, y: torch.narrow(y, 1, 1, 3),
    torch.unbind: lambda m, y: torch.unbind(_3d(y), 2)[0],
    # shapes
    torch.reshape: lambda m, y: torch.reshape(y, (2, -1)),
    torch.flatten: lambda m, y: torch.flatten(y, 1),
    torch.squeeze: lambda m, y: torch.squeeze(_3d(y), 2),
    torch.unsqueeze: lambda m, y: torch.unsqueeze(y, 0),
    torch.unflatten: lambda m, y: torch.unflatten(y, 1, (2, 3)),
    torch.permute: lambda m, y: torch.permute(y, (0, 2, 3, 1)),
    torch.transpose: lambda m, y: torch.transpose(y, 1, 3),
    torch.swapaxes: lambda m, y: torch.swapaxes(y, 1, 2),
    torch.t: lambda m, y: torch.t(y.flatten(1)),
    # reductions, softmax, pooling
    torch.mean: lambda m, y: torch.mean(y, (2, 3)), torch.sum: lambda m, y: torch.sum(y, 1),
    torch.amax: lambda m, y: torch.amax(y, -1), torch.amin: lambda m, y: torch.amin(y, (2, 3)),
    torch.softmax: lambda m, y: torch.softmax(y, -1), F.softmax: lambda m, y: F.softmax(y, 1),
    F.log_softmax: lambda m, y: F.log_softmax(y, -1),
    # routing: a softmax over the channels, its top 2, tokens counted per channel
    torch.topk: lambda m, y: torch.topk(F.softmax(y, 1), 2, dim=1)[0],
    torch.sort: lambda m, y: torch.sort(y, dim=-1)[0],
    expert_counts: lambda m, y: y * routing.expert_counts(_top2(y).float(), 6).view(1, 6, 1, 1),
    torch.cumsum: lambda m, y: y * torch.cumsum(routing.expert_counts(_top2(y).float(), 6), 0)
    .view(1, 6, 1, 1),
    torch.log_softmax: lambda m, y: torch.log_softmax(y, 1),
    F.normalize: lambda m, y: F.normalize(y, dim=1),
    F.adaptive_avg_pool1d: lambda m, y: F.adaptive_avg_pool1d(_1d(y), 4),
    F.adaptive_avg_pool2d: lambda m, y: F.adaptive_avg_pool2d(y, 2),
    F.adaptive_avg_pool3d: lambda m, y: F.adaptive_avg_pool3d(_3d(y), (1, 2, 2)),
    F.adaptive_max_pool2d: lambda m, y: F.adaptive_max_pool2d(y, 2),
    F.avg_pool1d: lambda m, y: F.avg_pool1d(_1d(y), 2),
    F.avg_pool2d: lambda m, y: F.avg_pool2d(y, 2),
    F.avg_pool3d: lambda m, y: F.avg_pool3d(_3d(y), (1, 2, 2)),
    F.max_pool1d: lambda m, y: F.max_pool1d(_1d(y), 2),
    F.max_pool2d: lambda m, y: F.max_pool2d(y, 2),
    F.max_pool3d: lambda m, y: F.max_pool3d(_3d(y), (1, 2, 2)),
    F.interpolate: lambda m, y: F.interpolate(y, scale_factor=2.0),
    F.upsample: lambda m, y: F.upsample(y, scale_factor=2.0),
    # sizes and new tensors
    builtins.getattr: lambda m, y: y.view(y.shape[0], -1),
    torch._assert: lambda m, y: (torch._assert(y.shape[1] == 6, "six channels"), y)[1],
    torch.roll: lambda m, y: torch.roll(y, 1, 2), F.pad: lambda m, y: F.pad(y, (1, 1)),
    torch.arange: lambda m, y: y + torch.arange(y.shape[-1]),
    torch.zeros: lambda m, y: y + torch.zeros(y.shape), torch.ones: lambda m, y: y * torch.ones(y.shape),
    torch.full: lambda m, y: y * torch.full(y.shape, 2.0),
    torch.empty: lambda m, y: y + torch.empty(y.shape).zero_(),
    # convert's guards of arguments traced at their defaults (fxrazor.trace.signature),
    # here on sizes, which trace as calls of them
    _sig.check_int: lambda m, y: (_sig.check_int(y.shape[1], 6, "six"), y)[1],
    _sig.check_float: lambda m, y: (_sig.check_float(y.shape[1] * 1.0, 6.0, "six"), y)[1],
    _sig.check_bool: lambda m, y: (_sig.check_bool(y.shape[1] == 6, True, "six"), y)[1],
}

# Keys that torch.fx's symbolic tracing never records, with a call that would name them:
# a proxy has no in-place operators (``x += 1`` is traced as ``operator.add``), F.sigmoid
# and F.tanh call the tensor methods, F.upsample calls F.interpolate. The rules stay for
# graphs made otherwise; ``test_untraceable_keys_are_never_recorded`` fails the day tracing
# records one (then it needs a case above).
UNTRACEABLE_FUNCTIONS: dict[Any, Call] = {
    operator.iadd: lambda m, y: operator.iadd(y, 2.0),
    operator.isub: lambda m, y: operator.isub(y, 2.0),
    operator.imul: lambda m, y: operator.imul(y, 2.0),
    operator.itruediv: lambda m, y: operator.itruediv(y, 2.0),
    F.sigmoid: lambda m, y: F.sigmoid(y), F.tanh: lambda m, y: F.tanh(y),
    F.upsample: lambda m, y: F.upsample(y, scale_factor=2.0),
    # convert puts these in for an input left out (a None or str default, never a proxy);
    # every probe's ``mask`` gets a check_none, which test_signature covers
    _sig.check_none: lambda m, y: (_sig.check_none(None, "none"), y)[1],
    _sig.check_str: lambda m, y: (_sig.check_str("a", "a", "same"), y)[1],
}
for _key in UNTRACEABLE_FUNCTIONS:
    FUNCTION_CASES.pop(_key, None)

NAMED_FUNCTION_CASES: dict[str, Call] = {
    # torchvision wraps it for torch.fx where its own module calls it
    "torchvision.ops.stochastic_depth.stochastic_depth": lambda m, y: m.layer(y),
    # fx asserts that an input given as None in concrete_args is None: convert does so for
    # an optional input left out of the example inputs (the probe's ``mask``)
    "torch.fx._symbolic_trace._assert_is_none": lambda m, y: y,
    # a mixture-of-experts layer's grouped matmul (32 token rows: 16 per expert)
    "transformers.grouped_mm_fallback.default": lambda m, y: _grouped_mm()(
        y.permute(0, 2, 3, 1).reshape(-1, 6), m.layer.weight, torch.tensor([16, 32])),
}


def _grouped_mm() -> Any:
    import transformers.integrations.moe  # noqa: F401 - registers the op

    return torch.ops.transformers.grouped_mm_fallback.default


class _Experts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 6, 3))

def _method(name: str, *args: Any, on: Callable[[torch.Tensor], torch.Tensor] = lambda y: y * 1,
            to_float: bool = False) -> Call:
    """``on(y).name(*args)``, as float where it gives ints or bools."""
    def call(m: Any, y: torch.Tensor) -> torch.Tensor:
        out = getattr(on(y), name)(*args)
        return out.float() if to_float else out

    return call


METHOD_CASES: dict[str, Call] = {
    **{name: _method(name) for name in [
        "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "abs", "neg", "exp",
        "contiguous", "clone", "detach", "sin", "cos", "square", "sign", "erf", "exp_",
        "zero_", "cpu"]},
    **{name: _method(name, on=_pos) for name in ["log", "sqrt", "rsqrt", "reciprocal", "sqrt_"]},
    **{name: _method(name, on=lambda y: y * 4) for name in ["floor", "ceil", "round"]},
    **{name: _method(name, 0.5) for name in [
        "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "clamp_min", "clamp_max",
        "fill_"]},
    **{name: _method(name, 0.1, to_float=True) for name in ["eq", "ne", "lt", "le", "gt", "ge"]},
    "pow": _method("pow", 2.0),
    "__rsub__": lambda m, y: torch.Tensor.__rsub__(y, 0.5),
    **{name: _method(name, to_float=True) for name in ["half", "double", "bfloat16"]},
    **{name: _method(name, on=lambda y: y > 0, to_float=True) for name in ["long", "int", "bool"]},
    "clamp": lambda m, y: y.clamp(-0.2, 0.2), "clamp_": lambda m, y: (y * 1).clamp_(-0.2, 0.2),
    "float": lambda m, y: (y > 0).float(), "to": lambda m, y: y.to(torch.float64),
    "type_as": lambda m, y: (y > 0).type_as(y),
    "masked_fill": lambda m, y: y.masked_fill(y > 0, 0.0),
    "masked_fill_": lambda m, y: (y * 1).masked_fill_(y > 0, 0.0),
    "lerp": lambda m, y: y.lerp(-y, 0.3), "where": lambda m, y: y.where(y > 0, -y),
    "maximum": lambda m, y: y.maximum(-y), "minimum": lambda m, y: y.minimum(-y),
    "requires_grad_": lambda m, y: y.detach().requires_grad_(),
    "cuda": lambda m, y: y.cuda().cpu(),
    # shapes
    "narrow": lambda m, y: y.narrow(1, 1, 3), "view": lambda m, y: y.view(2, 6, 16),
    "reshape": lambda m, y: y.reshape(2, -1), "flatten": lambda m, y: y.flatten(2),
    "squeeze": lambda m, y: _3d(y).squeeze(2), "unsqueeze": lambda m, y: y.unsqueeze(-1),
    "unflatten": lambda m, y: y.unflatten(1, (3, 2)),
    "view_as": lambda m, y: y.flatten(1).view_as(y),
    "reshape_as": lambda m, y: y.flatten(1).reshape_as(y),
    "permute": lambda m, y: y.permute(0, 2, 3, 1), "transpose": lambda m, y: y.transpose(1, 2),
    "swapaxes": lambda m, y: y.swapaxes(1, 3), "t": lambda m, y: y.flatten(1).t(),
    "expand": lambda m, y: y[:, :, :1].expand(2, 6, 4, 4),
    "expand_as": lambda m, y: y.sum(1, keepdim=True).expand_as(y),
    "repeat": lambda m, y: y.repeat(1, 1, 2, 1),
    "split": lambda m, y: y.split([4, 2], 1)[0], "chunk": lambda m, y: y.chunk(3, 1)[2],
    "unbind": lambda m, y: y.unbind(3)[1],
    "matmul": lambda m, y: y.matmul(y.transpose(-1, -2)),
    "bmm": lambda m, y: _1d(y).bmm(_1d(y).transpose(1, 2)),
    "mean": lambda m, y: y.mean((2, 3)), "sum": lambda m, y: y.sum(1),
    "amax": lambda m, y: y.amax(-1), "amin": lambda m, y: y.amin((2, 3)),
    "softmax": lambda m, y: y.softmax(-1), "log_softmax": lambda m, y: y.log_softmax(1),
    "topk": lambda m, y: y.softmax(1).topk(2, 1)[0], "sort": lambda m, y: y.sort(-1)[0],
    "cumsum": lambda m, y: y * routing.expert_counts(_top2(y).float(), 6).cumsum(0).view(1, 6, 1, 1),
    "size": lambda m, y: y.view(y.size(0), -1),
    "dim": lambda m, y: (torch._assert(y.dim() == 4, "4-D"), y)[1],
    "numel": lambda m, y: (torch._assert(y.numel() > 0, "not empty"), y)[1],
    "roll": lambda m, y: y.roll(1, 3),
}
# Method names that symbolic tracing never records: a proxy's ``y.__add__(1)`` is its own
# operator (``operator.add``), ``torch.Tensor.__add__`` does not take a proxy, and
# ``torch.Tensor.__rtruediv__`` is recorded as ``__rdiv__``; Tensor has no ``softplus``.
UNTRACEABLE_METHODS = ["__add__", "__mul__", "__radd__", "__rmul__", "__sub__", "__truediv__",
                       "__rtruediv__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
                       "__ge__", "softplus"]

Layer = tuple[Callable[[], nn.Module], Call]


def _on(shape: Callable[[torch.Tensor], torch.Tensor]) -> Call:
    return lambda m, y: m.layer(shape(y))


_ON_Y = _on(lambda y: y)
MODULE_CASES: dict[type[nn.Module], Layer] = {
    **{cls: (cls, _ON_Y) for cls in [
        nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
        nn.Tanh, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Dropout,
        nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.Hardtanh, nn.LogSigmoid, nn.Softsign,
        nn.Tanhshrink, nn.Flatten, nn.PReLU]},
    nn.Threshold: (lambda: nn.Threshold(0.1, 0.0), _ON_Y),
    nn.Dropout1d: (nn.Dropout1d, _on(_1d)), nn.Dropout3d: (nn.Dropout3d, _on(_3d)),
    nn.MaxPool1d: (lambda: nn.MaxPool1d(2), _on(_1d)), nn.MaxPool2d: (lambda: nn.MaxPool2d(2), _ON_Y),
    nn.MaxPool3d: (lambda: nn.MaxPool3d((1, 2, 2)), _on(_3d)),
    nn.AvgPool1d: (lambda: nn.AvgPool1d(2), _on(_1d)), nn.AvgPool2d: (lambda: nn.AvgPool2d(2), _ON_Y),
    nn.AvgPool3d: (lambda: nn.AvgPool3d((1, 2, 2)), _on(_3d)),
    nn.AdaptiveAvgPool1d: (lambda: nn.AdaptiveAvgPool1d(4), _on(_1d)),
    nn.AdaptiveAvgPool2d: (lambda: nn.AdaptiveAvgPool2d(2), _ON_Y),
    nn.AdaptiveAvgPool3d: (lambda: nn.AdaptiveAvgPool3d((1, 2, 2)), _on(_3d)),
    nn.AdaptiveMaxPool1d: (lambda: nn.AdaptiveMaxPool1d(4), _on(_1d)),
    nn.AdaptiveMaxPool2d: (lambda: nn.AdaptiveMaxPool2d(2), _ON_Y),
    nn.AdaptiveMaxPool3d: (lambda: nn.AdaptiveMaxPool3d((1, 2, 2)), _on(_3d)),
    nn.Upsample: (lambda: nn.Upsample(scale_factor=2.0), _ON_Y),
    nn.UpsamplingNearest2d: (lambda: nn.UpsamplingNearest2d(scale_factor=2.0), _ON_Y),
    nn.UpsamplingBilinear2d: (lambda: nn.UpsamplingBilinear2d(scale_factor=2.0), _ON_Y),
    nn.LPPool1d: (lambda: nn.LPPool1d(2, 2), _on(_1d)), nn.LPPool2d: (lambda: nn.LPPool2d(2, 2), _ON_Y),
    nn.Conv1d: (lambda: nn.Conv1d(6, 4, 3), _on(_1d)), nn.Conv2d: (lambda: nn.Conv2d(6, 4, 3), _ON_Y),
    nn.Conv3d: (lambda: nn.Conv3d(6, 4, (1, 3, 3)), _on(_3d)),
    nn.ConvTranspose1d: (lambda: nn.ConvTranspose1d(6, 4, 3), _on(_1d)),
    nn.ConvTranspose2d: (lambda: nn.ConvTranspose2d(6, 4, 3), _ON_Y),
    nn.ConvTranspose3d: (lambda: nn.ConvTranspose3d(6, 4, (1, 3, 3)), _on(_3d)),
    nn.BatchNorm1d: (lambda: nn.BatchNorm1d(6), _on(_1d)), nn.BatchNorm2d: (lambda: nn.BatchNorm2d(6), _ON_Y),
    nn.BatchNorm3d: (lambda: nn.BatchNorm3d(6), _on(_3d)),
    nn.SyncBatchNorm: (lambda: nn.SyncBatchNorm(6), _ON_Y),
    nn.InstanceNorm1d: (lambda: nn.InstanceNorm1d(6, affine=True), _on(_1d)),
    nn.InstanceNorm2d: (lambda: nn.InstanceNorm2d(6, affine=True), _ON_Y),
    nn.InstanceNorm3d: (lambda: nn.InstanceNorm3d(6, affine=True), _on(_3d)),
    nn.Linear: (lambda: nn.Linear(4, 5), _ON_Y), nn.GroupNorm: (lambda: nn.GroupNorm(2, 6), _ON_Y),
    nn.LayerNorm: (lambda: nn.LayerNorm(4), _ON_Y), nn.RMSNorm: (lambda: nn.RMSNorm(4), _ON_Y),
    nn.Embedding: (lambda: nn.Embedding(10, 3), _on(lambda y: (y.abs() * 9).long().clamp(0, 9))),
    nn.Softmax: (lambda: nn.Softmax(dim=1), _ON_Y),
    nn.LogSoftmax: (lambda: nn.LogSoftmax(dim=-1), _ON_Y),
}


NAMED_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "torchvision.ops.stochastic_depth.stochastic_depth":
        lambda: torchvision.ops.StochasticDepth(0.5, "row"),
    "transformers.grouped_mm_fallback.default": _Experts,
}


class Probe(nn.Module):
    """conv(3->6) then the op under test; ``mask`` is an optional input left out."""

    def __init__(self, call: Call, layer: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        if layer is not None:
            self.layer = layer
        self.w, self.b = nn.Parameter(torch.randn(5, 4)), nn.Parameter(torch.randn(5))
        self.g = nn.Parameter(torch.rand(4) + 0.5)
        self.call = call

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        return self.call(self, self.conv(x))


def records(graph: fx.Graph, table: str, key: Any) -> bool:
    for node in graph.nodes:
        if table == "function" and node.op == "call_function" and node.target is key:
            return True
        if table == "named" and node.op == "call_function" and fn_name(node.target) == key:
            return True
        if table == "method" and node.op == "call_method" and node.target == key:
            return True
        if table == "module" and node.op == "call_module" and node.target == "layer":
            return True
    return False


def qualified(key: Any) -> str:
    if isinstance(key, type):
        return key.__name__
    for prefix, module in (("operator", operator), ("torch", torch), ("F", F),
                           ("builtins", builtins)):
        if getattr(module, getattr(key, "__name__", ""), None) is key:
            return f"{prefix}.{key.__name__}"
    return repr(key)
