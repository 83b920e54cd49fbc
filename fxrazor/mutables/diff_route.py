"""A differentiable route: a DARTS cell node that mixes the inputs reaching it along
several edges (see :class:`DiffChoiceRoute`)."""

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
    check_choice_names,
    describe_mutable,
)
from fxrazor.mutables.mutable_module import DiffMutableModule

__all__ = ["DiffChoiceRoute"]


class DiffChoiceRoute(DiffMutableModule):
    """Selects and merges inputs that reach a node along several edges (a DARTS cell node).

    Each edge is a module applied to its own input: ``forward`` takes a list or tuple
    with one tensor per edge, in edge order, and sums the edges' outputs, weighted by
    softmax(arch_param) when ``with_arch_param`` is True and an arch_param is given (or
    bound); otherwise :meth:`forward_all` sums them unweighted. Fixing keeps some edges;
    each kept edge still reads the input at its original position.

    Args:
        edges: an ``nn.ModuleDict`` or a dict of name -> ``nn.Module``.
        num_chosen: how many edges :meth:`sample_choice` picks (1 to the number of edges).
        with_arch_param: weight the edges by softmax(arch_param); when False the edges
            are summed as they are and no arch_param is needed.
        alias: an optional name; mutables that share an alias are searched together.
        init_cfg: accepted for signature compatibility; stored, not interpreted.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> edges = nn.ModuleDict({
        ...     "first_edge": nn.Conv2d(32, 32, 3, 1, 1),
        ...     "second_edge": nn.Conv2d(32, 32, 5, 1, 2),
        ...     "third_edge": nn.MaxPool2d(3, 1, 1),
        ...     "fourth_edge": nn.MaxPool2d(5, 1, 2),
        ...     "fifth_edge": nn.MaxPool2d(7, 1, 3),
        ... })
        >>> route = DiffChoiceRoute(edges, with_arch_param=True)
        >>> arch_param = nn.Parameter(torch.randn(5))
        >>> x = [torch.randn(4, 32, 8, 8) for _ in range(5)]
        >>> route.forward_arch_param(x, arch_param).shape
        torch.Size([4, 32, 8, 8])
        >>> len(route.sample_choice(arch_param))
        2
    """

    def __init__(
        self,
        edges: nn.ModuleDict | Mapping[str, nn.Module],
        num_chosen: int = 2,
        with_arch_param: bool = False,
        alias: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(module_kwargs=None, alias=alias, init_cfg=init_cfg)
        owner = describe_mutable(self)
        self._edges = build_module_dict(edges, owner, what="edge")
        self._all_choices: list[str] = list(self._edges.keys())
        count = len(self._all_choices)
        if isinstance(num_chosen, bool) or not isinstance(num_chosen, int):
            raise MutableArgumentError(f"{owner}: num_chosen must be an int, got {num_chosen!r}")
        if not 1 <= num_chosen <= count:
            raise MutableArgumentError(
                f"{owner}: num_chosen={num_chosen} must lie in [1, {count}] (the number of edges)"
            )
        if not isinstance(with_arch_param, bool):
            raise MutableArgumentError(f"{owner}: with_arch_param must be a bool")
        self.num_chosen = num_chosen
        self.with_arch_param = with_arch_param
        self._current_choice: list[str] = self._all_choices[:num_chosen]

    def _uses_arch_param(self) -> bool:
        # MMRazor: forward mixes by arch_param only when given one *and* with_arch_param
        return self.with_arch_param

    @property
    def choices(self) -> list[str]:
        """Names of the remaining edges, in their original order."""
        return list(self._edges.keys())

    def _ordered(self, names: Any) -> list[str]:
        """Validate edge names and return them in original edge order."""
        valid = check_choice_names(names, self.choices, describe_mutable(self))
        return [name for name in self._all_choices if name in valid]

    @property
    def current_choice(self) -> list[str]:
        """The chosen edge names, in original edge order."""
        return list(self._current_choice)

    @current_choice.setter
    def current_choice(self, choice: list[str]) -> None:
        if self.is_fixed:
            if isinstance(choice, str) or set(choice) != set(self._current_choice):
                raise FixedMutableError(
                    f"{describe_mutable(self)} is fixed to edges {self._current_choice}; "
                    f"it cannot switch to {choice!r}"
                )
            return
        self._current_choice = self._ordered(choice)

    def _edge_outputs(self, inputs: Any) -> list[tuple[int, torch.Tensor]]:
        """Apply each remaining edge to its own input; return (original index, output)."""
        count = len(self._all_choices)
        if not isinstance(inputs, list | tuple) or len(inputs) != count:
            got = len(inputs) if isinstance(inputs, list | tuple) else type(inputs).__name__
            raise MutableArgumentError(
                f"{describe_mutable(self)} expects a list or tuple of {count} inputs, one per "
                f"edge {self._all_choices}; got {got}"
            )
        outputs = []
        for name, edge in self._edges.items():
            index = self._all_choices.index(name)
            outputs.append((index, edge(inputs[index])))
        return outputs

    def forward_arch_param(self, x: Any, arch_param: torch.Tensor) -> torch.Tensor:
        """Sum the edges' outputs weighted by softmax(arch_param).

        ``forward`` calls it only when ``with_arch_param`` is True and an arch_param is
        given (else it runs :meth:`forward_all`); called directly it always weights, as
        MMRazor's does.
        """
        outputs = self._edge_outputs(x)
        checked = check_arch_param(arch_param, len(self._all_choices), describe_mutable(self))
        probs = self.compute_arch_probs(checked)
        weighted = [probs[index] * out for index, out in outputs]
        return sum(weighted[1:], weighted[0])

    def forward_fixed(self, inputs: list[Any] | tuple[Any, ...]) -> torch.Tensor:
        """Sum the outputs of the kept edges, each applied to its own input."""
        return self.forward_all(inputs)

    def forward_all(self, x: list[Any] | tuple[Any, ...]) -> torch.Tensor:
        """Return the plain sum of every remaining edge's output."""
        outputs = [out for _, out in self._edge_outputs(x)]
        return sum(outputs[1:], outputs[0])

    def sample_choice(self, arch_param: torch.Tensor) -> list[str]:
        """Return the ``num_chosen`` most probable edges, most probable first.

        A fixed route returns the edges it kept.
        """
        check_arch_param(arch_param, len(self._all_choices), describe_mutable(self))
        if self.is_fixed:
            return self.current_choice
        probs = self.compute_arch_probs(arch_param.detach())
        top = torch.topk(probs, self.num_chosen).indices.tolist()
        return [self._all_choices[index] for index in top]

    def fix_chosen(self, chosen: list[str]) -> None:
        """Keep the ``chosen`` edges only, delete the others and mark the route fixed.

        Fixing again with the same edges does nothing; with others it raises
        :class:`FixedMutableError`.
        """
        if self.is_fixed:
            if isinstance(chosen, str) or set(chosen) != set(self._current_choice):
                raise FixedMutableError(
                    f"{describe_mutable(self)} is already fixed to edges "
                    f"{self._current_choice}; it cannot be fixed to {chosen!r}"
                )
            return
        keep = self._ordered(chosen)
        for name in self.choices:
            if name not in keep:
                del self._edges[name]
        self._current_choice = keep
        self.is_fixed = True

    def dump_chosen(self) -> DumpChosen:
        """Return the chosen edge names, with every original edge name as meta data."""
        return DumpChosen(chosen=self.current_choice, meta={"all_choices": list(self._all_choices)})
