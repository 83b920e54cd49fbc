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

import copy
import gc
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from fxrazor.analysis.context import FunctionRule, ModuleRule
from fxrazor.analysis.result import UnitSpec
from fxrazor.errors import (
    FxRazorError,
    InvalidArgumentError,
    InvalidChoiceError,
    UnsupportedModelError,
)
from fxrazor.layers import LayerRecord, UnitWeights, layer_table
from fxrazor.mutables.base import BaseMutable
from fxrazor.mutables.channel_unit import MutableChannelUnit, SequentialMutableChannelUnit
from fxrazor.mutables.method_units import (
    DCFFChannelUnit,
    DMCPChannelUnit,
    L1MutableChannelUnit,
    SlimmableChannelUnit,
)
from fxrazor.mutables.one_shot_unit import OneShotMutableChannelUnit
from fxrazor.ops import DynamicOp
from fxrazor.passes.discover_units import SPLIT_DIMS, discover_units
from fxrazor.passes.fold_blocks import fold_blocks
from fxrazor.passes.freeze import freeze as _freeze
from fxrazor.passes.insert_dynamic_ops import insert_dynamic_ops
from fxrazor.passes.nas_blocks import op_expander
from fxrazor.structures.subnet import export_fix_subnet
from fxrazor.structures.subnet.subnet_io import to_plain
from fxrazor.supernet import Supernet
from fxrazor.trace.capture import CAPTURE_MODES, capture_model

__all__ = ["convert", "convert_", "freeze", "ConvertOptions", "UNIT_TYPES", "SUBNET_KEY"]

logger = logging.getLogger(__name__)

UNIT_TYPES: dict[str, type[MutableChannelUnit]] = {
    "sequential": SequentialMutableChannelUnit,
    "one_shot": OneShotMutableChannelUnit,
    "slimmable": SlimmableChannelUnit,
    "l1": L1MutableChannelUnit,
    "dcff": DCFFChannelUnit,
    "dmcp": DMCPChannelUnit,
}


@dataclass(frozen=True)
class ConvertOptions:
    """How :func:`convert` and :func:`convert_` build a supernet; checked when made.

    Attributes:
        unit: ``"sequential"``, ``"one_shot"``, ``"slimmable"``, ``"l1"``, ``"dcff"``,
            ``"dmcp"`` or a ``MutableChannelUnit`` subclass.
        unit_args: keyword arguments for every unit (e.g. ``{"choice_mode": "ratio"}``).
        leaf_modules: module types or qualified names to keep as single opaque nodes.
        layers: extra layer records ``{type: fxrazor.layers.LayerRecord}``: a new layer
            type's channel rule, dynamic op, channel dims and shape formula in one place.
        module_rules, function_rules, method_rules: extra channel rules, e.g.
            ``{MyAct: fxrazor.rules.layers.elementwise_module}``.
        dynamic_ops: extra ``{static type: dynamic op type}`` entries.
        split_dims: ``"largest"`` prunes the largest dim of a split channel dim (attention
            head dims); ``"outer"`` prunes the outer one (whole attention heads).
        capture: the front-end: ``"fx"`` (torch.fx symbolic tracing), ``"export"``
            (non-strict ``torch.export``, e.g. Hugging Face models) or ``"auto"`` (fx, then
            export where fx fails in the top-level forward); see ``fxrazor.trace.capture``.

    Example:
        >>> ConvertOptions(unit="l1").unit_type.__name__
        'L1MutableChannelUnit'
        >>> ConvertOptions(split_dims="inner")
        Traceback (most recent call last):
        ...
        fxrazor.errors.InvalidChoiceError: split_dims must be one of ('largest', 'outer'), got 'inner'
    """

    unit: str | type[MutableChannelUnit] = "sequential"
    unit_args: Mapping[str, Any] | None = None
    leaf_modules: Iterable[type | str] = ()
    layers: Mapping[type, LayerRecord] | None = None
    module_rules: Mapping[type, ModuleRule] | None = None
    function_rules: Mapping[Any, FunctionRule] | None = None
    method_rules: Mapping[str, FunctionRule] | None = None
    dynamic_ops: Mapping[type, type[DynamicOp]] | None = None
    split_dims: str = "largest"
    capture: str = "auto"
    unit_type: type[MutableChannelUnit] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit_type", _unit_type(self.unit))
        object.__setattr__(self, "leaf_modules", tuple(self.leaf_modules))
        if self.split_dims not in SPLIT_DIMS:
            raise InvalidChoiceError(
                f"split_dims must be one of {SPLIT_DIMS}, got {self.split_dims!r}")
        if self.capture not in CAPTURE_MODES:
            raise InvalidChoiceError(
                f"capture must be one of {CAPTURE_MODES}, got {self.capture!r}")
        if "mutable_channel" in (self.unit_args or {}):  # one object shared by every unit
            raise InvalidChoiceError(
                "unit_args cannot give a mutable_channel: each unit builds its own; pass a "
                "MutableChannelUnit subclass as unit= to change its type")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> ConvertOptions:
        """The options from keyword arguments, naming any that is not an option."""
        names = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise InvalidArgumentError(
                f"unknown convert option(s) {unknown}; the options are {sorted(names)}")
        return cls(**kwargs)


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


# graph_module.meta key: (model class, a copy of its config) of a model that has a config
# (Hugging Face), so that fxrazor.hf.save_pretrained(sn, directory) needs nothing else
SOURCE_KEY = "source_model"


def _record_source(supernet: Supernet, model: nn.Module) -> None:
    config = getattr(model, "config", None)
    if config is not None and callable(getattr(config, "to_dict", None)):
        supernet.graph_module.meta[SOURCE_KEY] = (type(model), copy.deepcopy(config))


def convert(model: nn.Module, example_inputs: Any, unit: str | type[MutableChannelUnit]
            = "sequential", unit_args: dict[str, Any] | None = None,
            leaf_modules: Iterable[type | str] = (), module_rules: dict | None = None,
            function_rules: dict | None = None, method_rules: dict | None = None,
            dynamic_ops: dict | None = None, split_dims: str = "largest",
            layers: dict[type, LayerRecord] | None = None, capture: str = "auto") -> Supernet:
    """Trace ``model`` and return a supernet whose channel widths are chosen per unit.

    The model is not modified: the supernet owns a copy of it (weights copied on first
    write).

    Args:
        model: any ``nn.Module``.
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        unit, unit_args, leaf_modules, module_rules, function_rules, method_rules,
        dynamic_ops, split_dims, layers, capture: the :class:`ConvertOptions`.

    Returns:
        The :class:`~fxrazor.supernet.Supernet`; at full width its output equals the model's.
    """
    options = ConvertOptions(
        unit=unit, unit_args=unit_args, leaf_modules=leaf_modules, layers=layers,
        module_rules=module_rules, function_rules=function_rules, method_rules=method_rules,
        dynamic_ops=dynamic_ops, split_dims=split_dims, capture=capture)
    return _convert(model, example_inputs, options, copy_model=True)


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
def _convert(model: nn.Module, example_inputs: Any, options: ConvertOptions,
             copy_model: bool) -> Supernet:
    start = time.perf_counter()
    layers = layer_table(options.layers, options.module_rules, options.dynamic_ops)
    # NAS op mutables are traced candidate by candidate (channels flow through them) and
    # folded back below; every other mutable, and any type the user names, stays a leaf
    user_leaves = tuple(t for t in options.leaf_modules if isinstance(t, type))
    traced = capture_model(model, example_inputs, (*options.leaf_modules, BaseMutable),
                           copy_model=copy_model, layers=layers,
                           expand_block=op_expander(user_leaves), capture=options.capture)
    analysis = discover_units(traced, layers, dict(options.function_rules or {}),
                              dict(options.method_rules or {}), options.split_dims)
    # convert's own copies of the layers become the dynamic ops themselves
    dyn = insert_dynamic_ops(traced.graph_module, analysis, layers,
                             user_modules=traced.user_module_ids, modules=traced.modules())
    fold_blocks(dyn.graph_module)  # each op mutable again, its candidates now dynamic
    units = _build_units(analysis.units, options.unit_type, dict(options.unit_args or {}))
    for index, channels, why in analysis.minimums:  # e.g. a router keeps its top k experts
        units[index].min_kept, units[index].min_kept_reason = channels, why
    for spec, unit in zip(analysis.units, units, strict=True):
        unit.prepare_from_weights(UnitWeights(dyn.graph_module, spec, layers))
    supernet = Supernet(dyn.graph_module, units, analysis, dyn.bindings, dyn.counters,
                        traced.example_args)  # in the model's mode, as the traced graph
    _record_source(supernet, model)
    for unit in units:  # method units put in their own layers (a plain unit has nothing to do)
        if type(unit).prepare_for_pruning is not MutableChannelUnit.prepare_for_pruning:
            unit.prepare_for_pruning(supernet)
    logger.info("converted %s: %d units in %.3f s", type(model).__name__, len(supernet.units),
                time.perf_counter() - start)
    return supernet


def convert_(model: nn.Module, example_inputs: Any, unit: str | type[MutableChannelUnit]
             = "sequential", **options: Any) -> Supernet:
    """Like :func:`convert` (same options, by keyword), but the supernet shares ``model``'s
    layers and weights instead of copying them: no second copy of a large model, and
    training the supernet trains ``model``. ``model`` itself may be changed (its
    ``nn.MultiheadAttention`` layers are replaced by equivalent decomposed ones).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> sn = fxrazor.convert_(model, torch.randn(1, 4))
        >>> sn.graph_module.get_submodule("0").weight is model[0].weight
        True
    """
    return _convert(model, example_inputs, ConvertOptions.from_kwargs(unit=unit, **options),
                    copy_model=False)


def freeze(supernet: Supernet) -> torch.fx.GraphModule:
    """A new plain GraphModule of the supernet's current subnet (see ``passes.freeze``)."""
    if not isinstance(supernet, Supernet):
        raise UnsupportedModelError(
            f"freeze expects a Supernet from fxrazor.convert, got {type(supernet).__name__}"
        )
    with _gc_paused():
        frozen = _freeze(supernet)
    _record_subnet(supernet, frozen)
    return frozen


# frozen.meta key: the subnet config (``export_fix_subnet``'s 'mutable' form, plain data) the
# frozen module was cut with, so that ``fxrazor.save(frozen, format="state_dict")`` can
# write what a rebuild needs (``fxrazor.export.load_subnet_state``)
SUBNET_KEY = "fxrazor_subnet"


def _record_subnet(supernet: Supernet, frozen: torch.fx.GraphModule) -> None:
    try:
        frozen.meta[SUBNET_KEY] = to_plain(export_fix_subnet(supernet)[0], "subnet")
    except FxRazorError as e:  # a choice with no plain form: save then needs subnet=...
        logger.debug("freeze: the subnet config is not recorded (%s)", e)
