"""A mutable channel assembled from the masks of other mutable channels.

A dynamic op's input (or output) channels can be shared by several units, e.g. after a
``torch.cat``. The op then holds one :class:`MutableChannelContainer` per side, and every
unit registers its mutable channel on the slice ``[start, end)`` it owns.

Example:
    >>> from fxrazor.mutables.channel_container import MutableChannelContainer
    >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
    >>> container = MutableChannelContainer(num_channels=5)
    >>> mc = SquentialMutableChannel(num_channels=2)
    >>> mc.current_choice = 1
    >>> container.register_mutable(mc, start=1, end=3)
    >>> container.current_mask.tolist()
    [True, True, False, True, True]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fxrazor.errors import (
    ChoiceTypeError,
    DerivedMutableError,
    IndexOverlapError,
    UnsupportedModelError,
)
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_channel import BaseMutableChannel

__all__ = ["MutableChannelContainer"]

ChannelSource = BaseMutableChannel | DerivedMutable


class MutableChannelContainer(BaseMutableChannel):
    """A mutable channel whose mask is made of the masks of registered mutable channels.

    Channels in no registered range are always kept. The registered mutables are not
    submodules of the container, so they are neither copied into its state dict nor
    moved with it.

    Args:
        num_channels: the full number of channels of the container.
        **kwargs: ``alias`` and ``init_cfg``.

    Example:
        >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
        >>> container = MutableChannelContainer(4)
        >>> a, b = SquentialMutableChannel(2), SquentialMutableChannel(2)
        >>> a.current_choice, b.current_choice = 1, 1
        >>> container.register_mutable(b, 2, 4)
        >>> container.register_mutable(a, 0, 2)
        >>> list(container.mutable_channels)
        [(0, 2), (2, 4)]
        >>> container.current_mask.tolist(), container.activated_channels
        ([True, False, True, False], 2)
    """

    def __init__(self, num_channels: int, **kwargs: Any) -> None:
        super().__init__(num_channels, **kwargs)
        self._mutables: dict[tuple[int, int], ChannelSource] = {}

    @property
    def mutable_channels(self) -> dict[tuple[int, int], ChannelSource]:
        """A copy of the registered ``(start, end) -> mutable`` pairs, sorted by start."""
        return dict(self._mutables)

    def register_mutable(self, mutable_channel: ChannelSource, start: int, end: int) -> None:
        """Register ``mutable_channel`` as the mask of channels ``[start, end)``.

        Raises:
            ChoiceTypeError: ``mutable_channel`` has no channel mask.
            IndexOverlapError: the range is empty, outside ``[0, num_channels)``, of a
                length other than ``mutable_channel.num_channels``, or overlaps a range
                registered before.
        """
        _check_channel_source(mutable_channel)
        for name, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ChoiceTypeError(f"{name} must be an int, got {value!r}")
        if not 0 <= start < end <= self.num_channels:
            raise IndexOverlapError(
                f"range [{start}, {end}) does not lie in [0, {self.num_channels}) of {self!r}"
            )
        if end - start != mutable_channel.num_channels:
            raise IndexOverlapError(
                f"range [{start}, {end}) holds {end - start} channels but {mutable_channel!r} "
                f"has {mutable_channel.num_channels}; pass end=start+num_channels"
            )
        for s, e in self._mutables:
            if start < e and s < end:
                raise IndexOverlapError(
                    f"range [{start}, {end}) overlaps the registered range [{s}, {e}) of {self!r}"
                )
        self._mutables[(start, end)] = mutable_channel
        self._mutables = dict(sorted(self._mutables.items()))

    @property
    def current_mask(self) -> torch.Tensor:
        """Registered masks at their ranges; channels of no range are True."""
        masks = []
        for (start, end), mutable in self._mutables.items():
            mask = mutable.current_mask
            if mask.shape != (end - start,):
                raise IndexOverlapError(
                    f"{mutable!r} registered on [{start}, {end}) now has a mask of shape "
                    f"{tuple(mask.shape)}; its length must stay {end - start}"
                )
            masks.append((start, end, mask.bool()))
        device = masks[0][2].device if masks else None
        parts: list[torch.Tensor] = []
        cursor = 0
        for start, end, mask in masks:
            parts.append(torch.ones(start - cursor, dtype=torch.bool, device=device))
            parts.append(mask.to(device))
            cursor = end
        parts.append(torch.ones(self.num_channels - cursor, dtype=torch.bool, device=device))
        return torch.cat(parts)

    @property
    def current_choice(self) -> torch.Tensor:
        """The current mask; a container is set through its registered mutables."""
        return self.current_mask

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        raise DerivedMutableError(
            f"the choice of {self!r} is made of its registered mutables; set the choice of "
            f"those (see `mutable_channels`) instead"
        )

    def fix_chosen(self, chosen: Any = None) -> None:
        """Mark the container fixed; ``chosen`` must be None (it has no choice of its own)."""
        if chosen is not None:
            raise DerivedMutableError(
                f"{self!r} has no choice of its own; call fix_chosen() without a choice and "
                f"fix its registered mutables instead"
            )
        self.is_fixed = True

    def _repr_choice(self) -> str:
        ranges = ", ".join(f"[{s}, {e})" for s, e in self._mutables)
        return f"activated_channels={self.activated_channels}, registered=[{ranges}]"

    @classmethod
    def register_mutable_channel_to_module(
        cls,
        module: nn.Module,
        mutable: ChannelSource,
        is_to_output_channel: bool = True,
        start: int = 0,
        end: int = -1,
    ) -> None:
        """Register ``mutable`` on the input or output channel container of ``module``.

        The module protocol: ``module.mutable_attrs`` is a mapping (e.g. an
        ``nn.ModuleDict``) whose ``'out_channels'`` / ``'in_channels'`` entry is a
        :class:`MutableChannelContainer`; a module may instead provide a method
        ``get_mutable_attr(key)`` returning it. ``end=-1`` means
        ``start + mutable.num_channels``.

        Example:
            >>> from torch import nn
            >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
            >>> op = nn.Linear(2, 3)
            >>> op.mutable_attrs = nn.ModuleDict({'out_channels': MutableChannelContainer(3)})
            >>> mc = SquentialMutableChannel(3)
            >>> mc.current_choice = 1
            >>> MutableChannelContainer.register_mutable_channel_to_module(op, mc)
            >>> op.mutable_attrs['out_channels'].current_mask.tolist()
            [True, False, False]
        """
        key = "out_channels" if is_to_output_channel else "in_channels"
        container = _find_container(module, key)
        _check_channel_source(mutable)
        if end == -1:
            end = start + mutable.num_channels
        container.register_mutable(mutable, start, end)


def _check_channel_source(mutable: Any) -> None:
    if isinstance(mutable, BaseMutableChannel):
        return
    if isinstance(mutable, DerivedMutable) and mutable.mask_fn is not None:
        return
    raise ChoiceTypeError(
        "only mutable channels or derived mutables with a mask can be registered in a "
        f"MutableChannelContainer, got {type(mutable).__name__}: {mutable!r}"
    )


def _find_container(module: nn.Module, key: str) -> MutableChannelContainer:
    getter = getattr(module, "get_mutable_attr", None)
    if callable(getter):
        container = getter(key)
    else:
        attrs = getattr(module, "mutable_attrs", None)
        container = (
            attrs[key] if isinstance(attrs, (Mapping, nn.ModuleDict)) and (key in attrs) else None
        )
    if not isinstance(container, MutableChannelContainer):
        raise UnsupportedModelError(
            f"{type(module).__name__} has no MutableChannelContainer for '{key}'; give it "
            f"`mutable_attrs = nn.ModuleDict({{'{key}': MutableChannelContainer(n)}})` "
            f"before registering mutable channels on it"
        )
    return container
