"""Mutable modules: blocks that hold several named candidate operations.

A one-shot supernet (single path) samples one candidate per block at each step;
:class:`OneShotMutableOP` is that block. :class:`DiffMutableModule` is the base of the
differentiable blocks (see ``fxrazor.mutables.diff_mutable``), which mix their candidates
with learnable architecture parameters.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_module import OneShotMutableOP
    >>> _ = torch.manual_seed(0)
    >>> candidates = nn.ModuleDict({
    ...     "conv3x3": nn.Conv2d(32, 32, 3, 1, 1),
    ...     "conv5x5": nn.Conv2d(32, 32, 5, 1, 2),
    ...     "conv7x7": nn.Conv2d(32, 32, 7, 1, 3),
    ... })
    >>> x = torch.randn(1, 32, 16, 16)
    >>> op = OneShotMutableOP(candidates)
    >>> op.choices
    ['conv3x3', 'conv5x5', 'conv7x7']
    >>> op.num_choices
    3
    >>> op.is_fixed
    False
    >>> op.current_choice = "conv3x3"
    >>> unfixed_output = op(x)
    >>> bool(torch.equal(unfixed_output, candidates["conv3x3"](x)))
    True
    >>> op.fix_chosen("conv3x3")
    >>> bool(torch.equal(op(x), unfixed_output))
    True
    >>> op.choices
    ['conv3x3']
    >>> op.num_choices
    1
    >>> op.is_fixed
    True
"""

from __future__ import annotations

import random
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxrazor.errors import FixedMutableError, MutableArgumentError
from fxrazor.mutables.base import BaseMutable, DumpChosen
from fxrazor.mutables.choice_checks import (
    build_module_dict,
    check_choice_name,
    describe_mutable,
)

__all__ = ["MutableModule", "OneShotMutableModule", "OneShotMutableOP", "DiffMutableModule"]


class MutableModule(BaseMutable):
    """A mutable whose choices are named candidate operations.

    Args:
        module_kwargs: extra keyword arguments the candidates were built with. Candidates
            are passed in as ready modules, so this is kept as a record only.
        alias: an optional name; mutables that share an alias are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    Example:
        >>> from torch import nn
        >>> op = OneShotMutableOP({"id": nn.Identity()}, module_kwargs={"stride": 1})
        >>> op.module_kwargs, op.num_choices, op.mutable_prefix
        ({'stride': 1}, 1, 'module')
    """

    mutable_prefix = "module"  # MMRazor's prefix of module mutables ('value', 'channel')

    def __init__(
        self,
        module_kwargs: dict[str, Any] | None = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(alias=alias, init_cfg=init_cfg)
        if module_kwargs is not None and not isinstance(module_kwargs, Mapping):
            raise MutableArgumentError(
                f"{describe_mutable(self)}: module_kwargs must be a dict or None, "
                f"got {type(module_kwargs).__name__}"
            )
        self.module_kwargs: dict[str, Any] = dict(module_kwargs or {})

    @property
    @abstractmethod
    def choices(self) -> list[str]:
        """The names of the candidates that remain (only the chosen ones once fixed)."""

    @property
    def num_choices(self) -> int:
        """How many candidates remain."""
        return len(self.choices)


class OneShotMutableModule(MutableModule):
    """A mutable module for single-path supernets: one candidate runs per forward.

    ``forward`` dispatches on the mutable's state: :meth:`forward_fixed` once fixed,
    :meth:`forward_all` while ``current_choice`` is None (used to count FLOPs of the
    whole block), else :meth:`forward_choice` with the current choice.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> op = OneShotMutableOP({"relu": nn.ReLU(), "id": nn.Identity()})
        >>> op.current_choice = None
        >>> op(torch.tensor([-1.0, 2.0])).tolist()  # forward_all sums every candidate
        [-1.0, 4.0]
    """

    def forward(self, x: Any) -> Any:
        """Run the fixed op, every op (no current choice) or the current choice."""
        if self.is_fixed:
            return self.forward_fixed(x)
        if self.current_choice is None:
            return self.forward_all(x)
        return self.forward_choice(x, self.current_choice)

    @abstractmethod
    def sample_choice(self) -> Any:
        """Return a random valid choice."""

    @abstractmethod
    def forward_choice(self, x: Any, choice: Any) -> Any:
        """Forward with ``choice`` while the mutable is not fixed."""

    @abstractmethod
    def forward_fixed(self, x: Any) -> Any:
        """Forward once the mutable is fixed."""

    @abstractmethod
    def forward_all(self, x: Any) -> Any:
        """Forward through every candidate (used to count the FLOPs of the whole block)."""


class OneShotMutableOP(OneShotMutableModule):
    """A choice block holding named candidate ops, of which one runs at a time.

    Args:
        candidates: an ``nn.ModuleDict`` or a dict of name -> ``nn.Module``. The order of
            insertion is the order of :attr:`choices`. The modules are shared, the
            container is copied, so fixing does not change the caller's dict.
        module_kwargs: kept as a record only (see :class:`MutableModule`).
        alias: an optional name; mutables that share an alias are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    ``current_choice`` starts as the first candidate. Setting it to None (while not
    fixed) makes ``forward`` run every candidate and sum the outputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> op = OneShotMutableOP({"relu": nn.ReLU(), "neg": nn.Identity()})
        >>> op.current_choice
        'relu'
        >>> op(torch.tensor([-1.0, 2.0])).tolist()
        [0.0, 2.0]
        >>> op.dump_chosen().chosen
        'relu'
    """

    def __init__(
        self,
        candidates: nn.ModuleDict | Mapping[str, nn.Module],
        module_kwargs: dict[str, Any] | None = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(module_kwargs=module_kwargs, alias=alias, init_cfg=init_cfg)
        self._candidates = build_module_dict(candidates, describe_mutable(self))
        self._all_choices: list[str] = list(self._candidates.keys())
        self._current_choice: str | None = self._all_choices[0]

    @property
    def choices(self) -> list[str]:
        """Names of the remaining candidates, in insertion order."""
        return list(self._candidates.keys())

    @property
    def candidates(self) -> nn.ModuleDict:
        """The remaining candidate modules by name (only the chosen one once fixed)."""
        return self._candidates

    @property
    def current_choice(self) -> str | None:
        """The candidate ``forward`` runs; None means all of them (summed)."""
        return self._current_choice

    @current_choice.setter
    def current_choice(self, choice: str | None) -> None:
        if self.is_fixed:
            if choice != self._current_choice:
                raise FixedMutableError(
                    f"{describe_mutable(self)} is fixed to {self._current_choice!r}; "
                    f"it cannot switch to {choice!r}"
                )
            return
        if choice is not None:
            check_choice_name(choice, self.choices, describe_mutable(self))
        self._current_choice = choice

    def sample_choice(self) -> str:
        """Return a candidate name drawn uniformly with Python's ``random`` module.

        A fixed op has only its chosen candidate left, which is then always returned.
        """
        return random.choice(self.choices)

    def forward_choice(self, x: Any, choice: str) -> torch.Tensor:
        """Run candidate ``choice`` on ``x``."""
        check_choice_name(choice, self.choices, describe_mutable(self))
        return self._candidates[choice](x)

    def forward_fixed(self, x: Any) -> torch.Tensor:
        """Run the single candidate that fixing kept."""
        return self._candidates[self.choices[0]](x)

    def forward_all(self, x: Any) -> torch.Tensor:
        """Return the sum of every remaining candidate's output (for FLOPs counting)."""
        outputs = [module(x) for module in self._candidates.values()]
        return sum(outputs[1:], outputs[0])

    def fix_chosen(self, chosen: str) -> None:
        """Keep candidate ``chosen`` only, delete the others and mark the op fixed.

        Fixing again with the same name does nothing; with another name it raises
        :class:`FixedMutableError`.
        """
        if self.is_fixed:
            if chosen != self._current_choice:
                raise FixedMutableError(
                    f"{describe_mutable(self)} is already fixed to "
                    f"{self._current_choice!r}; it cannot be fixed to {chosen!r}"
                )
            return
        check_choice_name(chosen, self.choices, describe_mutable(self))
        for name in self.choices:
            if name != chosen:
                del self._candidates[name]
        self._current_choice = chosen
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice, with every original candidate name as meta data."""
        return DumpChosen(
            chosen=self._current_choice, meta={"all_choices": list(self._all_choices)}
        )


class DiffMutableModule(MutableModule):
    """Base of the differentiable mutables.

    ``forward(x, arch_param)`` runs :meth:`forward_fixed` once the mutable is fixed, else
    :meth:`forward_arch_param`. When ``arch_param`` is omitted, the one bound by
    :meth:`set_forward_args` is used, so the block can sit in a model whose ``forward``
    calls it with ``x`` alone; with neither, :meth:`forward_all` runs (as in MMRazor,
    where that is how FLOPs of the whole block are counted). The bound parameter is kept
    as a plain attribute (not a registered parameter): it belongs to the searcher and
    does not enter this module's ``state_dict`` or ``parameters()``.

    Args:
        module_kwargs: kept as a record only (see :class:`MutableModule`).
        alias: an optional name; mutables that share an alias are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from fxrazor.mutables.diff_mutable import DiffMutableOP
        >>> op = DiffMutableOP({"a": nn.Identity(), "b": nn.Identity()})
        >>> op.set_forward_args(nn.Parameter(torch.zeros(2)))
        >>> op(torch.ones(3)).tolist()
        [1.0, 1.0, 1.0]
    """

    def __init__(
        self,
        module_kwargs: dict[str, Any] | None = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(module_kwargs=module_kwargs, alias=alias, init_cfg=init_cfg)
        # Written through __dict__ so nn.Module does not register the searcher's parameter.
        self.__dict__["_bound_arch_param"] = None

    def set_forward_args(self, arch_param: torch.Tensor | None) -> None:
        """Bind ``arch_param`` for later ``forward`` calls that omit it (None unbinds)."""
        if arch_param is not None and not isinstance(arch_param, torch.Tensor):
            raise MutableArgumentError(
                f"{describe_mutable(self)}: set_forward_args needs a tensor or None, "
                f"got {type(arch_param).__name__}"
            )
        self.__dict__["_bound_arch_param"] = arch_param

    def _uses_arch_param(self) -> bool:
        """Whether a given arch_param is used (a route built without one ignores it)."""
        return True

    def forward(self, x: Any, arch_param: torch.Tensor | None = None) -> Any:
        """Run the fixed op; else mix the candidates with ``arch_param`` (or the bound
        one); with no arch_param at all, run every candidate (:meth:`forward_all`)."""
        if self.is_fixed:
            return self.forward_fixed(x)
        if arch_param is None:
            arch_param = self.__dict__["_bound_arch_param"]
        if arch_param is None or not self._uses_arch_param():
            return self.forward_all(x)
        return self.forward_arch_param(x, arch_param)

    def compute_arch_probs(self, arch_param: torch.Tensor) -> torch.Tensor:
        """Return the softmax of ``arch_param`` over its last dimension."""
        return F.softmax(arch_param, dim=-1)

    @abstractmethod
    def forward_arch_param(self, x: Any, arch_param: torch.Tensor) -> Any:
        """Forward while not fixed, weighting the candidates by ``arch_param``."""

    @abstractmethod
    def sample_choice(self, arch_param: torch.Tensor) -> Any:
        """Return the choice that ``arch_param`` favours."""

    @abstractmethod
    def forward_fixed(self, x: Any) -> Any:
        """Forward once the mutable is fixed."""

    @abstractmethod
    def forward_all(self, x: Any) -> Any:
        """Forward through every candidate (used to count FLOPs)."""
