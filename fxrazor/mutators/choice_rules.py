"""How a search group is sampled: ``max``, ``min`` and ``random`` per kind of mutable.

- Value mutables: ``max``/``min`` are the largest/smallest value (the mutable's own
  ``max_choice``/``min_choice`` when it has them); ``random`` is uniform (Python's
  ``random``).
- One-shot op mutables (``OneShotMutableOP``): candidates have no order of their own, so
  ``max``/``min`` pick the candidate with the most/fewest parameters (the first in
  candidate order among equals: a parameter-free candidate such as an identity or a
  pooling is the smallest). ``random`` is uniform (Python's ``random``). MMRazor's op
  mutables have no max/min at all; a size order makes a sandwich rule (largest and
  smallest subnet) work on op choices too. An op mutable that does not expose its
  ``candidates`` modules falls back to candidate order: first is max, last is min.
- Differentiable op mutables (``DiffMutableOP``, ``OneHotMutableOP``, ``DiffChoiceRoute``):
  their choice is learned, so ``max`` and ``min`` both give what the arch param favours:
  its argmax (a route: its ``num_chosen`` largest edges), as MMRazor's ``NasMutator``
  does for every mode. ``random`` draws from softmax(arch_param) (torch's generator; a
  route draws ``num_chosen`` edges without replacement). A route's edges are listed in
  edge order, as its ``current_choice`` reports them.

Example:
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_module import OneShotMutableOP
    >>> from fxrazor.mutators.groups import SearchGroup
    >>> op = OneShotMutableOP({"id": nn.Identity(), "fc": nn.Linear(4, 4)})
    >>> group = SearchGroup("op", "module", ["op"], [op])
    >>> extreme_choice(group, "max", None), extreme_choice(group, "min", None)
    ('fc', 'id')
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F

from fxrazor.errors import InvalidChoiceError
from fxrazor.mutators.groups import SearchGroup

__all__ = ["SAMPLE_MODES", "candidate_size", "extreme_choice", "random_choice"]

SAMPLE_MODES = ("random", "max", "min")


def candidate_size(module: torch.nn.Module) -> int:
    """The number of parameter entries of ``module`` (each shared tensor once)."""
    return sum(p.numel() for p in module.parameters())


def _edge_order(group: SearchGroup, names: list[str]) -> list[str]:
    return [name for name in group.candidates if name in names]


def _favoured(group: SearchGroup, arch_param: torch.Tensor) -> Any:
    choice = group.first.sample_choice(arch_param)
    return _edge_order(group, choice) if isinstance(choice, list) else choice


def extreme_choice(group: SearchGroup, mode: str, arch_param: torch.Tensor | None) -> Any:
    """The group's ``max`` or ``min`` choice (see the module's rules)."""
    first = group.first
    if group.is_diff:
        if arch_param is None:
            raise InvalidChoiceError(
                f"search group {group.describe()} has no arch param to take its {mode} choice "
                f"from; prepare the arch params first (prepare_arch_params)")
        return _favoured(group, arch_param)
    if group.kind == "module":
        modules = getattr(first, "candidates", None)
        if modules is None:  # an op mutable that does not expose its candidate modules
            return group.candidates[0 if mode == "max" else -1]
        sizes = [candidate_size(modules[name]) for name in group.candidates]
        best = max(sizes) if mode == "max" else min(sizes)
        return group.candidates[sizes.index(best)]
    own = getattr(type(first), f"{mode}_choice", None)
    if own is not None:
        return getattr(first, f"{mode}_choice")
    try:
        return max(group.candidates) if mode == "max" else min(group.candidates)
    except TypeError as e:
        raise InvalidChoiceError(
            f"search group {group.describe()}: its values {group.candidates} have no order, "
            f"so it has no {mode} choice; set it explicitly") from e


def random_choice(group: SearchGroup, arch_param: torch.Tensor | None) -> Any:
    """A random choice for the group (see the module's rules)."""
    first = group.first
    if group.is_diff and arch_param is not None:
        probs = F.softmax(arch_param.detach().float(), dim=-1)
        count = int(getattr(first, "num_chosen", 1))
        drawn = torch.multinomial(probs.cpu(), count, replacement=False).tolist()
        names = [group.candidates[i] for i in drawn]
        return _edge_order(group, names) if hasattr(first, "num_chosen") else names[0]
    if group.kind == "value" and callable(getattr(first, "sample_choice", None)):
        return first.sample_choice()
    if hasattr(first, "num_chosen"):  # a route without an arch param: uniform edges
        return _edge_order(group, random.sample(group.candidates, first.num_chosen))
    return random.choice(group.candidates)
