"""The fusing convolution of DCFF: each kept filter is a temperature-weighted blend of all.

Lin et al., "Training Compact CNNs for Image Classification using Dynamic-Coded Filter
Fusion" (arXiv 2107.06916). With the filters ``F_1..F_c`` of a conv flattened to vectors
and a temperature ``tau``:

* the inter-similarity distribution of filter ``i`` is
  ``p_i = softmax_j(-||F_i - F_j||_2 / tau)`` (the paper's ``t`` is ``1 / tau``);
* its importance is ``sum_j KL(p_i || p_j)``: a filter unlike the others scores high;
* the filter kept at position ``i`` is the fusion ``F^_i = sum_j p_ij F_j`` (the bias is
  fused the same way).

The distributions are computed from the weights without gradient, and held fixed between
updates, as the authors and MMRazor do; the fusion itself is a weighted sum of all the
filters, so every filter, kept or not, gets a gradient. At full width (no output
selection) the conv is the plain conv: nothing is fused, as in MMRazor, so the full-width
supernet is exactly the original model.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = FuseConv2d.from_static(nn.Conv2d(2, 4, 1))
    >>> scores = conv.update_fusion(0.5)
    >>> conv.set_selection("out", torch.tensor([0, 2]))
    >>> x = torch.randn(1, 2, 3, 3)
    >>> torch.allclose(conv(x), conv.to_static()(x))
    True
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError
from fxrazor.ops.base import count, take
from fxrazor.ops.conv import DynamicConv2d

__all__ = ["FuseConv2d", "similarity_log_distribution", "filter_importance", "check_temperature"]


def check_temperature(tau: Any) -> float:
    """``tau`` as a float, or an error unless it is a finite number > 0."""
    if isinstance(tau, bool) or not isinstance(tau, int | float) \
            or not math.isfinite(tau) or tau <= 0:
        raise InvalidArgumentError(
            f"the DCFF temperature must be a finite number > 0, got {tau!r}; take it from "
            f"fxrazor.mutables.dcff_unit.dcff_temperature(progress, total)")
    return float(tau)


def similarity_log_distribution(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """``log p`` (c x c): row ``i`` is the log of ``softmax_j(-||F_i - F_j|| / tau)`` over
    the filters ``F`` (dim 0 of ``weight``). Logs, so that a probability that underflows
    to 0 at a small temperature still gives a finite KL term.

    Example:
        >>> w = torch.tensor([[0.0], [1.0]])
        >>> [round(v, 4) for v in similarity_log_distribution(w, 1.0).exp()[0].tolist()]
        [0.7311, 0.2689]
    """
    tau = check_temperature(tau)
    with torch.no_grad():
        flat = weight.detach().reshape(weight.shape[0], -1)
        flat = flat.to(torch.promote_types(flat.dtype, torch.float32))
        # the direct formula keeps the diagonal exactly 0 (the matmul shortcut does not)
        dist = torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist")
        return torch.log_softmax(-dist / tau, dim=1)


def filter_importance(log_p: torch.Tensor) -> torch.Tensor:
    """DCFF's importance of each filter, ``I_i = sum_j KL(p_i || p_j)``, from ``log p``.

    ``sum_j sum_k p_ik (log p_ik - log p_jk) = c * sum_k p_ik log p_ik - sum_k p_ik S_k``
    with ``S_k = sum_j log p_jk``: one matrix product instead of a c x c x c tensor.

    Example:
        >>> log_p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()
        >>> round(float(filter_importance(log_p)[0]), 4)  # KL([.5,.5] || [.9,.1])
        0.5108
    """
    p = log_p.exp()
    c = log_p.shape[0]
    return c * (p * log_p).sum(1) - p @ log_p.sum(0)


class FuseConv2d(DynamicConv2d):
    """A dynamic ``Conv2d`` (``groups == 1``) whose kept output filters are DCFF fusions.

    ``update_fusion(tau)`` computes the similarity distributions from the current weights
    at temperature ``tau``, keeps them, and returns each filter's importance (the unit
    ranks its channels by it). Until the first update the conv slices like a
    :class:`~fxrazor.ops.conv.DynamicConv2d`. ``to_static()`` bakes the fused filters into
    a plain ``nn.Conv2d``, so a frozen subnet computes what the supernet does.

    Attributes:
        fusion: the kept distributions ``p`` (c x c, a non-persistent buffer, so it moves
            with the module and stays out of the state dict), or None before an update.
        temperature: the ``tau`` of the last update, or None.
    """

    fusion: torch.Tensor | None

    @classmethod
    def from_static(cls, module: nn.Module) -> FuseConv2d:
        """Wrap a ``Conv2d`` (or its dynamic op), sharing its parameters; no fusion yet."""
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            what = (f"a Conv2d with groups={module.groups}" if isinstance(module, nn.Conv2d)
                    else type(module).__name__)
            raise InvalidArgumentError(
                f"FuseConv2d fuses the filters of a Conv2d with groups == 1, got {what}; "
                f"leave grouped and depthwise convs as DynamicConv2d")
        op = cast("FuseConv2d", super().from_static(module))
        # own copies: the wrapped module keeps its set, and no buffer of its own is added
        op.__dict__["_non_persistent_buffers_set"] = set(module._non_persistent_buffers_set)
        op.register_buffer("fusion", None, persistent=False)
        op.__dict__["temperature"] = None
        return op

    def update_fusion(self, tau: float) -> torch.Tensor:
        """Recompute the distributions at temperature ``tau`` from the current weights;
        returns the importance of every filter (length ``out_channels``)."""
        log_p = similarity_log_distribution(self.weight, tau)
        self.fusion = log_p.exp()  # float32 at least; cast to the weight's dtype on use
        self.__dict__["temperature"] = check_temperature(tau)
        return filter_importance(log_p)

    def _sliced(self) -> tuple[torch.Tensor, torch.Tensor | None, int, int, int]:
        out_sel = self.selection("out")
        if out_sel is None or self.fusion is None:  # full width, or not yet updated
            return super()._sliced()
        in_sel = self.selection("in")
        weight = take(self.weight, 1, in_sel)  # every filter, on the kept input channels
        rows = take(self.fusion, 0, out_sel).to(weight)  # (kept, c): one blend per kept one
        fused = (rows @ weight.reshape(weight.shape[0], -1)).reshape(
            rows.shape[0], *weight.shape[1:])
        bias = None if self.bias is None else rows @ self.bias
        return (fused, bias, 1, count(in_sel, self.in_channels),
                count(out_sel, self.out_channels))

    def to_static(self) -> nn.Module:
        """A plain ``nn.Conv2d`` holding the fused filters (no fusion buffer left)."""
        static = super().to_static()
        static._buffers.pop("fusion", None)  # retype gave the static its own buffer dict
        static.__dict__["_non_persistent_buffers_set"] = \
            set(self._non_persistent_buffers_set) - {"fusion"}
        static.__dict__.pop("temperature", None)
        return static

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.temperature}"
