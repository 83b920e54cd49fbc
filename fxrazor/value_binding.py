"""Value mutables that drive a supernet: kernel sizes, expand ratios, head counts.

The BigNAS / AutoFormer search spaces search more than free channel widths: a depthwise
conv's kernel size, a block's expand ratio, an attention layer's head count. Each is a
value mutable (``OneShotMutableValue``, or a ``DerivedMutable`` of one) bound to a place
of a converted supernet:

- :func:`bind_value` binds it to a layer attribute (``kernel_size`` of a convolution: the
  conv runs the centre crop of its kernel, padding shrunk to stay "same");
- :func:`bind_unit` binds it to a channel unit, whose width (in unit channels: a channel,
  or a whole attention head under ``split_dims="outer"``) then follows the mutable's
  current choice (times ``scale``): the hidden unit of an inverted-residual block follows
  ``expand_ratio * in_channels``, a head unit follows a head count.

Setting ``mutable.current_choice`` is all the next ``supernet(x)`` needs (the conv reads
it at every forward; the unit's mask, read by ``Supernet.sync``, follows it).

Every bound mutable is recorded in ``supernet.__dict__["_fxr_value_mutables"]`` (read it
with :func:`value_mutables`) under a stable key: ``f"{layer}.{attr}"`` for a layer
attribute, ``f"{unit}.{attr}"`` for a unit (``attr`` as the caller gave it: ``width``,
``expand_ratio``, ``heads``); one mutable may sit under several keys (shared values). A
key may hold a ``DerivedMutable``: its searchable values are its ``source_mutables``. A
bound unit reports ``is_mutable == False`` (it leaves ``supernet.units`` and
``supernet.choices()``) and has ``unit.driven_by``, the mutable.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 5, padding=2, groups=8),
    ...                       nn.Conv2d(8, 4, 1))
    >>> x = torch.randn(1, 3, 6, 6)
    >>> sn = fxrazor.convert(model, x)
    >>> kernel, width = OneShotMutableValue([3, 5]), OneShotMutableValue([4, 8])
    >>> bind_value(sn, "1", "kernel_size", kernel), bind_unit(sn, "0", width)
    ('1.kernel_size', '0.width')
    >>> kernel.current_choice, width.current_choice = 3, 4
    >>> frozen = fxrazor.freeze(sn)
    >>> frozen.get_submodule("1")
    Conv2d(4, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), groups=4)
    >>> torch.allclose(frozen(x), sn(x))
    True
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from fxrazor.errors import FxRazorError, InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.base import BaseMutable
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.value_channel import ValueDrivenChannel, width_of
from fxrazor.mutators.groups import build_search_groups
from fxrazor.ops.conv import DYNAMIC_CONVS, DynamicConvNd
from fxrazor.ops.kernel import kernel_plan

if TYPE_CHECKING:
    from fxrazor.supernet import Supernet

__all__ = ["bind_value", "bind_unit", "unbind", "value_mutables", "ValueDrivenChannel",
           "LAYER_ATTRS"]

logger = logging.getLogger(__name__)

REGISTRY = "_fxr_value_mutables"  # the supernet attribute the mutators read (see module doc)

# What bind_value can search, by attribute: the static layer types that take it.
LAYER_ATTRS: dict[str, tuple[type[nn.Module], ...]] = {
    "kernel_size": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}

# Combinations of a derived mutable's sources tried at bind time; beyond, only the current
_MAX_COMBINATIONS = 4096  # value is checked (and every value again when it is used)


def value_mutables(supernet: Supernet) -> dict[str, BaseMutable]:
    """``{key: mutable}`` of every value mutable bound to ``supernet`` (a copy).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 2, 2))
        >>> value_mutables(sn)
        {}
    """
    return dict(supernet.__dict__.get(REGISTRY, {}))


def _check_supernet(supernet: Any, verb: str) -> None:
    if not hasattr(supernet, "graph_module") or not hasattr(supernet, "every_unit"):
        raise InvalidArgumentError(
            f"{verb} needs a Supernet from fxrazor.convert, got {type(supernet).__name__}")


def _check_mutable(mutable: Any, where: str) -> None:
    if not isinstance(mutable, BaseMutable):
        raise InvalidArgumentError(
            f"{where}: the value must be a mutable (e.g. OneShotMutableValue([3, 5, 7]) or a "
            f"DerivedMutable of one), got {type(mutable).__name__}: {mutable!r}")


def _possible_values(mutable: BaseMutable) -> list[Any]:
    """Every value ``mutable`` can take, where its sources list their choices (tried one
    by one and put back); else just its current value."""
    if isinstance(mutable, DerivedMutable):
        sources = sorted(mutable.source_mutables, key=id)
        lists = [getattr(s, "choices", None) for s in sources]
        sizes = [len(c) if isinstance(c, list) else 0 for c in lists]
        if not sources or 0 in sizes or math.prod(sizes) > _MAX_COMBINATIONS:
            return [mutable.current_choice]
        saved = [s.current_choice for s in sources]
        values = []
        try:
            for combo in itertools.product(*[c for c in lists if isinstance(c, list)]):
                for source, choice in zip(sources, combo, strict=True):
                    source.current_choice = choice
                values.append(mutable.current_choice)
        finally:
            for source, choice in zip(sources, saved, strict=True):
                source.current_choice = choice
        return values
    choices = getattr(mutable, "choices", None)
    return list(choices) if isinstance(choices, list) else [mutable.current_choice]


# ---- layer attributes ----------------------------------------------------------------------
def bind_value(supernet: Supernet, target: str, attr: str, mutable: BaseMutable) -> str:
    """Make layer ``target``'s attribute ``attr`` follow ``mutable.current_choice``.

    ``attr="kernel_size"`` on a (grouped, depthwise) ``Conv1d/2d/3d``: the choices are
    kernel sizes no larger than the layer's, of its parity; the conv runs the centre
    ``k``-wide crop of its kernel with padding ``dilation * (k - 1) / 2`` (it must be
    "same"-padded), and freezes to a plain conv of kernel ``k``. Every value the mutable
    can take is checked first: on any error nothing is changed.

    Args:
        supernet: a supernet from ``fxrazor.convert``.
        target: the layer's path in the graph (``supernet.graph_module``), e.g.
            ``"blocks.0.dw"``.
        attr: the attribute (:data:`LAYER_ATTRS` lists them).
        mutable: a value mutable, or a ``DerivedMutable`` of value mutables.

    Returns:
        The key it is recorded under, ``f"{target}.{attr}"``.

    Raises: InvalidArgumentError for an unknown layer or attribute, a layer that cannot
        search it, a key already bound, or a value the layer cannot take.
    """
    _check_supernet(supernet, "bind_value")
    key = f"{target}.{attr}"
    _check_mutable(mutable, f"bind_value({key!r})")
    if attr not in LAYER_ATTRS:
        raise InvalidArgumentError(
            f"bind_value({key!r}, {mutable!r}): {attr!r} is not a searchable layer "
            f"attribute; the attributes are {sorted(LAYER_ATTRS)} (widths, expand ratios and "
            f"head counts are units: use bind_unit)")
    try:
        layer = supernet.graph_module.get_submodule(target)
    except AttributeError as e:
        raise InvalidArgumentError(
            f"bind_value({key!r}, {mutable!r}): the supernet's graph has no layer {target!r}; "
            f"give a path of supernet.graph_module.named_modules()") from e
    kinds = LAYER_ATTRS[attr]
    static_type = getattr(layer, "static_type", type(layer))
    if type(layer) not in kinds and not (isinstance(layer, DynamicConvNd)
                                         and static_type in kinds):
        raise InvalidArgumentError(
            f"bind_value({key!r}, {mutable!r}): layer {target!r} is a {static_type.__name__}; "
            f"{attr!r} can be searched on {[k.__name__ for k in kinds]} only")
    if key in supernet.__dict__.get(REGISTRY, {}) or (
            isinstance(layer, DynamicConvNd) and attr in layer.mutable_attrs):
        raise InvalidArgumentError(
            f"bind_value({key!r}, {mutable!r}): {key!r} is already bound; "
            f"call unbind(supernet, {key!r}) first")
    try:
        for value in _possible_values(mutable):
            _check_kernel(cast(nn.modules.conv._ConvNd, layer), value)
    except FxRazorError as e:
        raise InvalidArgumentError(
            f"bind_value({key!r}, {mutable!r}): {e}; choose values the layer can take, or "
            f"bind another layer") from e
    _check_alias(supernet, key, mutable)
    if isinstance(layer, DynamicConvNd):
        layer.register_mutable_attr(attr, mutable, key)
    else:  # a layer no unit touched is still static: put its dynamic op in
        op = DYNAMIC_CONVS[type(layer)].from_static(layer)
        cast(DynamicConvNd, op).register_mutable_attr(attr, mutable, key)
        supernet.replace_layer(target, cast(nn.Module, op))
    supernet.__dict__.setdefault(REGISTRY, {})[key] = mutable  # the mutators' record
    logger.debug("bound %s to %r", key, mutable)
    supernet.sync_value_modules()  # the module walk of export/load_fix_subnet sees it
    return key


def _check_kernel(conv: nn.modules.conv._ConvNd, value: Any) -> None:
    """Check one value as the op's forward will (the same planning)."""
    try:
        kernel_plan(conv, value)
    except FxRazorError as e:
        raise InvalidChoiceError(f"the value {value!r}: {e}") from e


# ---- units ----------------------------------------------------------------------------------
def bind_unit(supernet: Supernet, unit_name: str, mutable: BaseMutable, attr: str = "width",
              scale: int = 1) -> str:
    """Make unit ``unit_name`` keep ``mutable.current_choice * scale`` of its channels.

    Widths count unit channels: a channel, or a whole head of an attention unit under
    ``split_dims="outer"``. For an expand ratio pass the ratio mutable and
    ``scale=in_channels`` (the key then holds the ratio itself), or a ``DerivedMutable``
    for a width that depends on other choices. The unit leaves ``supernet.units``; it is
    not searched by ``set_choices`` any more. Every value the mutable can take is checked
    first: on any error nothing is changed.

    Args:
        supernet: a supernet from ``fxrazor.convert``.
        unit_name: a unit's name (``[u.name for u in supernet.units]``).
        mutable: a value mutable, or a ``DerivedMutable`` of value mutables.
        attr: what the value means, for the key: ``"width"``, ``"expand_ratio"``,
            ``"heads"``...
        scale: channels per unit of the value (a positive int).

    Returns:
        The key it is recorded under, ``f"{unit_name}.{attr}"``.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 24), nn.ReLU(), nn.Linear(24, 2)),
        ...                      torch.randn(1, 4))
        >>> ratio = OneShotMutableValue([3, 6])
        >>> bind_unit(sn, "0", ratio, attr="expand_ratio", scale=4)
        '0.expand_ratio'
        >>> ratio.current_choice = 3
        >>> sn.unit("0").activated_channels, sn.unit("0").is_mutable, sn.units
        (12, False, [])
    """
    _check_supernet(supernet, "bind_unit")
    key = f"{unit_name}.{attr}"
    _check_mutable(mutable, f"bind_unit({key!r})")
    if not isinstance(attr, str) or not attr.isidentifier():
        raise InvalidArgumentError(f"bind_unit: attr must be a name like 'width', got {attr!r}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise InvalidArgumentError(f"bind_unit({key!r}): scale must be a positive int, "
                                   f"got {scale!r}")
    unit = next((u for u in supernet.every_unit() if u.name == unit_name), None)
    if unit is None:
        names = [u.name for u in supernet.units]
        raise InvalidArgumentError(
            f"bind_unit({key!r}, {mutable!r}): the supernet has no unit {unit_name!r}; its "
            f"searchable units are {names[:20]}{' ...' if len(names) > 20 else ''}")
    if "driven_by" in unit.__dict__ or key in supernet.__dict__.get(REGISTRY, {}):
        bound = getattr(unit.mutable_channel, "key", key)
        raise InvalidArgumentError(
            f"bind_unit({key!r}): unit {unit_name!r} is already driven by "
            f"{unit.__dict__.get('driven_by')!r}; call unbind(supernet, {bound!r}) first")
    if unit.is_fixed:
        raise InvalidArgumentError(
            f"bind_unit({key!r}, {mutable!r}): unit {unit_name!r} is fixed at "
            f"{unit.current_choice!r}; a value cannot drive it")
    where = f"bind_unit({key!r}): unit {unit_name!r} ({unit.num_channels} channels) " \
            f"driven by {mutable!r}"
    for value in _possible_values(mutable):
        width_of(value, scale, unit.num_channels, lambda: where)
    old = unit.mutable_channel
    _check_alias(supernet, key, mutable, leaving=unit.name)
    channel = ValueDrivenChannel(unit.num_channels, mutable, key, scale,
                                 getattr(old, "choice_mode", "number"))
    channel.__dict__["replaced"] = old  # put back by unbind
    # the unit's attribute is typed as its default channel; any channel mutable drives it
    unit.mutable_channel = channel  # type: ignore[assignment]
    channel.name = unit.name
    unit.__dict__["driven_by"] = mutable
    supernet.__dict__.setdefault(REGISTRY, {})[key] = mutable  # the mutators' record
    logger.debug("bound unit %s to %r", key, mutable)
    supernet.sync_value_modules()  # the module walk of export/load_fix_subnet sees it
    return key


def _check_alias(supernet: Supernet, key: str, mutable: BaseMutable, leaving: str = "") -> None:
    """Raise ``AliasConflictError`` before anything changes when ``mutable`` would join an
    alias group it cannot share a choice with (other candidates, another kind), or take a
    key that names something else."""
    values = {**supernet.__dict__.get(REGISTRY, {}), key: mutable}
    build_search_groups(supernet.graph_module, values,
                        reserved=[u.name for u in supernet.units if u.name != leaving])


def unbind(supernet: Supernet, key: str) -> None:
    """Undo :func:`bind_value` or :func:`bind_unit` of ``key``: the layer takes its full
    kernel again, the unit its own choice (its previous one) and a place in
    ``supernet.units``.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> from fxrazor.mutables.mutable_value import OneShotMutableValue
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
        ...                      torch.randn(1, 4))
        >>> key = bind_unit(sn, "0", OneShotMutableValue([2, 8]))
        >>> unbind(sn, key); [u.name for u in sn.units], value_mutables(sn)
        (['0'], {})
    """
    _check_supernet(supernet, "unbind")
    registry = supernet.__dict__.get(REGISTRY, {})
    if key not in registry:
        raise InvalidArgumentError(f"unbind: {key!r} is not bound; bound keys are "
                                   f"{sorted(registry)}")
    for unit in supernet.every_unit():
        channel = unit.mutable_channel
        if isinstance(channel, ValueDrivenChannel) and channel.key == key:
            unit.mutable_channel = channel.__dict__["replaced"]
            del unit.__dict__["driven_by"]
            break
    else:
        target, _, attr = key.rpartition(".")
        layer = supernet.graph_module.get_submodule(target)
        if isinstance(layer, DynamicConvNd):
            layer.register_mutable_attr(attr, None)
    del registry[key]
    supernet.sync_value_modules()  # the module walk of export/load_fix_subnet sees it
    supernet._last_mask = None  # push every selection again on the next forward
