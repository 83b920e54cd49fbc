"""Search groups: the op and value mutables of a supernet, one group per shared choice.

A mutable without an alias is a group of its own, keyed by its module path (op mutables)
or by the key it was recorded under (value mutables). Mutables that share an ``alias``
form one group keyed by the alias: they take one choice together, so they must offer the
same candidates. Fixed and derived mutables have no choice to make and are left out.

Example:
    >>> from torch import nn
    >>> from fxrazor.mutables.mutable_module import OneShotMutableOP
    >>> model = nn.Sequential(OneShotMutableOP({"a": nn.ReLU(), "b": nn.Identity()}),
    ...                       OneShotMutableOP({"a": nn.ReLU(), "b": nn.Identity()}, alias="x"),
    ...                       OneShotMutableOP({"a": nn.ReLU(), "b": nn.Identity()}, alias="x"))
    >>> [(g.key, g.paths) for g in build_search_groups(model)]
    [('0', ['0']), ('x', ['1', '2'])]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from torch import nn

from fxrazor.errors import AliasConflictError, InvalidArgumentError
from fxrazor.mutables.base import BaseMutable
from fxrazor.mutables.derived_mutable import DerivedMutable
from fxrazor.mutables.mutable_module import DiffMutableModule, MutableModule

__all__ = ["SearchGroup", "build_search_groups", "param_name"]


@dataclass
class SearchGroup:
    """Mutables that take one choice together.

    Attributes:
        key: the group's key in a choices dict (the alias, else the path or record key).
        kind: ``"module"`` (op mutables, found in the graph) or ``"value"`` (recorded).
        paths: where each member sits (module path, or the key it was recorded under).
        mutables: the members, in the order of ``paths``.
        alias: the shared alias, or None for a group of one.
        synonyms: other keys a member value mutable was recorded under.
    """

    key: str
    kind: str
    paths: list[str] = field(default_factory=list)
    mutables: list[BaseMutable] = field(default_factory=list)
    alias: str | None = None
    synonyms: list[str] = field(default_factory=list)

    @property
    def first(self) -> Any:
        """The member whose state stands for the group (all members agree)."""
        return self.mutables[0]

    @property
    def is_diff(self) -> bool:
        """Whether the group is of differentiable op mutables (one arch param)."""
        return isinstance(self.first, DiffMutableModule)

    @property
    def candidates(self) -> list[Any]:
        """The candidate choices of the group (candidate names for op mutables)."""
        return list(self.first.choices)

    def describe(self) -> str:
        """Name the group for messages: its key, and its members' paths and class."""
        kind = type(self.first).__name__
        where = self.paths[0] if len(self.paths) == 1 else f"alias group of {self.paths}"
        return f"{self.key!r} ({kind} at {where})" if where != self.key else f"{self.key!r} ({kind})"


def param_name(key: str) -> str:
    """The name of a group's entry in an ``nn.ParameterDict`` (which refuses dots).

    Example:
        >>> param_name("cells.0.node1")
        'cells:0:node1'
    """
    return key.replace(".", ":")


def _signature(mutable: Any) -> tuple[Any, ...]:
    """What members of one alias group must share: family, candidates, and for routes the
    number of edges chosen (a choice is a list of that many)."""
    family = ("diff" if isinstance(mutable, DiffMutableModule) else
              "op" if isinstance(mutable, MutableModule) else "value")
    return family, tuple(mutable.choices), getattr(mutable, "num_chosen", None)


def _searchable(mutable: Any) -> bool:
    return not mutable.is_fixed and not isinstance(mutable, DerivedMutable)


def _entries(root: nn.Module, values: Mapping[str, Any]) -> tuple[
        list[tuple[str, str, BaseMutable]], dict[str, str]]:
    """``(kind, path, mutable)`` per distinct searchable mutable, ops first (module order)
    then values (record order); plus ``{other record key: first key}`` for a value
    mutable recorded under several keys."""
    entries: list[tuple[str, str, BaseMutable]] = []
    seen: dict[int, str] = {}
    for path, module in root.named_modules():
        if path and isinstance(module, MutableModule) and _searchable(module):
            entries.append(("module", path, module))
            seen[id(module)] = path
    synonyms: dict[str, str] = {}
    for key, mutable in values.items():
        if not isinstance(key, str) or not isinstance(mutable, BaseMutable):
            raise InvalidArgumentError(
                f"value mutables must be recorded as {{str key: mutable}}; got {key!r}: "
                f"{type(mutable).__name__}")
        if id(mutable) in seen:
            synonyms[key] = seen[id(mutable)]
        elif _searchable(mutable):
            entries.append(("value", key, mutable))
            seen[id(mutable)] = key
    return entries, synonyms


def build_search_groups(root: nn.Module, values: Mapping[str, Any] | None = None,
                        reserved: Iterable[str] = ()) -> list[SearchGroup]:
    """The search groups of the op mutables inside ``root`` and of ``values``.

    Args:
        root: the module searched for op mutables (``MutableModule`` instances); paths are
            relative to it.
        values: ``{record key: value mutable}``; one mutable may appear under several keys
            (the first names its group).
        reserved: keys already taken (channel unit names); a group key equal to one is an
            error, as the two could not be told apart in one choices dict.

    Raises:
        AliasConflictError: members of an alias group differ in kind or candidates, or an
            alias is also another group's key or a reserved key.
    """
    entries, synonyms = _entries(root, values or {})
    groups: dict[str, SearchGroup] = {}
    for kind, path, mutable in entries:
        alias = getattr(mutable, "alias", None)
        key = alias if alias is not None else path
        group = groups.get(key)
        if group is None:
            groups[key] = group = SearchGroup(key, kind, alias=alias)
        elif alias is None or group.alias != alias:  # one key for two unrelated mutables
            raise AliasConflictError(
                f"search group key {key!r} names both {type(group.first).__name__} at "
                f"{group.paths[0]!r} and {type(mutable).__name__} at {path!r} (an alias "
                f"equal to another mutable's path or record key); rename the alias")
        group.paths.append(path)
        group.mutables.append(mutable)
    for group in groups.values():
        _check_alias_group(group)
    taken = sorted(set(reserved) & set(groups))
    if taken:
        raise AliasConflictError(
            f"search group keys {taken} are also channel unit names; give those mutables "
            f"another alias")
    diff_names: dict[str, str] = {}
    for group in groups.values():
        if group.is_diff:
            other = diff_names.setdefault(param_name(group.key), group.key)
            if other != group.key:
                raise InvalidArgumentError(
                    f"search groups {other!r} and {group.key!r} would share the arch param "
                    f"name {param_name(group.key)!r} (dots become ':'); rename an alias")
    for group in groups.values():
        group.synonyms = [k for k, v in synonyms.items() if v in group.paths]
    return list(groups.values())


def _check_alias_group(group: SearchGroup) -> None:
    first = _signature(group.first)
    for path, mutable in zip(group.paths[1:], group.mutables[1:], strict=True):
        if _signature(mutable) != first:
            raise AliasConflictError(
                f"alias {group.key!r} groups mutables that cannot share one choice: "
                f"{type(group.first).__name__} at {group.paths[0]!r} has candidates "
                f"{group.candidates}, {type(mutable).__name__} at {path!r} has "
                f"{list(cast(Any, mutable).choices)}"
                + (f" (num_chosen {group.first.num_chosen} vs {mutable.num_chosen})"
                   if hasattr(mutable, "num_chosen") and hasattr(group.first, "num_chosen")
                   else "")
                + "; give them the same kind and candidates (in the same order) or "
                  "different aliases")
