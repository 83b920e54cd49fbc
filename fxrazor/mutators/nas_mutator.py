"""The NAS mutator: one choice per search group of op and value mutables, and the
differentiable ops' architecture parameters.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_module import OneShotMutableOP
    >>> from fxrazor.mutables.diff_mutable import DiffMutableOP
    >>> model = nn.Sequential(OneShotMutableOP({"id": nn.Identity(), "fc": nn.Linear(2, 2)}),
    ...                       DiffMutableOP({"a": nn.ReLU(), "b": nn.Tanh()}))
    >>> mutator = NasMutator()
    >>> mutator.prepare_from_supernet(model)
    >>> mutator.prepare_arch_params()
    >>> list(mutator.current_choices), list(mutator.arch_params)
    (['0', '1'], ['1'])
    >>> mutator.set_choices({"0": "fc"})
    >>> model[0].current_choice, model(torch.ones(1, 2)).shape
    ('fc', torch.Size([1, 2]))
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
from torch import nn

from fxrazor.errors import FxRazorError, InvalidChoiceError, UnknownUnitError
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_module import DiffMutableModule
from fxrazor.mutators.base import MutatorExtremes
from fxrazor.mutators.choice_rules import SAMPLE_MODES, extreme_choice, random_choice
from fxrazor.mutators.groups import SearchGroup, build_search_groups, param_name

__all__ = ["NasMutator", "DiffModuleMutator", "check_sample_mode", "unknown_keys_error",
           "hold_value_mutables"]

logger = logging.getLogger(__name__)

# The attribute under which value-mutable binding records ``{key: mutable}`` on a model.
VALUE_RECORD = "_fxr_value_mutables"


def check_sample_mode(kind: str) -> None:
    """Raise :class:`InvalidChoiceError` unless ``kind`` is a sampling mode."""
    if kind not in SAMPLE_MODES:
        raise InvalidChoiceError(
            f"sample mode must be 'random', 'max' or 'min', got {kind!r}")


def unknown_keys_error(unknown: list[str], valid: list[str], hints: Mapping[str, str]
                       ) -> UnknownUnitError:
    """The error for choice keys that name no search group, listing the valid keys."""
    shown = valid[:30] + (["..."] if len(valid) > 30 else [])
    notes = [f"{k!r} is in group {hints[k]!r}" for k in unknown if k in hints]
    return UnknownUnitError(
        f"unknown choice keys {unknown}; valid keys are {shown}"
        + (f" ({'; '.join(notes)}: use the group's key)" if notes else ""))


def hold_value_mutables(model: nn.Module) -> None:
    """Hold the value mutables recorded on ``model`` (``__dict__['_fxr_value_mutables']``)
    as its submodules under ``value_mutable_dict``, so a walk over the modules finds them:
    ``export_fix_subnet``/``load_fix_subnet`` in ``'mutable'`` mode (MMRazor's value
    mutables are submodules of their dynamic ops). The record stays what the mutators
    read; the dict only mirrors it.

    One entry per mutable object, under its first key with dots as ``:``; derived
    mutables are left out (as from the choices: they follow their sources). Value
    mutables hold no tensors, so ``state_dict()`` does not change. With an empty record
    the dict is removed.

    Example:
        >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
        >>> model, kernel = nn.Linear(2, 2), OneShotMutableValue([3, 5])
        >>> model.__dict__[VALUE_RECORD] = {"a.k": kernel, "b.k": kernel}
        >>> hold_value_mutables(model)
        >>> list(model.value_mutable_dict), model.state_dict().keys() == {"weight", "bias"}
        (['a:k'], True)
    """
    held: dict[str, nn.Module] = {}
    for key, mutable in (model.__dict__.get(VALUE_RECORD) or {}).items():
        if isinstance(mutable, nn.Module) and not isinstance(mutable, DerivedMutable) \
                and all(m is not mutable for m in held.values()):
            held[param_name(key)] = mutable
    current = model._modules.get("value_mutable_dict")
    if not held:
        model._modules.pop("value_mutable_dict", None)
    elif not isinstance(current, nn.ModuleDict) or list(current.items()) != list(held.items()):
        model._modules["value_mutable_dict"] = nn.ModuleDict(held)


class NasMutator(MutatorExtremes):
    """Search groups of op mutables (``MutableModule``) and value mutables, with MMRazor's
    ``NasMutator`` method names; plain Python (not a module), so a supernet can hold one
    without registering its mutables twice.

    Groups are keyed by alias, else by module path (op mutables, relative to the
    supernet's ``graph_module`` when it has one) or record key (value mutables), in a
    stable order: op mutables in module order, then value mutables in record order.
    ``max``/``min``/``random`` follow :mod:`fxrazor.mutators.choice_rules`.
    """

    def __init__(self) -> None:
        self._groups: list[SearchGroup] | None = None
        self._arch_params: nn.ParameterDict | None = None
        self._value_items: list[tuple[str, Any]] = []

    # ---- preparation -------------------------------------------------------------------------
    def prepare_from_supernet(self, supernet: nn.Module,
                              value_mutables: Mapping[str, Any] | None = None,
                              reserved_keys: Iterable[str] = ()) -> None:
        """Build the search groups of ``supernet`` (checks alias groups, see
        :func:`~fxrazor.mutators.groups.build_search_groups`).

        Args:
            supernet: the model; its op mutables are found in ``supernet.graph_module``
                when it has one, else in ``supernet`` itself.
            value_mutables: ``{key: value mutable}``; by default the record the value
                binding leaves in ``supernet.__dict__['_fxr_value_mutables']``.
            reserved_keys: keys already used by channel units.
        """
        root = supernet.__dict__.get("_modules", {}).get("graph_module", supernet)
        if value_mutables is None:
            value_mutables = supernet.__dict__.get(VALUE_RECORD) or {}
        self._groups = build_search_groups(root, value_mutables, reserved_keys)
        self._value_items = list(value_mutables.items())
        logger.debug("search groups: %s", [g.key for g in self._groups])

    def matches_values(self, value_mutables: Mapping[str, Any]) -> bool:
        """Whether the groups were built from this very value record (same keys, same
        mutable objects, same order)."""
        items = self._value_items
        return len(items) == len(value_mutables) and all(
            key == k and mutable is m
            for (key, mutable), (k, m) in zip(items, value_mutables.items(), strict=True))

    @property
    def groups(self) -> list[SearchGroup]:
        """The search groups, in key order."""
        if self._groups is None:
            raise FxRazorError("call prepare_from_supernet first to build the search groups")
        return self._groups

    @property
    def search_groups(self) -> dict[str, list[Any]]:
        """``{group key: [mutable, ...]}``, as MMRazor's mutators give them."""
        return {g.key: list(g.mutables) for g in self.groups}

    def hints(self) -> dict[str, str]:
        """``{member path or other record key: group key}`` for keys that are not group
        keys themselves (used to point users at the right key)."""
        keys = {g.key for g in self.groups}
        return {p: g.key for g in self.groups for p in (*g.paths, *g.synonyms) if p not in keys}

    # ---- architecture parameters -------------------------------------------------------------
    def prepare_arch_params(self, param_dict: nn.ParameterDict | None = None) -> None:
        """Give every differentiable group one arch param and bind it to its members.

        The parameters live in ``param_dict`` (a new one by default), one per group under
        :func:`~fxrazor.mutators.groups.param_name` of its key, shaped ``(candidates,)``.
        An entry already there with that shape is kept (re-preparing loses no training);
        a new one starts from the arch param already bound to the group's first member
        (a searcher's alphas in the model, so the supernet computes what the model did),
        else as ``1e-3 * randn`` (as in MMRazor), on the device and in the floating dtype
        of the group's first member. Entries of no group are dropped. A
        ``DiffChoiceRoute`` built with ``with_arch_param=False`` gets one too (as in
        MMRazor): its forward ignores it, but its ``max`` choice reads it.
        """
        params = nn.ParameterDict() if param_dict is None else param_dict
        for group in self.groups:
            if not group.is_diff:
                continue
            name, size = param_name(group.key), len(group.candidates)
            old = params[name] if name in params else None
            if old is None or tuple(old.shape) != (size,):
                params[name] = nn.Parameter(self._initial(group, size))
        wanted = {param_name(g.key) for g in self.groups if g.is_diff}
        for name in [n for n in params if n not in wanted]:
            del params[name]
        self._arch_params = params
        self.bind_arch_params()

    @staticmethod
    def _initial(group: SearchGroup, size: int) -> torch.Tensor:
        bound = group.first.__dict__.get("_bound_arch_param")
        if isinstance(bound, torch.Tensor) and tuple(bound.shape) == (size,):
            return bound.detach().clone()
        ref = next(iter(group.first.parameters()), None)
        if ref is None:
            return 1e-3 * torch.randn(size)
        return 1e-3 * torch.randn(size, device=ref.device,
                                  dtype=ref.dtype if ref.is_floating_point() else None)

    @property
    def arch_params(self) -> nn.ParameterDict:
        """The arch params, ``{param_name(group key): Parameter}``."""
        if self._arch_params is None:
            raise FxRazorError("call prepare_arch_params first to build the arch params")
        return self._arch_params

    def arch_param(self, key: str) -> nn.Parameter:
        """The arch param of search group ``key``."""
        name = param_name(key)
        if name not in self.arch_params:
            diff = [g.key for g in self.groups if g.is_diff]
            raise UnknownUnitError(f"no arch param for {key!r}; differentiable groups: {diff}")
        return self.arch_params[name]

    def bind_arch_params(self) -> None:
        """Bind each differentiable member to its group's parameter (again, if moving or
        loading the model replaced the parameter object)."""
        if self._arch_params is None:
            return
        for group in self.groups:
            if group.is_diff:
                param = self._arch_params[param_name(group.key)]
                for mutable in group.mutables:
                    if mutable.__dict__.get("_bound_arch_param") is not param:
                        cast(DiffMutableModule, mutable).set_forward_args(param)

    def _param_of(self, group: SearchGroup) -> torch.Tensor | None:
        if not group.is_diff or self._arch_params is None:
            return None
        return self._arch_params[param_name(group.key)]

    # ---- choices -----------------------------------------------------------------------------
    @property
    def current_choices(self) -> dict[str, Any]:
        """``{group key: current choice}`` (a group's first member stands for it)."""
        return {g.key: g.first.current_choice for g in self.groups}

    def sample_choices(self, kind: str = "random") -> dict[str, Any]:
        """A choice per group, by ``kind`` (``random``, ``max`` or ``min``); not applied."""
        check_sample_mode(kind)
        if kind == "random":
            return {g.key: random_choice(g, self._param_of(g)) for g in self.groups}
        return {g.key: extreme_choice(g, kind, self._param_of(g)) for g in self.groups}

    def snapshot(self) -> list[tuple[Any, Any]]:
        """Every member's current choice, for :meth:`restore`."""
        return [(m, m.current_choice) for g in self.groups for m in g.mutables]

    @staticmethod
    def restore(snapshot: list[tuple[Any, Any]]) -> None:
        for mutable, choice in snapshot:
            mutable.current_choice = choice

    def check_keys(self, choices: Mapping[str, Any]) -> None:
        """Raise :class:`UnknownUnitError` naming the valid keys if a key is not a group's."""
        keys = {g.key for g in self.groups}
        unknown = [k for k in choices if k not in keys]
        if unknown:
            raise unknown_keys_error(unknown, [g.key for g in self.groups], self.hints())

    def set_choices(self, choices: Mapping[str, Any]) -> None:
        """Apply ``{group key: choice}`` (a subset of the groups is fine) to every member.

        All or nothing: every key is checked first, and if a choice is refused, the
        choices set so far are undone and the error (naming the group and its members)
        is raised again.
        """
        if not isinstance(choices, Mapping):
            raise InvalidChoiceError(f"choices must be a dict, got {type(choices).__name__}")
        self.check_keys(choices)
        by_key = {g.key: g for g in self.groups}
        before = self.snapshot()
        for key, choice in choices.items():
            group = by_key[key]
            try:
                for mutable in group.mutables:
                    mutable.current_choice = choice
            except FxRazorError as e:
                self.restore(before)
                raise type(e)(f"choice {choice!r} for search group {group.describe()}: {e}"
                              ) from e

class DiffModuleMutator(NasMutator):
    """MMRazor's older name for the mutator of differentiable op mutables: a
    :class:`NasMutator` whose arch params are prepared with the groups.

    Example:
        >>> from torch import nn
        >>> from fxrazor.mutables.diff_mutable import DiffMutableOP
        >>> mutator = DiffModuleMutator()
        >>> mutator.prepare_from_supernet(nn.Sequential(DiffMutableOP({"a": nn.ReLU()})))
        >>> list(mutator.arch_params)
        ['0']
    """

    def prepare_from_supernet(self, supernet: nn.Module,
                              value_mutables: Mapping[str, Any] | None = None,
                              reserved_keys: Iterable[str] = ()) -> None:
        super().prepare_from_supernet(supernet, value_mutables, reserved_keys)
        self.prepare_arch_params()
