"""Every dynamic op of the layer records (``fxrazor.layers.LAYERS``), every role:
``to_static()(x) == op(x)``.

The cases iterate the table, so a new dynamic op without a case here fails
``test_every_dynamic_op_has_cases`` and its own parametrisation. For each op and role a
small static layer (grouped, depthwise and transposed convolutions too) is wrapped with
``from_static``, given a selection (first-k slices and non-contiguous index tensors, tied
across groups where the analysis ties them), and run on an input of the selected width:
the op's forward must equal its frozen layer's, and the frozen layer's weights must be the
original weights at the selected positions (indexed here by hand, not by the library).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fxrazor.layers import LAYERS
from fxrazor.ops import DynamicParam, Selection

# Selections: None (all), a slice (first k) or sorted index tensors.
Sels = dict[str, Selection]


def _kept(sel: Selection, n: int) -> list[int]:
    if sel is None:
        return list(range(n))
    if isinstance(sel, slice):
        return list(range(sel.start, sel.stop))
    return sel.tolist()


def _pick(n: int, kind: str, gen: torch.Generator) -> Selection:
    """First k of n (a slice) or a random non-contiguous subset (an index tensor)."""
    k = int(torch.randint(1, n, (1,), generator=gen)) if n > 1 else 1
    if kind == "slice":
        return slice(0, k)
    while True:
        idx = torch.randperm(n, generator=gen)[:max(k, 2) if n > 2 else k].sort().values
        if n <= 2 or int(idx[-1] - idx[0]) + 1 != len(idx):  # a gap, where one can be
            return idx


def _tied(per: int, groups: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Channel j of every group (what the analysis ties): positions j + g * per."""
    cols = torch.tensor(_kept(_pick(per, kind, gen), per))
    return (cols[None, :] + per * torch.arange(groups)[:, None]).flatten()


@dataclass(frozen=True)
class Case:
    """A static layer, the selections of a role, its input, and its expected weights."""

    build: Callable[[], nn.Module]
    select: Callable[[nn.Module, str, str, torch.Generator], Sels]
    inputs: Callable[[nn.Module, Sels], torch.Tensor]
    weights: Callable[[nn.Module, Sels], dict[str, torch.Tensor | None]]


def _spatial(n: int) -> tuple[int, ...]:
    return {1: (7,), 2: (5, 5), 3: (4, 3, 3)}[n]


def _independent(m: nn.Module, role: str, kind: str, gen: torch.Generator) -> Sels:
    sizes = {"out": getattr(m, "out_channels", getattr(m, "out_features", None)),
             "in": getattr(m, "in_channels", getattr(m, "in_features", None))}
    if isinstance(m, nn.Embedding):
        sizes["out"] = m.embedding_dim
    return {role: _pick(sizes[role], kind, gen)}


def _conv_select(m: nn.Module, role: str, kind: str, gen: torch.Generator) -> Sels:
    g = m.groups
    if g == 1:
        return _independent(m, role, kind, gen)
    if m.in_channels == g:  # depthwise: a kept group keeps its input and its outputs
        mult = m.out_channels // g
        groups = _pick(g, kind, gen)
        if isinstance(groups, slice):
            return {"in": groups, "out": slice(0, groups.stop * mult)}
        outs = (groups[:, None] * mult + torch.arange(mult)[None, :]).flatten()
        return {"in": groups, "out": outs}
    size = m.in_channels if role == "in" else m.out_channels
    return {role: _tied(size // g, g, kind, gen)}


def _conv_inputs(m: nn.Module, sels: Sels) -> torch.Tensor:
    c_in = len(_kept(sels.get("in"), m.in_channels))
    return torch.randn(2, c_in, *_spatial(len(m.kernel_size)))


def _conv_weights(m: nn.Module, sels: Sels) -> dict[str, torch.Tensor | None]:
    outs, ins = _kept(sels.get("out"), m.out_channels), _kept(sels.get("in"), m.in_channels)
    w = m.weight.detach()
    if isinstance(m, nn.modules.conv._ConvTransposeNd):  # (in, out, k...)
        weight = w[ins][:, outs]
    elif m.groups == 1:
        weight = w[outs][:, ins]
    elif m.in_channels == m.groups:  # depthwise: one column per output
        weight = w[outs]
    else:  # grouped: the kept columns of group 0 are the kept columns of every group
        per = m.in_channels // m.groups
        weight = w[outs][:, [i for i in ins if i < per]]
    return {"weight": weight, "bias": None if m.bias is None else m.bias.detach()[outs]}


def _conv(cls: type[nn.Module], n: int, c_in: int, c_out: int, **kwargs: Any) -> Case:
    def build() -> nn.Module:
        return cls(c_in, c_out, 3, padding=1, **kwargs)

    return Case(build, _conv_select, _conv_inputs, _conv_weights)


def _linear_case() -> Case:
    def inputs(m: nn.Module, sels: Sels) -> torch.Tensor:
        return torch.randn(2, 3, len(_kept(sels.get("in"), m.in_features)))

    def weights(m: nn.Module, sels: Sels) -> dict[str, torch.Tensor | None]:
        outs, ins = _kept(sels.get("out"), m.out_features), _kept(sels.get("in"), m.in_features)
        return {"weight": m.weight.detach()[outs][:, ins], "bias": m.bias.detach()[outs]}

    return Case(lambda: nn.Linear(6, 5), _independent, inputs, weights)


def _embedding_case() -> Case:
    def weights(m: nn.Module, sels: Sels) -> dict[str, torch.Tensor | None]:
        return {"weight": m.weight.detach()[:, _kept(sels.get("out"), m.embedding_dim)]}

    return Case(lambda: nn.Embedding(10, 6, padding_idx=2), _independent,
                lambda m, sels: torch.tensor([[0, 2, 9], [4, 4, 1]]), weights)


def _width(norm: nn.Module) -> int:
    return getattr(norm, "num_features", None) or getattr(norm, "num_channels", None) \
        or norm.normalized_shape[0]


def _channel_weights(m: nn.Module, sels: Sels) -> dict[str, torch.Tensor | None]:
    kept = _kept(sels.get("channels"), _width(m))
    names = ["weight", "bias", "running_mean", "running_var"]
    return {k: None if getattr(m, k, None) is None else getattr(m, k).detach()[kept]
            for k in names if hasattr(m, k)}


def _norm(build: Callable[[], nn.Module], dims: int, last: bool = False,
          tie: int = 1) -> Case:
    def select(m: nn.Module, role: str, kind: str, gen: torch.Generator) -> Sels:
        n = _width(m)
        return {role: _tied(n // tie, tie, kind, gen) if tie > 1 else _pick(n, kind, gen)}

    def inputs(m: nn.Module, sels: Sels) -> torch.Tensor:
        c = len(_kept(sels.get("channels"), _width(m)))
        return torch.randn(4, 3, c) if last else torch.randn(4, c, *_spatial(dims))

    return Case(build, select, inputs, _channel_weights)


def _with_stats(m: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters."""
    with torch.no_grad():
        for name in ("running_mean", "weight", "bias"):
            if getattr(m, name, None) is not None:
                getattr(m, name).copy_(torch.randn_like(getattr(m, name)))
        if getattr(m, "running_var", None) is not None:
            m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
    return m


CASES: dict[type[nn.Module], dict[str, Case]] = {
    **{conv: {"plain": _conv(conv, n, 4, 6), "circular": _conv(conv, n, 3, 5,
                                                               padding_mode="circular"),
              "grouped": _conv(conv, n, 6, 4, groups=2),
              "depthwise": _conv(conv, n, 4, 4, groups=4),
              "depthwise_x2": _conv(conv, n, 3, 6, groups=3, bias=False)}
       for n, conv in [(1, nn.Conv1d), (2, nn.Conv2d), (3, nn.Conv3d)]},
    **{conv: {"plain": _conv(conv, n, 4, 6), "strided": _conv(conv, n, 5, 3, stride=2,
                                                               output_padding=1)}
       for n, conv in [(1, nn.ConvTranspose1d), (2, nn.ConvTranspose2d),
                       (3, nn.ConvTranspose3d)]},
    nn.Linear: {"plain": _linear_case()},
    nn.Embedding: {"plain": _embedding_case()},
    **{bn: {"plain": _norm(lambda bn=bn: _with_stats(bn(6)), n),
            "untracked": _norm(lambda bn=bn: bn(5, track_running_stats=False), n)}
       for n, bn in [(1, nn.BatchNorm1d), (2, nn.BatchNorm2d), (3, nn.BatchNorm3d),
                     (2, nn.SyncBatchNorm)]},
    **{inorm: {"affine": _norm(lambda i=inorm: _with_stats(i(6, affine=True)), n),
               "tracked": _norm(lambda i=inorm: _with_stats(
                   i(5, affine=True, track_running_stats=True)), n)}
       for n, inorm in [(1, nn.InstanceNorm1d), (2, nn.InstanceNorm2d), (3, nn.InstanceNorm3d)]},
    nn.GroupNorm: {"tied": _norm(lambda: _with_stats(nn.GroupNorm(3, 6)), 2, tie=3),
                   "one_group": _norm(lambda: _with_stats(nn.GroupNorm(1, 5)), 2),
                   "per_channel": _norm(lambda: _with_stats(nn.GroupNorm(4, 4)), 2)},
    nn.LayerNorm: {"affine": _norm(lambda: _with_stats(nn.LayerNorm(6)), 1, last=True),
                   "no_bias": _norm(lambda: _with_stats(nn.LayerNorm(5, bias=False)), 1,
                                    last=True)},
    nn.RMSNorm: {"affine": _norm(lambda: _with_stats(nn.RMSNorm(6)), 1, last=True),
                 "plain": _norm(lambda: nn.RMSNorm(5, elementwise_affine=False), 1, last=True)},
}


# every layer type whose record has a dynamic op (so a new record without a case fails)
DYNAMIC_OPS = {kind: r.dynamic_op for kind, r in LAYERS.items() if r.dynamic_op is not None}


def _params() -> list[Any]:
    params = []
    for static in DYNAMIC_OPS:
        for variant in CASES.get(static, {"missing": None}):
            for role in LAYERS[static].roles:
                for kind in ("slice", "index"):
                    for mode in ("eval", "train"):
                        params.append(pytest.param(static, variant, role, kind, mode, id=(
                            f"{static.__name__}-{variant}-{role}-{kind}-{mode}")))
    return params


def _case(static: type[nn.Module], variant: str) -> Case:
    if static not in CASES:
        pytest.fail(f"{static.__name__} has a dynamic op but no case in {__file__}")
    return CASES[static][variant]


def test_every_dynamic_op_has_cases() -> None:
    assert set(DYNAMIC_OPS) <= set(CASES)


@pytest.mark.parametrize(("static", "variant", "role", "kind", "mode"), _params())
def test_frozen_op_equals_dynamic_op(static: type[nn.Module], variant: str, role: str,
                                     kind: str, mode: str) -> None:
    case = _case(static, variant)
    seed = zlib.crc32(f"{static.__name__} {variant} {role} {kind}".encode())  # reproducible
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(0)
    layer = case.build().train(mode == "train")
    op = DYNAMIC_OPS[static].from_static(copy.deepcopy(layer))
    sels = case.select(layer, role, kind, gen)
    for name, sel in sels.items():
        op.set_selection(name, sel)
    x = case.inputs(layer, sels)
    frozen = op.to_static()
    assert type(frozen) is static
    with torch.no_grad():
        got, want = op(x), frozen(x)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for name, expected in case.weights(layer, sels).items():
        actual = getattr(frozen, name)
        if expected is None:
            assert actual is None, name
        elif mode == "eval" or not name.startswith("running"):
            torch.testing.assert_close(actual, expected, rtol=0, atol=0, msg=name)
    if mode == "train" and getattr(frozen, "running_mean", None) is not None:
        # training writes the batch statistics back into the op's kept positions only
        kept = _kept(next(iter(sels.values())), len(layer.running_mean))
        torch.testing.assert_close(op.running_mean[kept], frozen.running_mean)
        torch.testing.assert_close(op.running_var[kept], frozen.running_var)
        rest = [i for i in range(len(layer.running_mean)) if i not in kept]
        assert torch.equal(op.running_mean[rest], layer.running_mean[rest])


@pytest.mark.parametrize("static", list(DYNAMIC_OPS), ids=lambda t: t.__name__)
def test_full_width_op_equals_static_layer(static: type[nn.Module]) -> None:
    for variant, case in CASES.get(static, {}).items():
        torch.manual_seed(0)
        layer = case.build().eval()
        op = DYNAMIC_OPS[static].from_static(copy.deepcopy(layer))
        assert op.is_full and isinstance(op, static)
        x = case.inputs(layer, {})
        with torch.no_grad():
            want = layer(x)
            torch.testing.assert_close(op(x), want, rtol=0, atol=0, msg=variant)
            torch.testing.assert_close(op.to_static()(x), want, rtol=0, atol=0, msg=variant)
    assert static in CASES


@pytest.mark.parametrize("kind", ["slice", "index"])
@pytest.mark.parametrize("buffer", [False, True], ids=["parameter", "buffer"])
def test_dynamic_param_selects_every_dim(kind: str, buffer: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    value = torch.randn(4, 5, 6, generator=gen)
    param = DynamicParam(value if buffer else nn.Parameter(value.clone()), "block.table")
    assert [param.selection(f"dim{d}") for d in range(3)] == [None, None, None]
    torch.testing.assert_close(param(), value, rtol=0, atol=0)
    sels = {f"dim{d}": _pick(n, kind, gen) for d, n in enumerate(value.shape)}
    for role, sel in sels.items():
        param.set_selection(role, sel)
    kept = [_kept(sels[f"dim{d}"], n) for d, n in enumerate(value.shape)]
    expected = torch.from_numpy(value.numpy()[np.ix_(*kept)])
    torch.testing.assert_close(param(), expected, rtol=0, atol=0)
    frozen = param.to_static()
    torch.testing.assert_close(frozen, expected, rtol=0, atol=0)
    assert frozen.is_contiguous() and isinstance(frozen, nn.Parameter) is not buffer
    assert frozen.data_ptr() != param.value.data_ptr()  # a copy, not a view
