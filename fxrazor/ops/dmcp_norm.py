"""DMCP's BatchNorm: a dynamic BatchNorm2d that can scale its output by keep probabilities.

DMCP (Guo et al., CVPR 2020) learns each unit's width through architecture parameters: in
its "expected" forward every channel's output is multiplied by the probability that the
channel is kept, so the task loss reaches those parameters. The layer carries no parameter
of its own: it holds *sources* (the DMCP channel units, duck-typed: an ``arch_train`` flag
and ``channel_keep_probs()``) and, per source, where each of the source's channels sits in
its own channel dim. A source whose ``arch_train`` is False leaves the forward a plain
(sliced) BatchNorm; ``to_static`` gives a plain ``nn.BatchNorm2d`` of the kept channels.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Half:  # a source: two channels, each kept with probability 0.5
    ...     arch_train = True
    ...     def channel_keep_probs(self):
    ...         return torch.tensor([0.5, 0.5])
    >>> bn = DMCPBatchNorm2d.from_static(nn.BatchNorm2d(3).eval())
    >>> bn.add_arch_source(Half(), torch.tensor([[1], [2]]))
    >>> x = torch.randn(1, 3, 2, 2)
    >>> torch.allclose(bn(x)[:, 1:], 0.5 * bn.to_static()(x)[:, 1:])
    True
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError
from fxrazor.ops.base import DynamicOp, take
from fxrazor.ops.norm import DynamicBatchNorm2d

__all__ = ["DMCPBatchNorm2d", "ArchSource"]


class ArchSource(Protocol):
    """What a :class:`DMCPBatchNorm2d` reads from a DMCP unit."""

    @property
    def arch_train(self) -> bool: ...

    def channel_keep_probs(self) -> torch.Tensor: ...


class DMCPBatchNorm2d(DynamicBatchNorm2d):
    """A dynamic BatchNorm2d whose output, while a source trains its architecture
    (``arch_train``), is scaled per channel by that source's keep probabilities.

    Build it with ``from_static`` from a plain or a dynamic BatchNorm2d (the selections of
    a dynamic one carry over; the parameters and statistics are shared, not copied), then
    ``add_arch_source`` once per unit whose channels it normalises.
    """

    static_type = nn.BatchNorm2d
    _dmcp_sources: list[tuple[ArchSource, torch.Tensor]]

    @classmethod
    def from_static(cls, module: nn.Module) -> DMCPBatchNorm2d:
        if not isinstance(module, nn.BatchNorm2d):
            raise InvalidArgumentError(
                f"DMCPBatchNorm2d.from_static takes a BatchNorm2d, got {type(module).__name__}")
        op = super().from_static(module)
        assert isinstance(op, DMCPBatchNorm2d)  # retype made it one
        if isinstance(module, DynamicOp):  # keep what the supernet selected so far
            op.__dict__["_fxr_sel"] = dict(module._fxr_sel)
        # plain attributes (not submodules): the units belong to the supernet, not to us
        op.__dict__["_dmcp_sources"] = list(getattr(module, "_dmcp_sources", []))
        return op

    def add_arch_source(self, source: ArchSource, positions: Any) -> None:
        """Scale channels ``positions[k]`` by ``source.channel_keep_probs()[k]`` while
        ``source.arch_train`` is True.

        Args:
            source: a DMCP unit (anything with ``arch_train`` and ``channel_keep_probs()``).
            positions: a (source channels, r) integer array or tensor of positions in this
                layer's channel dim (``UnitMember.positions``).
        """
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        if pos.dim() == 1:
            pos = pos.unsqueeze(1)
        if pos.dim() != 2 or pos.numel() == 0:
            raise InvalidArgumentError(
                f"DMCPBatchNorm2d.add_arch_source: positions must be a non-empty (channels, r)"
                f" array, got shape {tuple(pos.shape)}")
        if int(pos.min()) < 0 or int(pos.max()) >= self.num_features:
            raise InvalidArgumentError(
                f"DMCPBatchNorm2d.add_arch_source: positions must lie in [0, "
                f"{self.num_features}), got [{int(pos.min())}, {int(pos.max())}]")
        if any(s is source for s, _ in self._dmcp_sources):
            raise InvalidArgumentError(
                "DMCPBatchNorm2d.add_arch_source: this source is already attached")
        self._dmcp_sources.append((source, pos))

    @property
    def arch_sources(self) -> list[ArchSource]:
        """The attached sources, in the order they were added."""
        return [s for s, _ in self._dmcp_sources]

    def arch_scale(self) -> torch.Tensor | None:
        """Per kept channel, the product of the keep probabilities of the sources that
        train now (None when none does): a differentiable function of their parameters."""
        active = [(s, p) for s, p in self._dmcp_sources if s.arch_train]
        if not active:
            return None
        scale: torch.Tensor | None = None
        for source, pos in active:
            probs = source.channel_keep_probs()
            if probs.shape != (pos.shape[0],):
                raise InvalidArgumentError(
                    f"DMCPBatchNorm2d: a source gave {tuple(probs.shape)} keep probabilities"
                    f" for {pos.shape[0]} channels")
            if scale is None:
                scale = torch.ones(self.num_features, dtype=probs.dtype, device=probs.device)
            # position r·k+j (j < r) of the flat positions belongs to source channel k
            values = probs.repeat_interleave(pos.shape[1])
            scale = scale.index_copy(0, pos.flatten().to(probs.device), values)
        assert scale is not None
        return take(scale, 0, self.selection("channels"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        scale = self.arch_scale()
        if scale is None:
            return out
        return out * scale.to(device=out.device, dtype=out.dtype).view(1, -1, 1, 1)

    def to_static(self) -> nn.Module:
        """A plain ``nn.BatchNorm2d`` of the kept channels (no scaling, no sources)."""
        static = super().to_static()
        static.__dict__.pop("_dmcp_sources", None)
        return static

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, arch_sources={len(self._dmcp_sources)}"
