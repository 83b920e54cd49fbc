"""Units that repeat layer after layer, grouped by role, so one width fits every layer.

A transformer has one MLP unit and one attention unit per layer, named by their module
paths: ``model.layers.0.mlp.gate_proj``, ``model.layers.1.mlp.gate_proj``... Writing each
layer's unit by hand is tedious, and a config with one ``intermediate_size`` (Hugging Face)
can only hold a subnet whose layers agree. :func:`layer_groups` groups the mutable units
whose names differ only in their layer indices (the pattern ``model.layers.*.mlp.gate_proj``)
and names each group by its role, read from the words of its pattern: ``"attention"``,
``"mlp"``, ``"hidden"`` (a unit of an embedding, spanning the layers), else the pattern
itself (also where two patterns would share a role, e.g. an encoder's and a decoder's MLP).

:func:`set_layer_widths` sets one width per group on every layer of it, at once;
:func:`tie_layer_groups` makes each group one search choice (a shared value mutable whose
alias is the group's name), so that ``set_choices({"mlp": 48})`` and the samplers of a NAS
loop see one width per role.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    ...     def forward(self, x):
    ...         return x + self.mlp(x)
    >>> model = nn.Sequential(*[Block() for _ in range(3)])
    >>> sn = fxrazor.convert(model, torch.randn(1, 4))
    >>> groups = layer_groups(sn)
    >>> groups["mlp"].pattern, sorted(groups["mlp"].units)
    ('*.mlp.0', ['0', '1', '2'])
    >>> set_layer_widths(sn, {"mlp": 5}); sorted(set(sn.choices().values()))
    [5]
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fxrazor.errors import FxRazorError, InvalidArgumentError, UnknownUnitError
from fxrazor.mutables.mutable_value import OneShotMutableValue
from fxrazor.value_binding import bind_unit, unbind

if TYPE_CHECKING:
    from fxrazor.supernet import Supernet

__all__ = ["LayerGroup", "layer_groups", "group_by_layer", "set_layer_widths",
           "tie_layer_groups", "ROLE_WORDS"]

logger = logging.getLogger(__name__)

# Words of a unit's path (after its last layer index) that name its role, in the order
# tried: an attention block's MLP-like projections (BERT's ``attention.output.dense``)
# must read as attention, so attention comes first.
ROLE_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("attn", "attention")),
    ("mlp", ("mlp", "intermediate", "ffn", "feed_forward", "feedforward", "fc1")),
    ("hidden", ("embed",)),
)

_INDEX = re.compile(r"^\d+$")


@dataclass(frozen=True)
class LayerGroup:
    """The units of one role, one per layer.

    Attributes:
        name: the group's key (its role, or its pattern where two patterns share a role).
        pattern: the unit names with the layer index as ``*`` (see :func:`group_by_layer`).
        units: ``{layer index: unit name}`` in graph order; a group of one unit without a
            layer index has the key ``""``.
    """

    name: str
    pattern: str
    units: dict[str, str] = field(default_factory=dict)

    def widths(self, supernet: Supernet) -> dict[str, int]:
        """``{layer index: kept channels}`` of every unit of the group now."""
        return {layer: supernet.unit(unit).activated_channels
                for layer, unit in self.units.items()}


def group_by_layer(names: list[str]) -> dict[str, dict[str, str]]:
    """``{pattern: {layer index: name}}`` of unit or module paths that differ only in one
    layer index: the first all-digit part of the path whose value varies among paths of
    the same shape (the same parts but digits) becomes ``*``; other digit parts stay (a
    block's ``mlp.0`` and ``mlp.2`` are two patterns). A path without such a part is a
    group of its own, keyed by itself, with the index ``""``.

    Example:
        >>> group_by_layer(["m.layers.0.mlp.0", "m.layers.0.mlp.2", "m.layers.1.mlp.0",
        ...                 "m.layers.1.mlp.2", "m.embed"])  # doctest: +NORMALIZE_WHITESPACE
        {'m.layers.*.mlp.0': {'0': 'm.layers.0.mlp.0', '1': 'm.layers.1.mlp.0'},
         'm.layers.*.mlp.2': {'0': 'm.layers.0.mlp.2', '1': 'm.layers.1.mlp.2'},
         'm.embed': {'': 'm.embed'}}
    """
    shapes: dict[tuple[str, ...], list[list[str]]] = {}
    for name in names:
        parts = name.split(".")
        shapes.setdefault(tuple("*" if _INDEX.match(p) else p for p in parts), []).append(parts)
    groups: dict[str, dict[str, str]] = {}
    for shape, members in shapes.items():
        varying = [i for i, p in enumerate(shape)
                   if p == "*" and len({m[i] for m in members}) > 1]
        for parts in members:
            if not varying:
                groups.setdefault(".".join(parts), {})[""] = ".".join(parts)
                continue
            at = varying[0]
            pattern = ".".join([*parts[:at], "*", *parts[at + 1:]])
            groups.setdefault(pattern, {})[parts[at]] = ".".join(parts)
    return groups


def _role(pattern: str) -> str | None:
    tail = pattern.rsplit("*", 1)[-1].lower()  # the block's own words, not its container's
    for role, words in ROLE_WORDS:
        if any(word in tail for word in words):
            return role
    return None


def layer_groups(supernet: Supernet) -> dict[str, LayerGroup]:
    """The supernet's mutable units grouped by pattern, keyed by role (see module doc).

    Units bound to a value mutable (by :func:`tie_layer_groups` or ``bind_unit``) are not
    mutable units any more, so they are left out: their choice is the mutable's.
    """
    patterns = group_by_layer([u.name for u in supernet.units])
    roles = {pattern: _role(pattern) for pattern in patterns}
    taken = [r for r in roles.values() if r is not None]
    groups = {}
    for pattern, units in patterns.items():
        role = roles[pattern]
        # a role shared by two patterns would hide which is meant: use the patterns
        name = role if role is not None and taken.count(role) == 1 else pattern
        groups[name] = LayerGroup(name, pattern, units)
    return groups


def _unknown_group(supernet: Supernet, key: str, groups: dict[str, LayerGroup]) -> FxRazorError:
    return UnknownUnitError(
        f"set_layer_widths: no layer group or search group {key!r}; the layer groups are "
        f"{sorted(groups)} (see fxrazor.layer_groups.layer_groups) and the choices are "
        f"{sorted(supernet.choices())[:20]}")


def set_layer_widths(supernet: Supernet, widths: dict[str, Any]) -> None:
    """Give every unit of each named group the same choice, at once: ``{group: choice}``
    (a group of :func:`layer_groups`, or a search group made by :func:`tie_layer_groups`,
    passed on as is). The choice is what each unit takes (a channel count for the default
    units; whole heads of an attention unit under ``split_dims="outer"``). Every key is
    checked before any is set (``Supernet.set_choices``).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
        ...                      torch.randn(1, 4))
        >>> set_layer_widths(sn, {"0": 3}); sn.choices()
        {'0': 3}
    """
    if not isinstance(widths, dict):
        raise InvalidArgumentError(
            f"set_layer_widths takes {{group: choice}}, got {type(widths).__name__}")
    groups = layer_groups(supernet)
    choices: dict[str, Any] = {}
    for key, choice in widths.items():
        if key in groups:
            choices.update(dict.fromkeys(groups[key].units.values(), choice))
        elif key in supernet.choices():
            choices[key] = choice
        else:
            raise _unknown_group(supernet, key, groups)
    supernet.set_choices(choices)


def tie_layer_groups(supernet: Supernet, names: list[str] | None = None,
                     choices: dict[str, list[int]] | None = None) -> dict[str, list[str]]:
    """Make each layer group one search choice: its units follow one shared
    ``OneShotMutableValue`` whose alias is the group's name, so ``choices()`` has one entry
    per group and ``set_choices({"mlp": 48})`` sets every layer's MLP width. The value
    counts the units' channels (whole heads for an attention unit split by heads).

    Args:
        supernet: a supernet from ``fxrazor.convert``; changed in place.
        names: the groups to tie (default: every group of more than one unit).
        choices: ``{group: candidate widths}``; by default every width from 1 to the
            units' channel count. The group starts at its largest candidate.

    Returns:
        ``{group: the keys its units were bound under}`` (pass one to
        ``fxrazor.value_binding.unbind`` to untie that unit again).

    Raises:
        UnknownUnitError: a name is not a layer group.
        InvalidArgumentError: a group's units differ in channel count.
        InvalidChoiceError: a candidate does not fit the units (nothing is tied then).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
        ...     def forward(self, x):
        ...         return x + self.mlp(x)
        >>> sn = fxrazor.convert(nn.Sequential(Block(), Block()), torch.randn(1, 4))
        >>> tie_layer_groups(sn, choices={"mlp": [4, 8]})
        {'mlp': ['0.mlp.0.width', '1.mlp.0.width']}
        >>> sn.set_choices({"mlp": 4}); sn.choices(), sn.unit("1.mlp.0").activated_channels
        ({'mlp': 4}, 4)
    """
    groups = layer_groups(supernet)
    wanted = names if names is not None else [k for k, g in groups.items() if len(g.units) > 1]
    unknown = [n for n in [*wanted, *(choices or {})] if n not in groups]
    if unknown:
        raise UnknownUnitError(f"tie_layer_groups: no layer group(s) {unknown}; the groups "
                               f"are {sorted(groups)}")
    plans = []
    for name in wanted:
        units = [supernet.unit(u) for u in groups[name].units.values()]
        sizes = {u.name: u.num_channels for u in units}
        if len(set(sizes.values())) > 1:
            raise InvalidArgumentError(
                f"tie_layer_groups: the units of group {name!r} differ in channel count "
                f"({sizes}), so one width cannot fit them all; tie a subset by "
                f"fxrazor.value_binding.bind_unit with one mutable")
        width = units[0].num_channels
        values = list((choices or {}).get(name) or range(1, width + 1))
        plans.append((name, [u.name for u in units], OneShotMutableValue(values, alias=name)))
    done: list[str] = []
    tied: dict[str, list[str]] = {}
    try:  # bind_unit checks each value; on a refusal, untie what this call tied
        for name, unit_names, mutable in plans:
            tied[name] = []
            for unit_name in unit_names:
                done.append(bind_unit(supernet, unit_name, mutable))
                tied[name].append(done[-1])
    except FxRazorError:
        for key in reversed(done):
            unbind(supernet, key)
        raise
    logger.info("tied layer groups %s", {k: len(v) for k, v in tied.items()})
    return tied
