"""The DCFF channel unit: filters fused by dynamic-coded filter fusion.

Lin et al., "Training Compact CNNs for Image Classification using Dynamic-Coded Filter
Fusion" (arXiv 2107.06916). The unit puts a :class:`~fxrazor.ops.fuse_conv.FuseConv2d` in
place of each conv that produces its channels; at every update (once an epoch in the
paper) the training loop sets the temperature from its progress, each fusing conv
recomputes its filters' similarity distributions, and the unit keeps the channels whose
filters are most important (largest summed KL divergence). Training runs on the fused
filters; ``fxrazor.freeze`` bakes them into plain convs.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> from fxrazor.utils.runtime_info import RuntimeInfo
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 8, 8), unit="dcff",
    ...                      unit_args={"candidate_choices": [0.5]})
    >>> type(sn.graph_module.get_submodule("0")).__name__
    'FuseConv2d'
    >>> for epoch in range(2):  # the training loop, once an epoch
    ...     with RuntimeInfo.scope(epoch=epoch, max_epochs=2):
    ...         tau = calc_information(sn)
    >>> round(tau, 4), sn(torch.randn(1, 3, 8, 8)).shape
    (0.0002, torch.Size([1, 4, 6, 6]))
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.one_shot_unit import OneShotMutableChannelUnit
from fxrazor.ops.conv import DynamicConv2d
from fxrazor.ops.fuse_conv import FuseConv2d, check_temperature
from fxrazor.utils.runtime_info import RuntimeInfo

if TYPE_CHECKING:  # the supernet is built above this package
    from fxrazor.supernet import Supernet

__all__ = ["DCFFChannelUnit", "dcff_temperature", "temperature_from_runtime",
           "calc_information"]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"dcff_temperature: {name} must be a finite number, "
                                   f"got {value!r}")
    return float(value)


def dcff_temperature(progress: float, total: float, t_s: float = 1.0, t_e: float = 10000.0,
                     k: float = 1.0) -> float:
    """DCFF's temperature ``tau = 1 / T`` at training progress ``progress`` of ``total``.

    ``T`` rises along a sigmoid from ``t_s`` at the start to ``t_e`` at the end:
    ``A = 2 (t_e - t_s) (1 + e^(-k total)) / (1 - e^(-k total))`` and
    ``T = A / (1 + e^(-k progress)) + t_s - A / 2`` (the paper's schedule; the authors and
    MMRazor use ``t_s = 1, t_e = 10000, k = 1``). A small ``tau`` makes every filter's
    distribution nearly one-hot, so the fused filters become the kept filters themselves.

    Args:
        progress: epochs (or iterations) done, in ``[0, total]``.
        total: epochs (or iterations) in all, > 0.

    Example:
        >>> dcff_temperature(0, 10), round(dcff_temperature(10, 10), 8)
        (1.0, 0.0001)
    """
    progress, total = _number("progress", progress), _number("total", total)
    t_s, t_e, k = _number("t_s", t_s), _number("t_e", t_e), _number("k", k)
    if total <= 0 or not 0 <= progress <= total:
        raise InvalidArgumentError(
            f"dcff_temperature: progress must lie in [0, total] with total > 0, got "
            f"progress={progress:g}, total={total:g}; pass the epoch (or iteration) done "
            f"and the number of epochs (or iterations)")
    if not 0 < t_s <= t_e or k <= 0:
        raise InvalidArgumentError(
            f"dcff_temperature: need 0 < t_s <= t_e and k > 0, got t_s={t_s:g}, "
            f"t_e={t_e:g}, k={k:g}")
    tail = math.exp(-k * total)
    if tail == 1.0:  # k * total below float resolution: the sigmoid has no range
        raise InvalidArgumentError(f"dcff_temperature: k * total = {k * total:g} is too "
                                   f"small for the schedule; use a larger k or total")
    big_a = 2 * (t_e - t_s) * (1 + tail) / (1 - tail)
    big_t = big_a / (1 + math.exp(-k * progress)) + t_s - big_a / 2
    return 1.0 / big_t


def temperature_from_runtime(by_epoch: bool = True) -> float:
    """The temperature at the progress held by :class:`~fxrazor.utils.runtime_info.RuntimeInfo`:
    ``epoch / max_epochs`` (the paper) or, with ``by_epoch=False``, ``iter / max_iters``
    (MMRazor's DCFF algorithm).

    Example:
        >>> with RuntimeInfo.scope(epoch=0, max_epochs=90):
        ...     temperature_from_runtime()
        1.0
    """
    if by_epoch:
        return dcff_temperature(RuntimeInfo.epoch(), RuntimeInfo.max_epochs())
    return dcff_temperature(RuntimeInfo.iter(), RuntimeInfo.max_iters())


class DCFFChannelUnit(OneShotMutableChannelUnit):
    """A unit whose kept channels are DCFF's fused filters; one width, fixed before training.

    In a DCFF supernet each unit has exactly one choice (``candidate_choices`` holds one
    width, 1.0 by default, meaning no pruning). Which channels are kept follows the
    importance of their filters, which changes as training goes: see :meth:`calc_information`.

    :meth:`prepare_for_pruning` replaces the unit's producing layers that are plain
    ``Conv2d`` (role ``out``, ``groups == 1``, all their output channels in this unit) with
    :class:`~fxrazor.ops.fuse_conv.FuseConv2d`. Other members stay as they are: norms and
    consuming layers slice the kept positions, and producers that are not such convs
    (linear layers, grouped or depthwise convs) keep the chosen channels unfused. A unit
    with no fusing conv keeps its first channels.

    Example:
        >>> unit = DCFFChannelUnit(8, candidate_choices=[0.5])
        >>> unit.current_choice, unit.activated_channels
        (0.5, 4)
    """

    _fusing: list[tuple[FuseConv2d, np.ndarray]]

    def __init__(self, num_channels: int, candidate_choices: list[int | float] | None = None,
                 choice_mode: str = "ratio", divisor: int = 1, min_value: int = 1,
                 min_ratio: float = 0.9) -> None:
        choices = [1.0] if candidate_choices is None else list(candidate_choices)
        if len(choices) != 1:
            raise InvalidChoiceError(
                f"DCFFChannelUnit takes one width, fixed before training; got "
                f"candidate_choices={choices!r}: pass a single one, e.g. [0.5]")
        super().__init__(num_channels, choices, choice_mode, divisor, min_value, min_ratio)
        self.register_buffer("importance", torch.zeros(num_channels), persistent=False)
        self.temperature: float | None = None
        # (fusing conv, positions) per producing conv: plain references, not submodules,
        # since the graph module owns the layers
        self.__dict__["_fusing"] = []

    def prepare_for_pruning(self, model: nn.Module) -> None:
        """Put fusing convs in the supernet ``model`` and rank the channels at the
        temperature of the current progress (the schedule's start, 1.0, when
        ``RuntimeInfo`` holds no epoch). ``fxrazor.convert`` calls it."""
        supernet: Supernet = model  # type: ignore[assignment]
        if not callable(getattr(model, "unit_members", None)):
            raise InvalidArgumentError(
                f"DCFFChannelUnit.prepare_for_pruning needs the supernet built by "
                f"fxrazor.convert, got {type(model).__name__}")
        fusing: list[tuple[FuseConv2d, np.ndarray]] = []
        if self.is_mutable:
            for member in supernet.unit_members(self.name):
                module = member.module
                if member.role != "out" or not isinstance(module, DynamicConv2d):
                    continue
                whole = np.array_equal(np.sort(member.positions, axis=None),
                                       np.arange(module.out_channels))
                if isinstance(module, FuseConv2d):  # put in already (prepared again)
                    fusing.append((module, member.positions))
                elif type(module) is DynamicConv2d and module.groups == 1 and whole:
                    fuse = FuseConv2d.from_static(module)
                    supernet.replace_layer(member.target, fuse)
                    fusing.append((fuse, member.positions))
        self.__dict__["_fusing"] = fusing
        info = RuntimeInfo.info()
        tau = temperature_from_runtime() if {"epoch", "max_epochs"} <= info.keys() else 1.0
        self.calc_information(tau)

    @property
    def fusing_convs(self) -> list[FuseConv2d]:
        """The unit's fusing convs (set by :meth:`prepare_for_pruning`)."""
        return [conv for conv, _ in self._fusing]

    def calc_information(self, tau: float) -> None:
        """Update every fusing conv at temperature ``tau`` and rank the unit's channels: the
        importance of a channel is the sum, over the fusing convs, of the importance of
        the filters at its positions."""
        tau = check_temperature(tau)
        score = torch.zeros(self.num_channels, dtype=torch.float64)
        for conv, positions in self._fusing:
            if conv.weight.is_meta:  # nothing to rank by (a model on the meta device)
                continue
            per_filter = conv.update_fusion(tau).double().cpu()
            score += per_filter[torch.from_numpy(positions)].sum(1)
        self.importance = score.float()
        self.temperature = tau

    @property
    def current_mask(self) -> torch.Tensor:
        k = self.kept_count()
        # stable sort on -importance keeps the lower index among equal scores
        order = torch.sort(-self.importance, stable=True).indices
        mask = torch.zeros(self.num_channels, dtype=torch.bool)
        mask[order[:k]] = True
        return mask


def calc_information(supernet: nn.Module, tau: float | None = None,
                     by_epoch: bool = True) -> float:
    """Update every DCFF unit of ``supernet`` (MMRazor's ``DCFFChannelMutator`` step):
    call it when the training loop moves on (each epoch, as in the paper), after
    ``RuntimeInfo.set_info``. ``tau`` defaults to :func:`temperature_from_runtime`
    (``by_epoch`` picks epochs or iterations). Returns the temperature used.

    Example:
        >>> calc_information(nn.Module(), tau=0.5)
        0.5
    """
    tau = temperature_from_runtime(by_epoch) if tau is None else check_temperature(tau)
    for unit in getattr(supernet, "all_units", ()):
        if isinstance(unit, DCFFChannelUnit):
            unit.calc_information(tau)
    return tau
