"""The plan of an analytic resource estimate: FLOPs and parameters of any subnet of a
supernet as sums of monomials in kept-channel counts.

Every tensor dim of the supernet graph keeps, under a choice, either its traced size (an
inert or pinned dim) or the number of kept positions of its element ids; the analysis
records those per node (``ChannelAnalysis.node_dims``). The FLOPs that
``torch.utils.flop_counter.FlopCounterMode`` counts (matrix products, convolutions,
fused attention) and the frozen parameter shapes are products of such sizes, so each is a
monomial ``coef * count[i] * count[j] * ...``; a plan holds the global mask indices of
every count and the monomials, and evaluating one choice is an indexed sum and a product.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(3, 4))
    >>> plan = build_plan(sn)
    >>> len(plan.counts), len(plan.flops), len(plan.params)  # one count: unit "0"'s kept channels
    (1, 2, 4)
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from fxrazor.analysis.result import PositionMap
from fxrazor.errors import UnsupportedModelError
from fxrazor.flop_probe import counted, refuse, sdpa_counted, torch_function
from fxrazor.layers import LAYERS
from fxrazor.ops import DynamicOp, DynamicParam, SizeCounter

if TYPE_CHECKING:
    from fxrazor.supernet import Supernet

__all__ = ["EstimatePlan", "Monomial", "Size", "build_plan"]

logger = logging.getLogger(__name__)

# A size under a choice: a constant, or ("count", i), the kept count of plan.counts[i].
Size = int | tuple[str, int]
Monomial = tuple[int, tuple[int, ...]]  # (coefficient, count indices)


@dataclass
class EstimatePlan:
    """Global mask indices of each count, and FLOPs / params as monomials over them."""

    total: int  # the index of the always-kept entry of ``Supernet.current_mask()``
    counts: list[np.ndarray] = field(default_factory=list)
    flops: list[Monomial] = field(default_factory=list)
    params: list[Monomial] = field(default_factory=list)
    # FLOP monomials counted only where two sizes differ (attention that torch's CPU
    # kernel runs, uncounted, unless the head dims of query and value differ)
    gated: list[tuple[Monomial, Size, Size]] = field(default_factory=list)
    _arrays: tuple[np.ndarray, ...] | None = None  # see estimate.evaluate


_MATMULS: set[Any] = {torch.matmul, operator.matmul, torch.Tensor.matmul}
# the positions of the two matrices among the arguments
_MM: dict[Any, tuple[int, int]] = {torch.mm: (0, 1), torch.bmm: (0, 1), torch.addmm: (1, 2),
                                   torch.baddbmm: (1, 2)}
_CONVS = {F.conv1d, F.conv2d, F.conv3d}
_CONVTS = {F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}
_METHODS = {"matmul": torch.matmul, "__matmul__": torch.matmul, "mm": torch.mm,
            "bmm": torch.bmm, "addmm": None, "baddbmm": None, "einsum": None}
# Calls that dispatch to counted kernels in ways the plan does not model (an einsum only
# where ``_Builder.einsum`` declines it): counted once where their inputs are not pruned,
# else refused by name rather than counted as nothing.
_UNMODELLED = {torch.einsum, torch.tensordot, F.bilinear, torch.cdist, torch.addbmm,
               torch.chain_matmul, torch.linalg.multi_dot, F.multi_head_attention_forward,
               torch.kron, torch.inner, torch.outer}
# torch.nn layers that run counted kernels but are neither a Linear nor a conv.
_UNMODELLED_LAYERS = (nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Bilinear,
                      nn.Transformer, nn.TransformerEncoderLayer,
                      nn.TransformerDecoderLayer, nn.TransformerEncoder,
                      nn.TransformerDecoder)


class _Builder:
    def __init__(self, sn: Supernet) -> None:
        self.sn = sn
        self.gm = sn.graph_module
        sizes = np.array([u.num_channels for u in sn.every_unit()], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.plan = EstimatePlan(int(sizes.sum()))
        self.keys: dict[bytes, int] = {}
        self.dims = sn.analysis.node_dims
        self.roles: dict[int, dict[str, np.ndarray]] = {}
        for b in sn._bindings:
            self.roles.setdefault(id(b.module), {})[b.role] = b.gidx.numpy()

    # ---- sizes -----------------------------------------------------------------------------
    def count(self, gidx: np.ndarray) -> Size:
        """The kept count of positions ``gidx`` (an int when all are pinned)."""
        if bool((gidx == self.plan.total).all()):
            return len(gidx)
        key = gidx.tobytes()
        if key not in self.keys:
            self.keys[key] = len(self.plan.counts)
            self.plan.counts.append(gidx)
        return ("count", self.keys[key])

    def gidx(self, pmap: PositionMap) -> np.ndarray:
        free = pmap.unit >= 0
        return np.where(free, self.offsets[np.maximum(pmap.unit, 0)] + pmap.channel,
                        self.plan.total).astype(np.int64)

    def shape(self, node: Any, user: fx.Node) -> list[Size]:
        """The sizes of ``node``'s output under a choice (``user`` is named in errors)."""
        if not isinstance(node, fx.Node) or "tensor_meta" not in node.meta \
                or not hasattr(node.meta["tensor_meta"], "shape"):
            raise refuse(user, f"no traced shape for argument {node}")
        full: list[Size] = [int(s) for s in node.meta["tensor_meta"].shape]
        if node.op == "call_module":
            module = self.gm.get_submodule(cast(str, node.target))
            if isinstance(module, DynamicParam):
                return self.param_shape(module, module.value, "value")
        if node.name not in self.dims:
            raise refuse(user, f"the analysis has no channels of its argument {node.name}")
        for d, pmap in self.dims[node.name].items():
            full[d] = self.count(self.gidx(pmap))
        return full

    def param_shape(self, module: nn.Module, value: torch.Tensor, name: str) -> list[Size]:
        """The frozen shape of ``module``'s tensor ``name`` (``value``)."""
        shape: list[Size] = [int(s) for s in value.shape]
        roles = self.roles.get(id(module), {})
        if isinstance(module, DynamicParam):
            for role, gidx in roles.items():
                shape[int(role[3:])] = self.count(gidx)
            return shape
        record = LAYERS.get(cast(Any, type(module)).static_type) \
            if isinstance(module, DynamicOp) else None
        if record is None or record.dynamic_op is not type(module):
            raise UnsupportedModelError(
                f"estimate has no parameter shapes for dynamic op {type(module).__name__}")
        weight = getattr(module, "weight", None)
        if name == "weight" or (weight is not None and value.shape == weight.shape):
            for role, dim in record.channel_dims.items():
                if role in roles:
                    shape[dim] = self._weight_count(module, role, roles[role])
        else:  # a bias: the producing role's channels on dim 0
            role = "out" if "out" in record.channel_dims else "channels"
            if role in roles:
                shape[0] = self.count(roles[role])
        return shape

    def _weight_count(self, module: nn.Module, role: str, gidx: np.ndarray) -> Size:
        groups = getattr(module, "groups", 1)
        if role != "in" or groups == 1 or isinstance(module, nn.modules.conv._ConvTransposeNd):
            return self.count(gidx)
        conv = cast(nn.Conv2d, module)
        if conv.in_channels == groups:  # depthwise: whole groups go, one column each
            return 1
        return self.count(gidx[: conv.in_channels // groups])  # the first group's columns

    # ---- monomials ---------------------------------------------------------------------------
    def add(self, target: list[Monomial], coef: int, sizes: list[Size]) -> None:
        factors = []
        for s in sizes:
            if isinstance(s, tuple):
                factors.append(s[1])
            else:
                coef *= s
        if coef:
            target.append((coef, tuple(factors)))

    # ---- FLOPs ---------------------------------------------------------------------------------
    def flops_of(self, node: fx.Node) -> None:
        if node.op == "call_module":
            self._module_flops(node, self.gm.get_submodule(cast(str, node.target)))
        elif node.op == "call_function":
            self._function_flops(node, node.target)
        elif node.op == "call_method":
            name = cast(str, node.target)
            if name in _METHODS:
                fn = _METHODS[name]
                if fn is None:
                    raise refuse(node, f"method {name} is not modelled")
                self._function_flops(node, fn)

    def _module_flops(self, node: fx.Node, module: nn.Module) -> None:
        if isinstance(module, (SizeCounter, DynamicParam)):
            return
        x = node.args[0] if node.args else None
        if isinstance(module, nn.Linear):
            xs = self.shape(x, node)
            out = self.shape(node, node)
            self.mm(node, xs[:-1], xs[-1], out[-1])
            return
        if isinstance(module, nn.modules.conv._ConvNd):
            if module.__dict__.get("_fxr_kernel") is not None:
                raise refuse(node, "a searched kernel size is not modelled")
            weight = self.param_shape(module, module.weight, "weight") \
                if isinstance(module, DynamicOp) else _sizes(module.weight.shape)
            self.conv(node, x, weight, module.transposed)
            return
        static = getattr(type(module), "static_type", type(module))
        plain = static.__module__.startswith("torch.nn.modules") and not module._modules
        if not plain or isinstance(module, _UNMODELLED_LAYERS):
            self.constant(node, module, f"layer {type(module).__name__} may run counted "
                                        f"kernels that the plan does not model")

    def _function_flops(self, node: fx.Node, fn: Any) -> None:
        args = list(node.args)
        if fn is torch.einsum and self.einsum(node, args):
            return
        if fn in _UNMODELLED:
            self.constant(node, fn, f"{getattr(fn, '__name__', fn)} is not modelled")
            return
        if fn is F.linear:
            xs = self.shape(args[0], node)
            w = self.shape(args[1] if len(args) > 1 else node.kwargs["weight"], node)
            self.mm(node, xs[:-1], xs[-1], w[0])
        elif fn in _MATMULS:
            self.matmul(node, self.shape(args[0], node), self.shape(args[1], node))
        elif fn in _MM:
            i, j = _MM[fn]
            a, b = self.shape(args[i], node), self.shape(args[j], node)
            self.mm(node, a[:-1], a[-1], b[-1])
        elif fn in _CONVS or fn in _CONVTS:
            weight = args[1] if len(args) > 1 else node.kwargs["weight"]
            self.conv(node, args[0], self.shape(weight, node), fn in _CONVTS)
        elif fn is F.scaled_dot_product_attention:
            self.sdpa(node)
        elif not torch_function(fn):  # a wrapped user function (torch.fx.wrap)
            self.constant(node, fn, f"function {getattr(fn, '__qualname__', fn)} runs "
                                    f"counted kernels on pruned channels")

    def constant(self, node: fx.Node, call: Any, why: str) -> None:
        """A call the plan does not model: FlopCounterMode's count on the traced inputs,
        once, where its inputs keep their traced shapes under every choice (an opaque
        leaf's are pinned) or where it counts nothing at full width."""
        flops = counted(node, call)
        if not flops:
            return
        for arg in node.all_input_nodes:
            shape = self.shape(arg, node) if "tensor_meta" in arg.meta else []
            if any(isinstance(s, tuple) for s in shape):
                raise refuse(node, f"{why}, and its input {arg.name} has pruned channels")
        self.add(self.plan.flops, flops, [])

    def einsum(self, node: fx.Node, args: list[Any]) -> bool:
        """A two-operand einsum runs as one bmm over the indices both operands or the
        output have (the others are summed first), or as a product, uncounted, when no
        index is contracted. False for what this does not model (ellipsis, more operands)."""
        operands = args[1:] if len(args) > 2 else list(args[1]) if len(args) == 2 else []
        if not isinstance(args[0], str) or len(operands) != 2 or "..." in args[0] \
                or "->" not in args[0]:
            return False
        inputs, out = args[0].replace(" ", "").split("->")
        a, b = inputs.split(",") if inputs.count(",") == 1 else ("", "")
        shapes = [self.shape(o, node) for o in operands]
        if not a or len(a) != len(shapes[0]) or len(b) != len(shapes[1]):
            return False
        sizes: dict[str, Size] = {}
        for letters, shape in zip((a, b), shapes, strict=True):
            for letter, size in zip(letters, shape, strict=True):
                if sizes.get(letter, 1) == 1:
                    sizes[letter] = size
        # torch squeezes contracted dims of size 1: none left is a product, uncounted
        contracted = sorted((set(a) & set(b)) - set(out))
        varying = [sizes[k] for k in contracted if isinstance(sizes[k], tuple)]
        fixed = math.prod(int(cast(int, sizes[k])) for k in contracted
                          if not isinstance(sizes[k], tuple))
        if len(varying) > 1 and fixed == 1:
            return False
        terms: list[Monomial] = []
        self.add(terms, 2, [sizes[k] for k in sorted((set(a) & set(b)) | set(out))])
        if fixed > 1:
            self.plan.flops += terms
        elif varying:
            self.plan.gated += [(t, varying[0], 1) for t in terms]
        return True

    def mm(self, node: fx.Node, rows: list[Size], k: Size, n: Size) -> None:
        """A (rows..., k) @ (k, n) product: FlopCounterMode's 2 * m * k * n."""
        if not rows:
            raise refuse(node, "a vector operand (mv/dot) is not modelled")
        self.add(self.plan.flops, 2, [*rows, k, n])

    def matmul(self, node: fx.Node, a: list[Size], b: list[Size]) -> None:
        if len(a) < 2 or len(b) < 2:
            raise refuse(node, "matmul with a 1-D operand is not modelled")
        width = max(len(a), len(b)) - 2
        batch_a = _sizes([1] * (width + 2 - len(a))) + a[:-2]
        batch_b = _sizes([1] * (width + 2 - len(b))) + b[:-2]
        batch = [sb if sa == 1 else sa for sa, sb in zip(batch_a, batch_b, strict=True)]
        self.add(self.plan.flops, 2, [*batch, a[-2], a[-1], b[-1]])

    def conv(self, node: fx.Node, x: Any, weight: list[Size], transposed: bool) -> None:
        xs, out = self.shape(x, node), self.shape(node, node)
        spatial = len(weight) - 2
        batch: list[Size] = [xs[0]] if len(xs) == spatial + 2 else []
        conv_shape = (xs if transposed else out)[-spatial:] if spatial else []
        self.add(self.plan.flops, 2, [*batch, *conv_shape, *weight])

    def sdpa(self, node: fx.Node) -> None:
        """Fused attention: counted where the kernel that runs it is (not torch's CPU
        kernels), so the plan asks FlopCounterMode once on the traced shapes."""
        q, k, v = (self.shape(node.args[i] if len(node.args) > i else node.kwargs[name], node)
                   for i, name in enumerate(("query", "key", "value")))
        if len(q) != 4:
            raise refuse(node, "attention on other than 4-D (batch, heads, seq, dim) inputs")
        b, h, s_q, d = q
        terms: list[Monomial] = []
        self.add(terms, 2, [b, h, s_q, d, k[2]])
        self.add(terms, 2, [b, h, s_q, k[2], v[3]])
        if sdpa_counted(node):
            self.plan.flops += terms
        else:  # the CPU kernel needs equal head dims; the counted math path runs otherwise
            self.plan.gated += [(t, d, v[3]) for t in terms]

    # ---- parameters --------------------------------------------------------------------------
    def params(self) -> None:
        """The frozen model's parameters (see ``passes.freeze``): one copy per layer path,
        sliced layers' shared parameters tied again where their slices match."""
        seen: set[str] = set()
        tied: set[tuple[int, tuple[Size, ...]]] = set()
        for node in self.gm.graph.nodes:
            target = cast(str, node.target)
            if node.op == "get_attr" and target not in seen:
                seen.add(target)
                value = self.gm.get_parameter(target) if _is_param(self.gm, target) else None
                if value is not None:
                    self.add(self.plan.params, value.numel(), [])
            if node.op != "call_module" or target in seen:
                continue
            seen.add(target)
            module = self.gm.get_submodule(target)
            if isinstance(module, DynamicParam):
                if isinstance(module.value, nn.Parameter):
                    self.add(self.plan.params, 1, self.param_shape(module, module.value, "value"))
                continue
            for name, p in _unique_params(module):
                shape = self.param_shape(module, p, name) if isinstance(module, DynamicOp) \
                    else _sizes(p.shape)
                key = (id(p), tuple(shape))
                if key not in tied:
                    tied.add(key)
                    self.add(self.plan.params, 1, shape)


def _sizes(shape: Any) -> list[Size]:
    return [int(s) for s in shape]


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    owner, _, attr = target.rpartition(".")
    return isinstance(getattr(gm.get_submodule(owner) if owner else gm, attr, None),
                      nn.Parameter)


def _unique_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name in its own module, parameter), each once (``module.parameters()``'s order)."""
    seen: set[int] = set()
    found = []
    for sub in module.modules():
        for name, p in sub._parameters.items():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                found.append((name if sub is module else "", p))
    return found


def build_plan(sn: Supernet) -> EstimatePlan:
    """The estimate plan of ``sn`` (see the module docstring)."""
    if sn.nas_mutator.groups:
        raise UnsupportedModelError(
            "estimate models channel widths only; this supernet has op or value mutables "
            f"({[g.key for g in sn.nas_mutator.groups][:5]}): freeze and count it instead")
    builder = _Builder(sn)
    for node in sn.graph_module.graph.nodes:
        builder.flops_of(node)
    builder.params()
    plan = builder.plan
    logger.debug("estimate plan: %d counts, %d FLOP terms, %d param terms",
                 len(plan.counts), len(plan.flops), len(plan.params))
    return plan
