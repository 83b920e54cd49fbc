"""The DMCP channel unit: widths learned by differentiable Markov channel pruning.

DMCP (Guo et al., CVPR 2020) splits a unit's channels into a part that is always kept
(``min_channels``) and ``num_groups`` equal groups of ``group_size`` channels, kept in
order: group k can only be kept if group k-1 is, with ``p(keep k | keep k-1) =
sigmoid(alpha_k)``. The marginal keep probability of group k is therefore the product of
the first k transition probabilities, and the expected width is ``min_channels +
group_size * sum_k p(keep k)``: a differentiable function of the architecture parameters
``alpha`` (the unit's ``arch_param``), which a FLOPs loss and, through
:class:`~fxrazor.ops.dmcp_norm.DMCPBatchNorm2d`, the task loss train.

Example:
    >>> import torch
    >>> unit = DMCPChannelUnit(10, pruning_cfg=(0.2, 1.0, 0.2))
    >>> unit.min_channels, unit.num_groups, unit.group_size
    (2, 4, 2)
    >>> with torch.no_grad():
    ...     _ = unit.arch_param.fill_(0.0)  # every transition 0.5
    >>> unit.marginal_probs().tolist()
    [0.5, 0.25, 0.125, 0.0625]
    >>> unit.expected_channels().item()  # 2 + 2 * (0.5 + 0.25 + 0.125 + 0.0625)
    3.875
    >>> unit.sample_subnet("min"); unit.activated_channels
    2
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.channel_unit import SequentialMutableChannelUnit, _check_num_channels
from fxrazor.mutables.mutable_channel import SquentialMutableChannel
from fxrazor.ops.dmcp_norm import DMCPBatchNorm2d
from fxrazor.ops.norm import DynamicBatchNorm2d

if TYPE_CHECKING:
    from fxrazor.supernet import Supernet

__all__ = ["DMCPChannelUnit", "DMCPMutableChannel", "arch_groups", "SAMPLE_MODES"]

logger = logging.getLogger(__name__)

SAMPLE_MODES = ("max", "min", "random", "direct", "expected")
TRANSITIONS = ("sigmoid", "exp")


def arch_groups(num_channels: int, pruning_cfg: Sequence[float]) -> tuple[int, int, int]:
    """``(group_size, num_groups, min_channels)`` of a unit, as DMCP splits its channels.

    ``pruning_cfg`` is ``(min_rate, max_rate, rate_offset)``: ``num_groups`` is the number
    of ``rate_offset`` steps from ``min_rate`` to ``max_rate``, ``group_size`` is
    ``rate_offset`` of the channels (relative to ``max_rate``), and the channels the groups
    leave are always kept. A unit too narrow for a group of one channel has no groups.

    Example:
        >>> arch_groups(64, (0.1, 1.0, 0.05))
        (3, 18, 10)
        >>> arch_groups(8, (0.1, 1.0, 0.05))  # 5% of 8 channels is no whole channel
        (0, 0, 8)
    """
    if (isinstance(pruning_cfg, (str, bytes)) or not isinstance(pruning_cfg, Sequence)
            or len(pruning_cfg) != 3):
        raise InvalidArgumentError(
            f"pruning_cfg must be (min_rate, max_rate, rate_offset), got {pruning_cfg!r}")
    min_rate, max_rate, offset = (float(v) for v in pruning_cfg)
    if not (0.0 <= min_rate < max_rate <= 1.0 and 0.0 < offset <= max_rate - min_rate):
        raise InvalidArgumentError(
            f"pruning_cfg (min_rate, max_rate, rate_offset) needs 0 <= min_rate < max_rate <= 1"
            f" and 0 < rate_offset <= max_rate - min_rate, got {tuple(pruning_cfg)}; "
            f"e.g. (0.1, 1.0, 0.05)")
    group_size = int(offset * num_channels / max_rate)
    num_groups = int((max_rate - min_rate) / offset + 1e-4) if group_size > 0 else 0
    min_channels = num_channels - group_size * num_groups
    if min_channels < 1:
        raise InvalidArgumentError(
            f"pruning_cfg {tuple(pruning_cfg)} leaves no channel always kept in a unit of "
            f"{num_channels} channels ({num_groups} groups of {group_size}); raise min_rate")
    return group_size, num_groups, min_channels


class DMCPMutableChannel(SquentialMutableChannel):
    """The sequential mutable channel of a DMCP unit, with ``activated_tensor_channels``:
    the number of kept channels as a tensor, the expected width (differentiable in the
    unit's ``arch_param``) while the unit is in ``expected`` mode."""

    def __init__(self, num_channels: int, choice_mode: str = "number") -> None:
        super().__init__(num_channels, choice_mode=choice_mode)
        self.__dict__["_unit"] = None  # its unit (not a submodule: the unit owns it)

    @property
    def activated_tensor_channels(self) -> torch.Tensor:
        unit: DMCPChannelUnit | None = self.__dict__["_unit"]
        if unit is not None and unit.sample_mode == "expected":
            return unit.expected_channels()
        return torch.tensor(float(self.activated_channels))


class DMCPChannelUnit(SequentialMutableChannelUnit):
    """A sequential unit whose width follows DMCP's Markov chain of channel groups.

    Args:
        num_channels, choice_mode, divisor, min_value, min_ratio: as for
            :class:`SequentialMutableChannelUnit` (``min_ratio`` 0.5 by default).
        pruning_cfg: ``(min_rate, max_rate, rate_offset)``, how the channels split into
            groups (see :func:`arch_groups`; MMRazor's DMCP mutator's default).
        transition: ``'sigmoid'`` (the paper: ``p = sigmoid(alpha)``) or ``'exp'``
            (MMRazor's: ``p = exp(-max(alpha, 0))``).

    Attributes:
        arch_param: the ``num_groups`` transition logits (``nn.Parameter``, zeros at
            first). In a supernet it is ``all_units.<i>.arch_param``; give it to its own
            optimizer (:meth:`arch_params`), not to the weights'.
        arch_train: while True the unit's DMCP BatchNorms scale their output by the keep
            probabilities (set by :meth:`sample_subnet`).
        sample_mode: the mode of the last :meth:`sample_subnet` (None after a choice is
            set directly).
    """

    mutable_channel: DMCPMutableChannel

    def __init__(self, num_channels: int, choice_mode: str = "number", divisor: int = 1,
                 min_value: int = 1, min_ratio: float = 0.5, *,
                 pruning_cfg: Sequence[float] = (0.1, 1.0, 0.05),
                 transition: str = "sigmoid") -> None:
        _check_num_channels(num_channels)
        if transition not in TRANSITIONS:
            raise InvalidChoiceError(
                f"transition must be one of {TRANSITIONS}, got {transition!r}")
        groups = arch_groups(num_channels, pruning_cfg)
        super().__init__(num_channels, choice_mode, divisor, min_value, min_ratio,
                         mutable_channel=DMCPMutableChannel(num_channels, choice_mode))
        self.mutable_channel.__dict__["_unit"] = self
        self.pruning_cfg = tuple(float(v) for v in pruning_cfg)
        self.transition = transition
        self.group_size, self.num_groups, self.min_channels = groups
        self.arch_param = nn.Parameter(torch.zeros(self.num_groups))
        self.arch_train = False
        self.sample_mode: str | None = None

    def init_args(self) -> dict[str, Any]:
        return {**super().init_args(), "pruning_cfg": list(self.pruning_cfg),
                "transition": self.transition}

    # ---- the Markov chain ------------------------------------------------------------------
    def arch_params(self) -> list[nn.Parameter]:
        """The unit's architecture parameters (empty when it has no groups)."""
        return [self.arch_param] if self.num_groups else []

    def transition_probs(self) -> torch.Tensor:
        """``p(keep group k | keep group k-1)`` for every group (differentiable)."""
        if self.transition == "sigmoid":
            return torch.sigmoid(self.arch_param)
        return torch.exp(-self.arch_param.clamp(min=0))

    def marginal_probs(self) -> torch.Tensor:
        """``p(keep group k)``: the product of the first k transition probabilities."""
        return torch.cumprod(self.transition_probs(), dim=0)

    def channel_keep_probs(self) -> torch.Tensor:
        """Per unit channel, the probability that it is kept (1 for the always-kept part)."""
        ones = torch.ones(self.min_channels, dtype=self.arch_param.dtype,
                          device=self.arch_param.device)
        return torch.cat([ones, self.marginal_probs().repeat_interleave(self.group_size)])

    def expected_channels(self) -> torch.Tensor:
        """``min_channels + group_size * sum_k p(keep group k)`` (a differentiable scalar)."""
        return self.min_channels + self.group_size * self.marginal_probs().sum()

    # ---- choices -----------------------------------------------------------------------------
    def _choice_set(self) -> None:
        self.sample_mode = None  # a width set by hand is no sample of the chain

    def _as_choice(self, count: int) -> int | float:
        return count if self.is_num_mode else count / self.num_channels

    @property
    def min_choice(self) -> int | float:
        return self._as_choice(self.min_channels)

    def sample_choice(self) -> int | float:
        """A width on DMCP's grid, every group count equally likely (not applied)."""
        return self._as_choice(self.min_channels
                               + self.group_size * random.randint(0, self.num_groups))

    def sample_direct(self) -> int:
        """A width drawn from the Markov chain: group k is kept with probability
        ``p(keep k | keep k-1)`` once group k-1 is (Python's ``random``)."""
        count = self.min_channels
        with torch.no_grad():
            probs = self.transition_probs().tolist()
        for p in probs:
            if random.random() >= p:
                break
            count += self.group_size
        return count

    def sample_subnet(self, mode: str, arch_train: bool | None = None) -> None:
        """Set the width by one of DMCP's modes and whether the BatchNorms scale.

        ``max``/``min``: all groups / none; ``random``: a uniform number of groups;
        ``direct``: a draw from the chain (:meth:`sample_direct`); ``expected``: full width,
        with the output scaled by the keep probabilities and ``activated_tensor_channels``
        the expected width. ``arch_train`` (default: ``mode == 'expected'``) says whether
        the BatchNorms scale (MMRazor's DMCP keeps it on for every mode once it trains
        the architecture).
        """
        if mode not in SAMPLE_MODES:
            raise InvalidChoiceError(
                f"unit {self.name!r}: sample mode must be one of {SAMPLE_MODES}, got {mode!r}")
        if arch_train is not None and not isinstance(arch_train, bool):
            raise InvalidArgumentError(f"arch_train must be a bool or None, got {arch_train!r}")
        counts = {"max": self.num_channels, "min": self.min_channels}
        if mode in counts:
            count = counts[mode]
        elif mode == "random":
            count = self.min_channels + self.group_size * random.randint(0, self.num_groups)
        elif mode == "direct":
            count = self.sample_direct()
        else:
            count = self.num_channels
        self.current_choice = self._as_choice(count)
        self.sample_mode = mode
        self.arch_train = mode == "expected" if arch_train is None else arch_train

    # ---- the supernet ------------------------------------------------------------------------
    def prepare_for_pruning(self, model: nn.Module) -> None:
        """Put a :class:`DMCPBatchNorm2d` in place of every BatchNorm2d whose channels the
        unit covers (``fxrazor.convert`` calls this with the supernet), and attach the unit
        to it. A unit without groups has nothing to scale and leaves its layers alone."""
        members = getattr(model, "unit_members", None)
        if members is None:
            raise InvalidArgumentError(
                f"DMCPChannelUnit.prepare_for_pruning needs a Supernet from fxrazor.convert, "
                f"got {type(model).__name__}")
        if not self.num_groups:
            return
        supernet: Supernet = model  # type: ignore[assignment]
        for member in supernet.unit_members(self.name):
            layer = member.module
            if member.role != "channels" or not isinstance(layer, DynamicBatchNorm2d):
                continue
            if not isinstance(layer, DMCPBatchNorm2d):
                layer = DMCPBatchNorm2d.from_static(layer)
                supernet.replace_layer(member.target, layer)
            layer.add_arch_source(self, member.positions)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, min_channels={self.min_channels}, "
                f"groups={self.num_groups}x{self.group_size}")
