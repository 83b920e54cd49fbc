"""What every mutator does the same way once it can sample: the extreme choices.

Example:
    >>> class Two(MutatorExtremes):
    ...     def sample_choices(self, kind="random"):
    ...         return {"w": 8 if kind == "max" else 1}
    ...     def set_choices(self, choices):
    ...         self.applied = choices
    >>> m = Two()
    >>> m.set_min_choices(); m.applied
    {'w': 1}
"""

from __future__ import annotations

from typing import Any

__all__ = ["MutatorExtremes"]


class MutatorExtremes:
    """``max_choices`` / ``min_choices`` and their setters, from a mutator's own
    ``sample_choices(kind)`` and ``set_choices(choices)`` (MMRazor's mutator names)."""

    def sample_choices(self, kind: str = "random") -> dict[str, Any]:
        raise NotImplementedError

    def set_choices(self, choices: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def max_choices(self) -> dict[str, Any]:
        """``sample_choices('max')``."""
        return self.sample_choices("max")

    @property
    def min_choices(self) -> dict[str, Any]:
        """``sample_choices('min')``."""
        return self.sample_choices("min")

    def set_max_choices(self) -> None:
        self.set_choices(self.max_choices)

    def set_min_choices(self) -> None:
        self.set_choices(self.min_choices)
