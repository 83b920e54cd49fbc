"""The user-facing verbs: ``convert`` a model into a supernet, ``freeze`` a subnet.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import fxrazor
    >>> model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
    ...                       nn.Conv2d(16, 4, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 8, 8), unit="one_shot")
    >>> [u.name for u in sn.units]
    ['0']
    >>> sn.set_choices({"0": 0.5})
    >>> frozen = fxrazor.freeze(sn)
    >>> frozen.get_submodule("0").out_channels
    8
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fxrazor.analysis.result import UnitSpec
from fxrazor.errors import InvalidChoiceError, UnsupportedModelError
from fxrazor.mutables.base import BaseMutable
from fxrazor.mutables.channel_unit import (
    MutableChannelUnit,
    OneShotMutableChannelUnit,
    SequentialMutableChannelUnit,
)
from fxrazor.mutables.method_units import (
    DCFFChannelUnit,
    DMCPChannelUnit,
    L1MutableChannelUnit,
    SlimmableChannelUnit,
)
from fxrazor.passes.discover_units import discover_units
from fxrazor.passes.freeze import freeze as _freeze
from fxrazor.passes.insert_dynamic_ops import insert_dynamic_ops
from fxrazor.supernet import Supernet
from fxrazor.trace.tracer import trace_model

__all__ = ["convert", "convert_", "freeze", "UNIT_TYPES"]

logger = logging.getLogger(__name__)

UNIT_TYPES: dict[str, type[MutableChannelUnit]] = {
    "sequential": SequentialMutableChannelUnit,
    "one_shot": OneShotMutableChannelUnit,
    "slimmable": SlimmableChannelUnit,
    "l1": L1MutableChannelUnit,
    "dcff": DCFFChannelUnit,
    "dmcp": DMCPChannelUnit,
}


def _unit_type(unit: str | type[MutableChannelUnit]) -> type[MutableChannelUnit]:
    if isinstance(unit, type) and issubclass(unit, MutableChannelUnit):
        return unit
    if isinstance(unit, str) and unit in UNIT_TYPES:
        return UNIT_TYPES[unit]
    raise InvalidChoiceError(
        f"unit must be one of {sorted(UNIT_TYPES)} or a MutableChannelUnit subclass, got {unit!r}"
    )


def _build_units(specs: tuple[UnitSpec, ...], unit_cls: type[MutableChannelUnit],
                 unit_args: dict[str, Any]) -> list[MutableChannelUnit]:
    if "mutable_channel" in unit_args:  # one object would be shared by every unit
        raise InvalidChoiceError(
            "unit_args cannot give a mutable_channel: each unit builds its own; pass a "
            "MutableChannelUnit subclass as unit= to change its type")
    units = []
    for spec in specs:
        try:
            unit = unit_cls(spec.num_channels, **unit_args)
        except TypeError as e:
            raise InvalidChoiceError(
                f"unit_args {unit_args} do not fit {unit_cls.__name__}: {e}"
            ) from e
        unit.name = spec.name
        unit.set_channel_specs_source(spec.channel_specs)
        units.append(unit)
    return units


def _l1_importance(gm: nn.Module, spec: UnitSpec) -> torch.Tensor:
    """Sum of |weights| producing each unit channel, over all its producing slots."""
    score = torch.zeros(spec.num_channels)
    for slot, positions in spec.members:
        if not slot.is_producer:
            continue
        if slot.is_param:
            owner, _, attr = slot.target.rpartition(".")
            weight = getattr(gm.get_submodule(owner) if owner else gm, attr)
            dim = int(slot.role[3:])
        else:
            weight = gm.get_submodule(slot.target).weight
            dim = 1 if isinstance(gm.get_submodule(slot.target), nn.Embedding) else 0
        if weight is None or weight.is_meta:
            continue
        per_pos = weight.detach().abs().float().transpose(0, dim).reshape(weight.shape[dim], -1)
        per_pos = per_pos.sum(1).cpu()
        score += per_pos[torch.from_numpy(positions)].sum(1)
    return score


def convert(model: nn.Module, example_inputs: Any, unit: str | type[MutableChannelUnit]
            = "sequential", unit_args: dict[str, Any] | None = None,
            leaf_modules: Iterable[type | str] = (), module_rules: dict | None = None,
            function_rules: dict | None = None, method_rules: dict | None = None,
            dynamic_ops: dict | None = None, split_dims: str = "largest") -> Supernet:
    """Trace ``model`` and return a supernet whose channel widths are chosen per unit.

    The model is not modified: the supernet owns a deep copy of it.

    Args:
        model: any ``nn.Module``.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        unit: ``"sequential"``, ``"one_shot"``, ``"slimmable"``, ``"l1"``, ``"dcff"``,
            ``"dmcp"`` or a ``MutableChannelUnit`` subclass.
        unit_args: keyword arguments for every unit (e.g. ``{"choice_mode": "ratio"}``).
        leaf_modules: module types or qualified names to keep as single opaque nodes.
        module_rules, function_rules, method_rules: extra channel rules, e.g.
            ``{MyAct: fxrazor.rules.layers.elementwise_module}``.
        dynamic_ops: extra ``{static type: dynamic op type}`` entries.
        split_dims: ``"largest"`` prunes the largest dim of a split channel dim (attention
            head dims); ``"outer"`` prunes the outer one (whole attention heads).

    Returns:
        The :class:`~fxrazor.supernet.Supernet`; at full width its output equals the model's.
    """
    return _convert(model, example_inputs, unit, unit_args, leaf_modules, module_rules,
                    function_rules, method_rules, dynamic_ops, split_dims, copy_model=True)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration (if it was running).

    A conversion allocates tens of thousands of small objects (nodes, arrays, modules) that
    stay alive; every few hundred allocations start a collection that scans the young ones
    again, and now and then a full one scans every object of the process, a large model's
    included. Reference counting still frees everything acyclic meanwhile; cycles left
    behind are found by the first collection after.

    The objects left behind stay in the young generation, to be scanned once by that
    collection. Moving them straight to the oldest one (``gc.freeze()`` then
    ``gc.unfreeze()``) would save that scan but moves the whole process's young garbage
    along: it then waits for a full collection, which such promotions never trigger, and a
    loop of conversions grew by the size of each dropped model.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@_gc_paused()
def _convert(model: nn.Module, example_inputs: Any, unit: Any, unit_args: dict | None,
             leaf_modules: Iterable[type | str], module_rules: dict | None,
             function_rules: dict | None, method_rules: dict | None,
             dynamic_ops: dict | None, split_dims: str, copy_model: bool) -> Supernet:
    start = time.perf_counter()
    unit_cls = _unit_type(unit)
    traced = trace_model(model, example_inputs, (*leaf_modules, BaseMutable),
                         copy_model=copy_model)
    analysis = discover_units(traced, module_rules, function_rules, method_rules, split_dims)
    # convert's own copies of the layers become the dynamic ops themselves
    dyn = insert_dynamic_ops(traced.graph_module, analysis, dynamic_ops,
                             user_modules=traced.user_module_ids, modules=traced.modules())
    units = _build_units(analysis.units, unit_cls, dict(unit_args or {}))
    for spec, u in zip(analysis.units, units, strict=True):
        if isinstance(u, L1MutableChannelUnit):
            u.set_importance(_l1_importance(dyn.graph_module, spec))
    supernet = Supernet(dyn.graph_module, units, analysis, dyn.bindings, dyn.counters,
                        traced.example_args)  # in the model's mode, as the traced graph
    logger.info("converted %s: %d units in %.3f s", type(model).__name__, len(supernet.units),
                time.perf_counter() - start)
    return supernet


def convert_(model: nn.Module, example_inputs: Any, unit: str | type[MutableChannelUnit]
             = "sequential", unit_args: dict[str, Any] | None = None,
             leaf_modules: Iterable[type | str] = (), module_rules: dict | None = None,
             function_rules: dict | None = None, method_rules: dict | None = None,
             dynamic_ops: dict | None = None, split_dims: str = "largest") -> Supernet:
    """Like :func:`convert`, but the supernet shares ``model``'s layers and weights instead of
    copying them: no second copy of a large model, and training the supernet trains
    ``model``. ``model`` itself may be changed (its ``nn.MultiheadAttention`` layers are
    replaced by equivalent decomposed ones).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> sn = fxrazor.convert_(model, torch.randn(1, 4))
        >>> sn.graph_module.get_submodule("0").weight is model[0].weight
        True
    """
    return _convert(model, example_inputs, unit, unit_args, leaf_modules, module_rules,
                    function_rules, method_rules, dynamic_ops, split_dims, copy_model=False)


def freeze(supernet: Supernet) -> torch.fx.GraphModule:
    """A new plain GraphModule of the supernet's current subnet (see ``passes.freeze``)."""
    if not isinstance(supernet, Supernet):
        raise UnsupportedModelError(
            f"freeze expects a Supernet from fxrazor.convert, got {type(supernet).__name__}"
        )
    with _gc_paused():
        return _freeze(supernet)
