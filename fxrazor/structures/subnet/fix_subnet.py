"""Export the chosen subnet of a supernet, and load (fix) a subnet into a supernet.

A subnet config is a plain dict ``{key: {'chosen': value, 'meta': {...}}}`` that can be
written as YAML or JSON. The key of a mutable is its ``alias`` when it has one, else its
module name in the model.

Models can take over both directions by defining two methods (the compiler's supernet
does so): ``model._fxr_dump_subnet() -> dict`` returns the config that
:func:`export_fix_subnet` hands back, and ``model._fxr_load_subnet(cfg: dict) -> None``
fixes the model to ``cfg`` when :func:`load_fix_subnet` is called.

Example:
    >>> from fxrazor.mutables.base import DumpChosen
    >>> convert_fix_subnet({"op": DumpChosen("conv3x3", {"all_choices": ["conv3x3"]})})
    {'op': {'chosen': 'conv3x3', 'meta': {'all_choices': ['conv3x3']}}}
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import nn

from fxrazor.errors import AliasConflictError, InvalidArgumentError, SubnetConfigError
from fxrazor.mutables.base import BaseMutable
from fxrazor.structures.subnet.subnet_io import (
    _split_chosen,
    convert_fix_subnet,
    read_subnet_file,
    save_fix_subnet,
    to_plain,
)

__all__ = [
    "export_fix_subnet",
    "load_fix_subnet",
    "convert_fix_subnet",
    "save_fix_subnet",
]

logger = logging.getLogger(__name__)

_MODES = ("mutable", "mutator")
# Mutables with no choice of their own: they follow other (source) mutables.
_FOLLOWER_CLASS_NAMES = frozenset({"DerivedMutable", "MutableChannelContainer"})
_DUMP_METHOD = "_fxr_dump_subnet"
_LOAD_METHOD = "_fxr_load_subnet"


def _is_source_mutable(module: nn.Module) -> bool:
    """Whether ``module`` is a mutable that owns its choice (not derived from others)."""
    if not isinstance(module, BaseMutable):
        return False
    if any(cls.__name__ in _FOLLOWER_CLASS_NAMES for cls in type(module).__mro__):
        return False
    # Only an explicit boolean False counts: some classes define a same-named helper method.
    return getattr(module, "is_source_mutable", True) is not False


def _source_mutables(model: nn.Module) -> Iterator[tuple[str, str, BaseMutable]]:
    """Yield ``(key, module_name, mutable)`` for every source mutable of ``model``."""
    for name, module in model.named_modules():
        if _is_source_mutable(module):
            alias = getattr(module, "alias", None)
            yield (alias if alias else name), name, module


def _check_mode(mode: str, argument: str, model: nn.Module, protocol: str) -> bool:
    """Validate ``mode``; return whether the model's own ``protocol`` method should run."""
    if mode not in _MODES:
        raise InvalidArgumentError(f"{argument} must be one of {list(_MODES)}, got {mode!r}.")
    has_protocol = callable(getattr(model, protocol, None))
    if mode == "mutator" and not has_protocol:
        raise InvalidArgumentError(
            f"{argument}='mutator' needs a model that defines {protocol}() (a compiled "
            f"supernet); {type(model).__name__} does not. Use {argument}='mutable'."
        )
    return has_protocol


def _dump_mutables(model: nn.Module) -> dict[str, Any]:
    """Dump every source mutable of ``model``; aliased mutables must agree."""
    exported: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for key, name, mutable in _source_mutables(model):
        dumped = mutable.dump_chosen()
        chosen, meta = _split_chosen(dumped)
        entry = {"chosen": to_plain(chosen, where=name), "meta": to_plain(meta, where=name)}
        if key in exported:
            if exported[key]["chosen"] != entry["chosen"]:
                raise AliasConflictError(
                    f"mutables {owners[key]!r} and {name!r} share alias {key!r} but chose "
                    f"{exported[key]['chosen']!r} and {entry['chosen']!r}; set the same "
                    "choice on both before exporting."
                )
            continue
        exported[key] = entry
        owners[key] = name
    return exported


_Sliced = tuple[dict[str, Any], dict[str, Any]]


@overload
def export_fix_subnet(
    model: nn.Module,
    export_subnet_mode: str = ...,
    slice_weight: Literal[False] = ...,
    export_channel: bool = ...,
) -> dict[str, Any]: ...


@overload
def export_fix_subnet(
    model: nn.Module,
    export_subnet_mode: str = ...,
    *,
    slice_weight: Literal[True],
    export_channel: bool = ...,
) -> _Sliced: ...


@overload
def export_fix_subnet(
    model: nn.Module,
    export_subnet_mode: str,
    slice_weight: Literal[True],
    export_channel: bool = ...,
) -> _Sliced: ...


@overload
def export_fix_subnet(
    model: nn.Module,
    export_subnet_mode: str = ...,
    slice_weight: bool = ...,
    export_channel: bool = ...,
) -> dict[str, Any] | _Sliced: ...


def export_fix_subnet(
    model: nn.Module,
    export_subnet_mode: str = "mutable",
    slice_weight: bool = False,
    export_channel: bool = False,
) -> dict[str, Any] | _Sliced:
    """Export the subnet that ``model`` has chosen now, as a plain dict.

    A model that defines ``_fxr_dump_subnet()`` exports itself; otherwise every source
    mutable is stored as ``{key: {'chosen': ..., 'meta': ...}}`` with ``key`` its alias or
    module name. Derived mutables and channel containers are skipped: they have no choice
    of their own and follow their sources. Mutables with ``is_source_mutable = False``
    are skipped too.

    Args:
        model: the supernet; it is not modified.
        export_subnet_mode: ``'mutable'`` (dump each mutable) or ``'mutator'`` (only for
            models that define ``_fxr_dump_subnet``, which then decides).
        slice_weight: also return the weights of the fixed subnet.
        export_channel: accepted for signature compatibility. Channel mutables are source
            mutables, so they are always exported; the flag changes nothing.

    Returns:
        The config; with ``slice_weight=True`` a tuple ``(config, state_dict)`` where
        ``state_dict`` belongs to a deep copy of ``model`` with every mutable fixed to
        the config, i.e. holds only the weights the subnet uses.

    Raises:
        AliasConflictError: if mutables that share an alias chose different values.
        InvalidArgumentError: for an unknown mode, or a choice that is not plain data.

    Example:
        >>> from torch import nn
        >>> export_fix_subnet(nn.Linear(2, 2))  # no mutables: an empty subnet
        {}
    """
    del export_channel  # see the docstring: channel mutables are always exported
    if _check_mode(export_subnet_mode, "export_subnet_mode", model, _DUMP_METHOD):
        fix_subnet = to_plain(getattr(model, _DUMP_METHOD)(), where=f"{_DUMP_METHOD}()")
    else:
        fix_subnet = _dump_mutables(model)
    if not slice_weight:
        return fix_subnet
    static_model = copy.deepcopy(model)
    load_fix_subnet(static_model, fix_subnet, load_subnet_mode=export_subnet_mode)
    return fix_subnet, static_model.state_dict()


def _rename_key(key: str, prefix: str, extra_prefix: str) -> str:
    if prefix and key.startswith(prefix):
        key = key[len(prefix) :]
    return extra_prefix + key


def _match_config(
    model: nn.Module, cfg: Mapping[str, Any], prefix: str, extra_prefix: str
) -> list[tuple[str, BaseMutable, Any]]:
    """Pair each source mutable with its config value; raise listing every mismatch."""
    aliases = {m.alias for _, _, m in _source_mutables(model) if getattr(m, "alias", None)}
    renamed: dict[str, Any] = {}
    for key, value in cfg.items():
        # An alias is a global name, not a module path, so prefixes do not apply to it.
        key = str(key)
        new_key = key if key in aliases else _rename_key(key, prefix, extra_prefix)
        if new_key in renamed:
            raise SubnetConfigError(
                f"subnet config keys collide on {new_key!r} after applying prefix={prefix!r} "
                f"and extra_prefix={extra_prefix!r}."
            )
        renamed[new_key] = value
    pairs: list[tuple[str, BaseMutable, Any]] = []
    missing: list[str] = []
    model_keys: set[str] = set()
    for key, name, mutable in _source_mutables(model):
        model_keys.add(key)
        if key in renamed:
            pairs.append((name, mutable, _split_chosen(renamed[key])[0]))
        elif key not in missing:
            missing.append(key)
    extra = [key for key in renamed if key not in model_keys]
    if missing or extra:
        raise SubnetConfigError(
            f"subnet config does not match {type(model).__name__}: the config lacks the "
            f"mutables {missing} and names mutables the model does not have {extra} "
            f"(keys after prefix={prefix!r}, extra_prefix={extra_prefix!r}). Export the "
            "config from the same supernet, or adjust prefix/extra_prefix."
        )
    return pairs


def _restore_tensor(mutable: BaseMutable, chosen: Any) -> Any:
    """Turn a list read from a file back into a tensor when the mutable's choice is one."""
    current = mutable.current_choice
    if isinstance(current, torch.Tensor) and isinstance(chosen, list):
        return torch.tensor(chosen, dtype=current.dtype, device=current.device)
    return chosen


def load_fix_subnet(
    model: nn.Module,
    subnet_dict: Mapping[str, Any] | str | Path,
    load_subnet_mode: str = "mutable",
    prefix: str = "",
    extra_prefix: str = "",
) -> None:
    """Fix every mutable of ``model`` to the choice that a subnet config gives it.

    A model that defines ``_fxr_load_subnet(cfg)`` loads the config itself (``prefix``
    and ``extra_prefix`` are then not applied). Otherwise the config keys must name
    exactly the model's source mutables: a key equal to an alias of the model's mutables
    is used as it is; every other key is renamed (``prefix`` is stripped from keys that
    start with it, then ``extra_prefix`` is put in front) and must equal a module name.
    Each then gets ``fix_chosen(chosen)``; values may be ``{'chosen': x, 'meta': ...}``
    dicts or bare choices. A list chosen for a mutable whose choice is a tensor (a channel
    mask written to a file) is turned back into a tensor of the same dtype first.

    Args:
        model: the supernet; it is modified in place.
        subnet_dict: the config, or the path of a ``.yaml``/``.yml``/``.json`` file.
        load_subnet_mode: ``'mutable'``, or ``'mutator'`` for models that define
            ``_fxr_load_subnet``.
        prefix: removed from the start of config keys, e.g. ``'architecture.'``.
        extra_prefix: put in front of config keys, e.g. ``'backbone.'``.

    Raises:
        SubnetConfigError: if the file cannot be read, or the config and the model do not
            name the same mutables (all missing and extra names are listed).
        InvalidArgumentError: for an unknown mode.

    Example:
        >>> from torch import nn
        >>> load_fix_subnet(nn.Linear(2, 2), {})  # no mutables, empty config: nothing to do
    """
    cfg = read_subnet_file(subnet_dict) if isinstance(subnet_dict, str | Path) else subnet_dict
    if not isinstance(cfg, Mapping):
        raise SubnetConfigError(
            f"a subnet config must be a dict of mutable name -> choice, got {type(cfg).__name__}."
        )
    if _check_mode(load_subnet_mode, "load_subnet_mode", model, _LOAD_METHOD):
        getattr(model, _LOAD_METHOD)(dict(cfg))
        return
    for name, mutable, chosen in _match_config(model, cfg, prefix, extra_prefix):
        logger.debug("fixing %s to %r", name, chosen)
        mutable.fix_chosen(_restore_tensor(mutable, chosen))
