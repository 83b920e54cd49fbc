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
import itertools
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from numbers import Real
from typing import Any

import torch

from fxrazor.errors import ChoiceTypeError, DerivedMutableError, InvalidChoiceError
from fxrazor.mutables.base import BaseMutable, DumpChosen
from fxrazor.utils import make_divisible

__all__ = ["DerivedMutable", "DerivedMethodMixin", "concat_mutable_channels"]


def _has_mask(mutable: Any) -> bool:
    """Whether ``mutable`` carries a channel mask (a channel or a masked derived mutable)."""
    if isinstance(mutable, DerivedMutable):
        return mutable.mask_fn is not None
    return isinstance(mutable, BaseMutable) and hasattr(type(mutable), "current_mask")


def _ratio(value: Any, what: str) -> int | float:
    """A positive number; a mutable gives its current choice, read once (as MMRazor)."""
    if isinstance(value, BaseMutable):
        value = value.current_choice
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ChoiceTypeError(f"{what} must be a positive number, got {value!r}")
    number: Any = value  # Any: numbers.Real does not promise comparisons to type checkers
    if number <= 0:
        raise InvalidChoiceError(f"{what} must be positive, got {value!r}")
    return number


def _kept(mutable: Any) -> int:
    return int(mutable.current_mask.sum())


def _first(size: int, kept: int) -> torch.Tensor:
    """A bool mask of ``size`` whose first ``kept`` entries are True."""
    return torch.arange(size) < kept


class DerivedMethodMixin:
    """Operators that derive new mutables from a mutable value or mutable channel, with
    MMRazor's semantics (``DerivedMethodMixin`` and the operators of its mutables).

    - expand by ``r`` (``m * r``, ``r * m``, :meth:`derive_expand_mutable`): a value's
      choice becomes ``int(choice * r)``; a channel of ``n`` channels keeping ``c``
      becomes ``int(n * r)`` channels keeping the first ``int(c * r)``. For an int ``r``
      every channel is repeated ``r`` times in a row, which is the same for sequential
      masks and keeps the pattern of any other mask.
    - ``channel * value`` (either order; the value's choices are ratios): expand by the
      value's *current* choice, to ``int(n * max(value.choices))`` channels.
    - divide by ``r`` (``m // r``, ``m // (r, divisor)``, :meth:`derive_divide_mutable`,
      divisor 8 by default): a value's choice becomes
      ``make_divisible(choice // r, divisor)``; a channel becomes
      ``make_divisible(n // r, divisor)`` channels keeping the first
      ``make_divisible(c // r, divisor)`` (e.g. the squeeze width of an SE block).
    - :meth:`derive_concat_mutable`: channels concatenated (``torch.cat``).

    Example:
        >>> from fxrazor.mutables.mutable_value import MutableValue
        >>> mv = MutableValue([16, 32, 64], default_value=32)
        >>> (mv * 3).current_choice, (mv // 2).current_choice, (mv // (4, 1)).current_choice
        (96, 16, 8)
    """

    def derive_same_mutable(self) -> DerivedMutable:
        """Return a derived mutable with the same choice (and mask): expand by 1."""
        return self.derive_expand_mutable(1)

    def derive_expand_mutable(self, expand_ratio: int | float | BaseMutable) -> DerivedMutable:
        """Return a derived mutable expanded ``expand_ratio`` times (see the class doc); a
        mutable ratio is read once, now (MMRazor; ``m * value`` follows it instead)."""
        source: Any = self
        ratio = _ratio(expand_ratio, "expand ratio")
        if not _has_mask(source):
            return DerivedMutable(choice_fn=lambda: int(source.current_choice * ratio))
        if isinstance(ratio, int) or float(ratio).is_integer():
            times = int(ratio)

            def mask_fn() -> torch.Tensor:
                return source.current_mask.repeat_interleave(times)
        else:

            def mask_fn() -> torch.Tensor:
                mask = source.current_mask
                return _first(int(mask.numel() * ratio), int(_kept(source) * ratio))

        return DerivedMutable(choice_fn=lambda: int(mask_fn().sum()), mask_fn=mask_fn)

    def derive_divide_mutable(self, ratio: int | float | BaseMutable,
                              divisor: int = 8) -> DerivedMutable:
        """Return a derived mutable divided by ``int(ratio)`` and made divisible by
        ``divisor`` (see the class doc)."""
        source: Any = self
        k = int(_ratio(ratio, "divide ratio"))
        if k < 1:
            raise InvalidChoiceError(f"divide ratio must be at least 1, got {ratio!r}")
        make_divisible(k, divisor)  # a clear error for a bad divisor, now
        if not _has_mask(source):
            return DerivedMutable(
                choice_fn=lambda: make_divisible(source.current_choice // k, divisor))

        def mask_fn() -> torch.Tensor:
            size = make_divisible(source.current_mask.numel() // k, divisor)
            return _first(size, make_divisible(_kept(source) // k, divisor))

        return DerivedMutable(choice_fn=lambda: int(mask_fn().sum()), mask_fn=mask_fn)

    @staticmethod
    def derive_concat_mutable(mutables: Iterable[BaseMutable]) -> DerivedMutable:
        """Derive the mutable of channels concatenated (see :func:`concat_mutable_channels`)."""
        return concat_mutable_channels(list(mutables))

    def __mul__(self, other: Any) -> DerivedMutable:
        if isinstance(other, BaseMutable):
            return _multiply_mutables(self, other)
        if isinstance(other, bool) or not isinstance(other, Real):
            raise ChoiceTypeError(f"cannot multiply a mutable by {other!r}; use a number")
        ratio: Any = other  # Any: numbers.Real is not int | float to type checkers
        return self.derive_expand_mutable(ratio)

    def __rmul__(self, other: Any) -> DerivedMutable:
        return self.__mul__(other)

    def __floordiv__(self, other: Any) -> DerivedMutable:
        if isinstance(other, tuple):
            if len(other) != 2:
                raise ChoiceTypeError(f"`m // (ratio, divisor)` needs a pair, got {other!r}")
            return self.derive_divide_mutable(*other)
        if isinstance(other, BaseMutable) and not _has_mask(self):
            raise ChoiceTypeError("a mutable value can only be divided by a number; a "
                                  "mutable channel may be divided by a mutable value")
        return self.derive_divide_mutable(other)


def _multiply_mutables(a: Any, b: Any) -> DerivedMutable:
    """``channel * value`` (MMRazor's SquentialMutableChannel * OneShotMutableValue)."""
    channel, value = (a, b) if _has_mask(a) else (b, a)
    if not _has_mask(channel) or _has_mask(value) or not hasattr(value, "choices"):
        raise ChoiceTypeError(
            f"only a mutable channel and a mutable value can be multiplied, got "
            f"{type(a).__name__} * {type(b).__name__}")
    for ratio in value.choices:
        _ratio(ratio, "a choice of the mutable value (an expand ratio)")
    most = max(value.choices)

    def mask_fn() -> torch.Tensor:
        size = int(channel.current_mask.numel() * most)
        return _first(size, int(_kept(channel) * value.current_choice))

    return DerivedMutable(choice_fn=lambda: int(mask_fn().sum()), mask_fn=mask_fn)


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

    def __init__(self, choice_fn: Callable[[], Any],
                 mask_fn: Callable[[], torch.Tensor] | None = None,
                 source_mutables: Iterable[BaseMutable] | None = None,
                 alias: str | None = None, init_cfg: dict | None = None) -> None:
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
    def choices(self) -> list[Any]:
        """The choice for every combination of the sources' ``choices`` (as MMRazor); the
        sources are set to each in turn and back to their choices afterwards."""
        sources: list[Any] = list(self.source_mutables)  # Any: each has its `choices`
        saved = [m.current_choice for m in sources]
        derived = []
        try:
            for combination in itertools.product(*(m.choices for m in sources)):
                for mutable, choice in zip(sources, combination, strict=True):
                    mutable.current_choice = choice
                derived.append(self.choice_fn())
        finally:
            for mutable, choice in zip(sources, saved, strict=True):
                mutable.current_choice = choice
        return derived

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
        warnings.warn("fix_chosen has no effect on a DerivedMutable; fix its source "
                      f"mutables {self._sources_repr()} instead", UserWarning, stacklevel=2)

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice; ``meta`` is None as there is no search space."""
        return DumpChosen(chosen=self.current_choice, meta=None)

    def _sources_repr(self) -> str:
        return "{" + ", ".join(repr(m) for m in self.source_mutables) + "}"

    def __repr__(self) -> str:
        channels = (f"activated_channels={self.activated_channels}, "
                    if self.mask_fn is not None else "")
        return (f"DerivedMutable(current_choice={self.current_choice}, {channels}"
                f"source_mutables={self._sources_repr()}, is_fixed={self.is_fixed})")


def _explicit_sources(mutables: Iterable[BaseMutable]) -> set[BaseMutable]:
    sources: set[BaseMutable] = set()
    for m in mutables:
        if isinstance(m, DerivedMutable):
            sources |= m.source_mutables
        elif isinstance(m, BaseMutable):
            sources.add(m)
        else:
            raise ChoiceTypeError(f"source_mutables must hold mutables, got "
                                  f"{type(m).__name__}: {m!r}")
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
        >>> from fxrazor.mutables.mutable_channel import SquentialMutableChannel as C
        >>> cat = concat_mutable_channels([C(2), C(3)])
        >>> cat.current_choice, cat.current_mask.tolist()
        (5, [True, True, True, True, True])
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
