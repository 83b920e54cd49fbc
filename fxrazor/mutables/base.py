"""The root of every mutable: a module whose behaviour depends on a choice.

Example:
    >>> from fxrazor.mutables.base import DumpChosen
    >>> DumpChosen(chosen=3, meta={"all_choices": [1, 2, 3]}).chosen
    3
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

from torch import nn

__all__ = ["BaseMutable", "DumpChosen", "LightModule"]

# Values that can never be a parameter, buffer or submodule.
_PLAIN_VALUES = frozenset({int, float, bool, str, type(None), list, dict, tuple})


class LightModule(nn.Module):
    """An ``nn.Module`` whose plain attribute writes (numbers, strings, lists, ...) skip
    ``nn.Module.__setattr__``'s parameter/buffer/submodule checks.

    Converting a model builds several mutables per channel unit, and those checks were
    about half of their construction time. A name that is already a parameter, buffer or
    submodule still goes through ``nn.Module``, so behaviour is unchanged.

    Example:
        >>> m = LightModule()
        >>> m.width = 8
        >>> m.width, "width" in m.__dict__
        (8, True)
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if type(value) in _PLAIN_VALUES:
            modules = self.__dict__.get("_modules")  # set last by nn.Module.__init__
            if (modules is not None and name not in modules
                    and name not in self._parameters and name not in self._buffers):
                object.__setattr__(self, name, value)  # still runs property setters
                return
        super().__setattr__(name, value)


class DumpChosen(NamedTuple):
    """What a mutable saves of itself: the ``chosen`` value plus optional ``meta`` data."""

    chosen: Any
    meta: dict[str, Any] | None = None


class BaseMutable(LightModule, ABC):
    """A searchable module: its forward depends on ``current_choice``.

    Subclasses implement ``current_choice`` (getter and setter), ``fix_chosen`` and
    ``dump_chosen``. Fixing is irreversible: afterwards ``is_fixed`` is True and the
    mutable is an ordinary module.

    Args:
        alias: an optional name; mutables that share an alias are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.
    """

    def __init__(self, alias: str | None = None, init_cfg: dict | None = None) -> None:
        super().__init__()
        self.alias = alias
        self.init_cfg = init_cfg
        self._is_fixed = False

    @property
    @abstractmethod
    def current_choice(self) -> Any:
        """The choice that the forward pass uses now."""

    @current_choice.setter
    @abstractmethod
    def current_choice(self, choice: Any) -> None:
        """Set the choice that the forward pass uses."""

    @abstractmethod
    def fix_chosen(self, chosen: Any) -> None:
        """Fix the mutable to ``chosen``; afterwards it can no longer change."""

    @abstractmethod
    def dump_chosen(self) -> DumpChosen:
        """Return the current choice (and optional meta data) for saving."""

    @property
    def is_fixed(self) -> bool:
        """Whether the mutable has been fixed (it is no longer searchable)."""
        return self._is_fixed

    @is_fixed.setter
    def is_fixed(self, is_fixed: bool) -> None:
        if not isinstance(is_fixed, bool):
            raise TypeError(f"is_fixed must be a bool, got {type(is_fixed).__name__}")
        if self._is_fixed and not is_fixed:
            from fxrazor.errors import FixedMutableError

            raise FixedMutableError(f"{type(self).__name__} is fixed; fixing cannot be undone")
        self._is_fixed = is_fixed
