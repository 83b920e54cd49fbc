"""Derived mutables: mutables whose choice and mask are computed from other mutables.

A derived mutable has no search space of its own. Its ``current_choice`` (and, for
channels, its ``current_mask``) is recomputed from its *source mutables* every time it is
read, so changing a source changes every mutable derived from it.

Example:
    >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
    >>> mc = SquentialMutableChannel(num_channels=3)
    >>> derived = mc * 2
    >>> mc.current_choice = 2
    >>> derived.current_choice
    4
    >>> derived.current_mask.tolist()
    [True, True, True, True, False, False]
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any

import torch

from fxrazor.errors import ChoiceTypeError, DerivedMutableError, InvalidChoiceError
from fxrazor.mutables.base import BaseMutable, DumpChosen

__all__ = ["DerivedMutable", "DerivedMethodMixin", "concat_mutable_channels"]


def _has_mask(mutable: Any) -> bool:
    """Whether ``mutable`` carries a channel mask (a channel or a masked derived mutable)."""
    if isinstance(mutable, DerivedMutable):
        return mutable.mask_fn is not None
    return isinstance(mutable, BaseMutable) and hasattr(type(mutable), "current_mask")


def _check_positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ChoiceTypeError(f"{what} must be a positive integer, got {value!r}")
    number: Any = value  # Any: numbers.Real does not promise int() to type checkers
    if number < 1 or int(number) != number:
        raise InvalidChoiceError(f"{what} must be a positive integer, got {value!r}")
    return int(number)


class DerivedMethodMixin:
    """Operators that derive new mutables from a mutable value or mutable channel.

    For a mutable with a channel mask (a mutable channel, or a derived mutable built with
    a ``mask_fn``) the derived mask is computed from the source mask, and the derived
    ``current_choice`` is the number of channels the derived mask keeps:

    - expand by ``k`` (``m * k``, ``k * m``, :meth:`derive_expand_mutable`): every channel
      is repeated ``k`` times in a row, so ``[1, 0]`` becomes ``[1, 1, 0, 0]``;
    - divide by ``k`` (``m // k``, :meth:`derive_divide_mutable`): the channels are cut into
      consecutive groups of ``k`` and group ``i`` is kept iff *all* of its channels are
      kept; ``num_channels`` must be a multiple of ``k``. A sequential mask that keeps
      ``c`` channels therefore keeps ``c // k`` groups.

    For a mutable without a mask (a mutable value) the choice is multiplied by ``k`` or
    floor-divided by ``k``.

    Example:
        >>> from fxrazor.mutables.mutable_value import MutableValue
        >>> mv = MutableValue([2, 4, 8], default_value=4)
        >>> (mv * 3).current_choice, (mv // 2).current_choice
        (12, 2)
    """

    def derive_same_mutable(self) -> DerivedMutable:
        """Return a derived mutable with the same choice (and mask) as this one."""
        source: Any = self
        mask_fn = (lambda: source.current_mask) if _has_mask(source) else None
        return DerivedMutable(choice_fn=lambda: source.current_choice, mask_fn=mask_fn)

    def derive_expand_mutable(self, expand_ratio: int | float) -> DerivedMutable:
        """Return a derived mutable expanded ``expand_ratio`` times (see the class doc)."""
        source: Any = self
        if not _has_mask(source):
            if isinstance(expand_ratio, bool) or not isinstance(expand_ratio, Real):
                raise ChoiceTypeError(f"expand ratio must be a number, got {expand_ratio!r}")
            return DerivedMutable(choice_fn=lambda: source.current_choice * expand_ratio)
        ratio = _check_positive_int(expand_ratio, "expand ratio of a mutable channel")

        def mask_fn() -> torch.Tensor:
            return source.current_mask.unsqueeze(-1).expand(-1, ratio).flatten()

        return DerivedMutable(choice_fn=lambda: int(mask_fn().sum()), mask_fn=mask_fn)

    def derive_divide_mutable(self, ratio: int | float) -> DerivedMutable:
        """Return a derived mutable divided by ``ratio`` (see the class doc)."""
        source: Any = self
        if not _has_mask(source):
            if isinstance(ratio, bool) or not isinstance(ratio, Real):
                raise ChoiceTypeError(f"divide ratio must be a number, got {ratio!r}")
            return DerivedMutable(choice_fn=lambda: source.current_choice // ratio)
        k = _check_positive_int(ratio, "divide ratio of a mutable channel")
        num_channels = source.current_mask.numel()
        if num_channels % k:
            raise InvalidChoiceError(
                f"cannot divide {num_channels} channels into groups of {k}; "
                f"use a ratio that divides {num_channels}"
            )

        def mask_fn() -> torch.Tensor:
            return source.current_mask.reshape(-1, k).all(dim=1)

        return DerivedMutable(choice_fn=lambda: int(mask_fn().sum()), mask_fn=mask_fn)

    def __mul__(self, other: Any) -> DerivedMutable:
        if isinstance(other, bool) or not isinstance(other, (int, float, Real)):
            return NotImplemented
        ratio: Any = other
        return self.derive_expand_mutable(ratio)

    def __rmul__(self, other: Any) -> DerivedMutable:
        return self.__mul__(other)

    def __floordiv__(self, other: Any) -> DerivedMutable:
        if isinstance(other, bool) or not isinstance(other, (int, float, Real)):
            return NotImplemented
        ratio: Any = other
        return self.derive_divide_mutable(ratio)


class DerivedMutable(BaseMutable, DerivedMethodMixin):
    """A mutable computed from source mutables; it cannot be set directly.

    Args:
        choice_fn: a zero-argument callable returning the current choice.
        mask_fn: an optional zero-argument callable returning the current bool channel
            mask; without it ``current_mask`` raises.
        source_mutables: the mutables this one depends on. When omitted they are found by
            walking the closure variables of ``choice_fn`` and ``mask_fn`` (also inside
            ``functools.partial`` objects, bound methods and lists/tuples/dicts); a
            derived mutable found there contributes its own sources. Derived mutables
            passed explicitly are replaced by their sources, too.
        alias: an optional name shared by mutables that are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    ``is_fixed`` is True iff every source is fixed (also when there are no sources).
    Closures are not copied by :func:`copy.deepcopy`, so a deep copy still reads the
    original sources; build derived mutables after copying models.

    Example:
        >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
        >>> mc = SquentialMutableChannel(num_channels=3)
        >>> derived = mc * 2
        >>> mc.current_choice = 2
        >>> derived
        DerivedMutable(current_choice=4, activated_channels=4, source_mutables={SquentialMutableChannel(name=unbind, num_channels=3, current_choice=2)}, is_fixed=False)
    """  # noqa: E501

    def __init__(
        self,
        choice_fn: Callable[[], Any],
        mask_fn: Callable[[], torch.Tensor] | None = None,
        source_mutables: Iterable[BaseMutable] | None = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        if not callable(choice_fn):
            raise ChoiceTypeError(f"choice_fn must be callable, got {choice_fn!r}")
        if mask_fn is not None and not callable(mask_fn):
            raise ChoiceTypeError(f"mask_fn must be callable or None, got {mask_fn!r}")
        self.choice_fn = choice_fn
        self.mask_fn = mask_fn
        if source_mutables is None:
            found: set[BaseMutable] = set()
            seen: set[int] = set()
            for fn in (choice_fn, mask_fn):
                _collect_sources(fn, found, seen)
            self.source_mutables = found
        else:
            self.source_mutables = _explicit_sources(source_mutables)

    @staticmethod
    def is_source_mutable(mutable: object) -> bool:
        """Whether ``mutable`` is a mutable with a search space of its own (not derived).

        Example:
            >>> from fxrazor.mutables.mutable_value import MutableValue
            >>> mv = MutableValue([1, 2])
            >>> DerivedMutable.is_source_mutable(mv), DerivedMutable.is_source_mutable(mv * 2)
            (True, False)
        """
        return isinstance(mutable, BaseMutable) and not isinstance(mutable, DerivedMutable)

    @property
    def current_choice(self) -> Any:
        """The choice computed from the source mutables now."""
        return self.choice_fn()

    @current_choice.setter
    def current_choice(self, choice: Any) -> None:
        raise DerivedMutableError(
            "the current_choice of a DerivedMutable is computed from its source mutables "
            f"{self._sources_repr()}; set the choice of those sources instead"
        )

    @property
    def current_mask(self) -> torch.Tensor:
        """The channel mask computed from the source mutables now."""
        if self.mask_fn is None:
            raise DerivedMutableError(
                "this DerivedMutable was built without a mask_fn, so it has no current_mask; "
                "derive it from a mutable channel to get one"
            )
        return self.mask_fn()

    @current_mask.setter
    def current_mask(self, mask: torch.Tensor) -> None:
        raise DerivedMutableError(
            "the current_mask of a DerivedMutable is computed from its source mutables "
            f"{self._sources_repr()}; change the choice of those sources instead"
        )

    @property
    def activated_channels(self) -> int:
        """Number of True entries of ``current_mask``."""
        return int(self.current_mask.sum())

    @property
    def num_channels(self) -> int:
        """Length of ``current_mask``."""
        return self.current_mask.numel()

    @property
    def num_choices(self) -> int:
        """Always 1: a derived mutable has no search space of its own."""
        return 1

    @property
    def is_fixed(self) -> bool:
        """True iff all source mutables are fixed."""
        return all(m.is_fixed for m in self.source_mutables)

    @is_fixed.setter
    def is_fixed(self, is_fixed: bool) -> None:
        raise DerivedMutableError(
            "a DerivedMutable is fixed exactly when its source mutables are; "
            f"fix {self._sources_repr()} instead"
        )

    def fix_chosen(self, chosen: Any = None) -> None:
        """Do nothing but warn: fix the source mutables instead."""
        warnings.warn(
            "fix_chosen has no effect on a DerivedMutable; fix its source mutables "
            f"{self._sources_repr()} instead",
            UserWarning,
            stacklevel=2,
        )

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice; ``meta`` is None as there is no search space."""
        return DumpChosen(chosen=self.current_choice, meta=None)

    def _sources_repr(self) -> str:
        return "{" + ", ".join(repr(m) for m in self.source_mutables) + "}"

    def __repr__(self) -> str:
        parts = [f"current_choice={self.current_choice}"]
        if self.mask_fn is not None:
            parts.append(f"activated_channels={self.activated_channels}")
        parts.append(f"source_mutables={self._sources_repr()}")
        parts.append(f"is_fixed={self.is_fixed}")
        return f"DerivedMutable({', '.join(parts)})"


def _explicit_sources(mutables: Iterable[BaseMutable]) -> set[BaseMutable]:
    sources: set[BaseMutable] = set()
    for m in mutables:
        if isinstance(m, DerivedMutable):
            sources |= m.source_mutables
        elif isinstance(m, BaseMutable):
            sources.add(m)
        else:
            raise ChoiceTypeError(
                f"source_mutables must hold mutables, got {type(m).__name__}: {m!r}"
            )
    return sources


def _collect_sources(obj: Any, found: set[BaseMutable], seen: set[int]) -> None:
    """Add the source mutables reachable from ``obj`` to ``found``."""
    if DerivedMutable.is_source_mutable(obj):
        found.add(obj)
        return
    if isinstance(obj, DerivedMutable):
        found |= obj.source_mutables
        return
    # ``seen`` guards against cycles, e.g. a recursive closure or a self-containing list.
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, functools.partial):
        children: list[Any] = [obj.func, *obj.args, *obj.keywords.values()]
    elif isinstance(obj, types.MethodType):
        children = [obj.__self__, obj.__func__]
    elif isinstance(obj, types.FunctionType):
        children = []
        for cell in obj.__closure__ or ():
            try:
                children.append(cell.cell_contents)
            except ValueError:  # a cell whose variable is not yet assigned
                continue
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    else:
        return
    for child in children:
        _collect_sources(child, found, seen)


def concat_mutable_channels(mutables: Sequence[BaseMutable]) -> DerivedMutable:
    """Derive the mutable of channels concatenated from ``mutables`` (e.g. ``torch.cat``).

    The mask is the concatenation of the masks; the choice is the number of kept channels,
    which equals the sum of the sources' choices for sequential channels in number mode.

    Example:
        >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel
        >>> a, b = SquentialMutableChannel(2), SquentialMutableChannel(3)
        >>> b.current_choice = 1
        >>> cat = concat_mutable_channels([a, b])
        >>> cat.current_choice, cat.current_mask.tolist()
        (3, [True, True, True, False, False])
    """
    sources: list[Any] = list(mutables)
    if not sources:
        raise InvalidChoiceError("concat_mutable_channels needs at least one mutable channel")
    for m in sources:
        if not _has_mask(m):
            raise ChoiceTypeError(
                f"concat_mutable_channels needs mutables with a channel mask, got {m!r}"
            )

    def mask_fn() -> torch.Tensor:
        return torch.cat([m.current_mask for m in sources])

    return DerivedMutable(choice_fn=lambda: int(mask_fn().sum()), mask_fn=mask_fn)
