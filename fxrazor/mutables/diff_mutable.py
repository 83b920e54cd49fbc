"""Differentiable mutables: choice blocks weighted by learnable architecture parameters.

The architecture parameter (``arch_param``) of a block is owned by whoever searches it
and handed to ``forward`` (or bound once with ``set_forward_args``); the block turns it
into probabilities with a softmax and mixes its candidates with them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.mutables.diff_mutable import DiffMutableOP
    >>> op = DiffMutableOP({"relu": nn.ReLU(), "id": nn.Identity()})
    >>> arch_param = nn.Parameter(torch.zeros(2))  # equal weights: 0.5 each
    >>> op(torch.tensor([-2.0, 2.0]), arch_param).tolist()
    [-1.0, 2.0]
    >>> op.sample_choice(torch.tensor([0.1, 0.9]))
    'id'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fxrazor.errors import FixedMutableError, MutableArgumentError
from fxrazor.mutables.base import DumpChosen
from fxrazor.mutables.choice_checks import (
    build_module_dict,
    check_arch_param,
    check_choice_name,
    check_choice_names,
    describe_mutable,
)
from fxrazor.mutables.diff_route import DiffChoiceRoute
from fxrazor.mutables.mutable_module import DiffMutableModule

__all__ = ["DiffMutableModule", "DiffMutableOP", "OneHotMutableOP", "DiffChoiceRoute"]


class DiffMutableOP(DiffMutableModule):
    """A choice block whose output is the softmax(arch_param)-weighted sum of its candidates.

    Args:
        candidates: an ``nn.ModuleDict`` or a dict of name -> ``nn.Module``; the modules
            are shared, the container is copied.
        fix_threshold: in [0, 1]. :meth:`maybe_fix` fixes the block to its most probable
            candidate once that probability exceeds every other one by at least this much.
            A margin of 1 needs probabilities of exactly 1 and 0, which a softmax of finite
            values never has, so the default 1.0 never fixes a block of two or more
            candidates (this is decided exactly, not from rounded float probabilities).
        module_kwargs: kept as a record only (see :class:`MutableModule`).
        alias: an optional name; mutables that share an alias are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    ``current_choice`` records the decision (a name, or a list of names); it starts as
    the first candidate and is not read by the forward pass, which uses ``arch_param``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> op = DiffMutableOP({"relu": nn.ReLU(), "id": nn.Identity()}, fix_threshold=0.5)
        >>> op.maybe_fix(torch.tensor([0.0, 5.0]))  # probs ~ [0.007, 0.993]
        True
        >>> op.choices, op.is_fixed
        (['id'], True)
    """

    def __init__(
        self,
        candidates: nn.ModuleDict | Mapping[str, nn.Module],
        fix_threshold: float = 1.0,
        module_kwargs: dict[str, Any] | None = None,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(module_kwargs=module_kwargs, alias=alias, init_cfg=init_cfg)
        owner = describe_mutable(self)
        valid = isinstance(fix_threshold, int | float) and not isinstance(fix_threshold, bool)
        if not valid or not 0.0 <= fix_threshold <= 1.0:
            raise MutableArgumentError(
                f"{owner}: fix_threshold must be a number in [0, 1], got {fix_threshold!r}"
            )
        self.fix_threshold = float(fix_threshold)
        self._candidates = build_module_dict(candidates, owner)
        self._all_choices: list[str] = list(self._candidates.keys())
        self._current_choice: str | list[str] = self._all_choices[0]

    @property
    def choices(self) -> list[str]:
        """Names of the remaining candidates, in insertion order."""
        return list(self._candidates.keys())

    def _normalize(self, choice: Any) -> str | list[str]:
        """Validate a name or a list of names; a one-name list becomes the name."""
        owner = describe_mutable(self)
        if isinstance(choice, str):
            return check_choice_name(choice, self.choices, owner)
        names = check_choice_names(choice, self.choices, owner)
        return names[0] if len(names) == 1 else names

    def _same_as_current(self, choice: Any) -> bool:
        as_set = {choice} if isinstance(choice, str) else set(choice)
        current = self._current_choice
        return as_set == ({current} if isinstance(current, str) else set(current))

    @property
    def current_choice(self) -> str | list[str]:
        """The chosen candidate name (or names)."""
        current = self._current_choice
        return current if isinstance(current, str) else list(current)

    @current_choice.setter
    def current_choice(self, choice: str | list[str]) -> None:
        if self.is_fixed:
            if not self._same_as_current(choice):
                raise FixedMutableError(
                    f"{describe_mutable(self)} is fixed to {self._current_choice!r}; "
                    f"it cannot switch to {choice!r}"
                )
            return
        self._current_choice = self._normalize(choice)

    def _weighted_sum(self, x: Any, weights: torch.Tensor) -> torch.Tensor:
        """Sum the remaining candidates' outputs, each times its (original-index) weight."""
        outputs = [
            weights[self._all_choices.index(name)] * module(x)
            for name, module in self._candidates.items()
        ]
        return sum(outputs[1:], outputs[0])

    def forward_arch_param(self, x: Any, arch_param: torch.Tensor) -> torch.Tensor:
        """Return ``sum_i softmax(arch_param)_i * candidate_i(x)``."""
        check_arch_param(arch_param, len(self._all_choices), describe_mutable(self))
        return self._weighted_sum(x, self.compute_arch_probs(arch_param))

    def forward_fixed(self, x: Any) -> torch.Tensor:
        """Return the sum of the outputs of the candidates that fixing kept."""
        return self.forward_all(x)

    def forward_all(self, x: Any) -> torch.Tensor:
        """Return the plain sum of every remaining candidate's output."""
        outputs = [module(x) for module in self._candidates.values()]
        return sum(outputs[1:], outputs[0])

    def sample_choice(self, arch_param: torch.Tensor) -> str | list[str]:
        """Return the name of the largest entry of ``arch_param`` (the fixed choice if fixed)."""
        check_arch_param(arch_param, len(self._all_choices), describe_mutable(self))
        if self.is_fixed:
            return self.current_choice
        return self._all_choices[int(torch.argmax(arch_param.detach()))]

    def fix_chosen(self, chosen: str | list[str]) -> None:
        """Keep the ``chosen`` candidate(s) only, delete the others and mark the op fixed.

        Fixing again with the same choice does nothing; with another it raises
        :class:`FixedMutableError`.
        """
        if self.is_fixed:
            if not self._same_as_current(chosen):
                raise FixedMutableError(
                    f"{describe_mutable(self)} is already fixed to "
                    f"{self._current_choice!r}; it cannot be fixed to {chosen!r}"
                )
            return
        chosen = self._normalize(chosen)
        keep = {chosen} if isinstance(chosen, str) else set(chosen)
        for name in self.choices:
            if name not in keep:
                del self._candidates[name]
        self._current_choice = chosen
        self.is_fixed = True

    def maybe_fix(self, arch_param: torch.Tensor) -> bool:
        """Fix to the most probable candidate if it leads every other by ``fix_threshold``.

        Returns True if this call fixed the op; False if it did not (or was fixed before).
        """
        check_arch_param(arch_param, len(self._all_choices), describe_mutable(self))
        if self.is_fixed:
            return False
        # float64 keeps the margin from rounding up to the threshold as early as float32.
        probs = self.compute_arch_probs(arch_param.detach().double())
        top = int(torch.argmax(probs))
        others = torch.cat([probs[:top], probs[top + 1 :]])
        if others.numel():
            # In float arithmetic a huge logit gap gives probs of 1.0 and 0.0; the real
            # margin is still below 1, so a threshold of 1 is never met.
            if self.fix_threshold >= 1.0 or float(probs[top] - others.max()) < self.fix_threshold:
                return False
        self.fix_chosen(self._all_choices[top])
        return True

    def dump_chosen(self) -> DumpChosen:
        """Return the current choice, with every original candidate name as meta data."""
        return DumpChosen(chosen=self.current_choice, meta={"all_choices": list(self._all_choices)})


class OneHotMutableOP(DiffMutableOP):
    """A differentiable block that runs one sampled candidate per forward (DSNAS).

    As MMRazor's: each forward draws a one-hot ``arch_weights`` from softmax(arch_param)
    (:meth:`sample_weights`) and stores it on the op as a leaf tensor that requires grad;
    only the drawn candidate runs, scaled by its weight (exactly 1). No gradient flows to
    ``arch_param`` through the forward: the searcher reads ``arch_weights.grad`` (DSNAS
    multiplies the gradient of ``log((arch_weights * probs).sum())`` by
    ``arch_weights.grad.sum()``). When the most probable candidate leads the second by at
    least ``fix_threshold`` the op fixes itself to it (see :meth:`DiffMutableOP.maybe_fix`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> op = OneHotMutableOP({"relu": nn.ReLU(), "id": nn.Identity()})
        >>> arch_param = nn.Parameter(torch.tensor([0.0, -1e4]))  # p(relu) ~ 1
        >>> op(torch.tensor([-1.0, 3.0]), arch_param).tolist()
        [0.0, 3.0]
        >>> op.arch_weights.tolist(), op.arch_weights.requires_grad
        ([1.0, 0.0], True)
    """

    arch_weights: torch.Tensor

    def sample_weights(
        self, arch_param: torch.Tensor, probs: torch.Tensor, random_sample: bool = False
    ) -> torch.Tensor:
        """Return a one-hot weight vector over the candidates (no gradient).

        Args:
            arch_param: the architecture parameter ``probs`` was computed from; checked
                for shape (and, for ``random_sample``, giving the number of candidates).
            probs: the candidates' probabilities, shape ``(num_candidates,)``.
            random_sample: draw the candidate uniformly at random, ignoring ``probs``
                (MMRazor's ``OneHotCategorical(ones_like(arch_param))``); by default it
                is drawn from ``probs`` (``OneHotCategorical(probs=probs)``).
        """
        owner = describe_mutable(self)
        check_arch_param(arch_param, len(self._all_choices), owner)
        if not isinstance(probs, torch.Tensor) or probs.shape != arch_param.shape:
            raise MutableArgumentError(
                f"{owner}: probs must be a tensor shaped like arch_param "
                f"{tuple(arch_param.shape)}, got {getattr(probs, 'shape', type(probs))}"
            )
        weights = torch.ones_like(arch_param.detach()) if random_sample else probs.detach()
        index = torch.multinomial(weights, 1)  # a one-hot categorical draw
        return torch.zeros_like(weights).scatter(-1, index, 1.0)

    def forward_arch_param(self, x: Any, arch_param: torch.Tensor) -> torch.Tensor:
        """Draw ``arch_weights`` from softmax(arch_param), fix the op if its leader is
        ``fix_threshold`` ahead, and run the drawn (or kept) candidate times its weight."""
        check_arch_param(arch_param, len(self._all_choices), describe_mutable(self))
        probs = self.compute_arch_probs(arch_param)
        if not self.is_fixed:
            self.arch_weights = self.sample_weights(arch_param, probs)
            self.maybe_fix(arch_param)
        if self.is_fixed:
            kept = self._all_choices.index(self.choices[0])
            self.arch_weights = torch.zeros_like(probs.detach())
            self.arch_weights[kept] = 1.0
        self.arch_weights.requires_grad_()
        index = int(self.arch_weights.detach().argmax())
        return self._candidates[self._all_choices[index]](x) * self.arch_weights[index]
