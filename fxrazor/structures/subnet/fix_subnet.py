"""Export the chosen subnet of a supernet, and load (fix) a subnet into a supernet.

Two forms, as MMRazor's ``export_subnet_mode`` / ``load_subnet_mode``:

- ``'mutable'`` (NAS): ``{key: {'chosen': value, 'meta': {...}}}``, one entry per source
  mutable (``dump_chosen()``); the key is the mutable's ``alias`` when it has one, else
  its module name in the model. A converted ``Supernet`` exports the mutable channel of
  each of its units (``all_units.<i>.mutable_channel``) and any choice block in it.
- ``'mutator'`` (pruning): ``{unit name: unit.config_template(with_init_args=True)}``
  for every channel unit of the model (``channels`` added with ``export_channel``).

Both are plain dicts that can be written as YAML or JSON. A model may take over the
``'mutator'`` form by defining ``_fxr_dump_subnet() -> dict`` (used when it has no
channel units) and ``_fxr_load_subnet(cfg: dict) -> None`` (the compiler's supernet
does: it checks the unit names and sets the choices).

Example:
    >>> from fxrazor.mutables.base import DumpChosen
    >>> convert_fix_subnet({"op": DumpChosen("conv3x3", {"all_choices": ["conv3x3"]})})
    {'op': {'chosen': 'conv3x3', 'meta': {'all_choices': ['conv3x3']}}}
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxrazor.errors import (
    AliasConflictError,
    FxRazorError,
    InvalidArgumentError,
    SubnetConfigError,
)
from fxrazor.mutables.base import BaseMutable
from fxrazor.structures.subnet.static_model import channel_units, make_static_model
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


def _check_mode(mode: str, argument: str) -> None:
    if mode not in _MODES:
        raise InvalidArgumentError(
            f"{argument} must be 'mutable' (each mutable's dump_chosen, NAS) or 'mutator' "
            f"(the channel units' config_template, pruning); got {mode!r}."
        )


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


def _dump_units(model: nn.Module, export_channel: bool) -> dict[str, Any]:
    """The pruning form: every channel unit's config template, or the model's own."""
    units = channel_units(model)
    if units:
        return {name: to_plain(unit.config_template(with_init_args=True,
                                                    with_channels=export_channel), where=name)
                for name, unit in units.items()}
    dump = getattr(model, _DUMP_METHOD, None)
    if callable(dump):
        return to_plain(dump(), where=f"{_DUMP_METHOD}()")
    raise InvalidArgumentError(
        f"export_subnet_mode='mutator' exports channel units, and {type(model).__name__} has "
        f"none (nor a {_DUMP_METHOD}() method); convert the model with fxrazor.convert, or "
        "use export_subnet_mode='mutable'."
    )


def export_fix_subnet(
    model: nn.Module,
    export_subnet_mode: str = "mutable",
    slice_weight: bool = False,
    export_channel: bool = False,
) -> tuple[dict[str, Any], nn.Module | None]:
    """Export the subnet that ``model`` has chosen now: ``(fix_subnet, static_model)``.

    ``fix_subnet`` is a plain dict in the form ``export_subnet_mode`` names (see the
    module doc): ``'mutable'`` stores every source mutable as ``{key: {'chosen': ...,
    'meta': ...}}`` (derived mutables and channel containers are skipped: they follow
    their sources; so are mutables with ``is_source_mutable = False``); ``'mutator'``
    stores every channel unit's ``config_template(with_init_args=True)``.

    ``static_model`` is None unless ``slice_weight``. Then it is a new model of the
    subnet alone, with only the weights the subnet uses: for a converted ``Supernet``
    ``fxrazor.freeze(model)`` (a plain GraphModule with sliced weights); for another
    model a deep copy with the subnet loaded (unchosen candidates dropped). MMRazor's
    docstring calls this a state_dict, but its code returns the model; so does this (take
    ``static_model.state_dict()`` for the weights).

    Args:
        model: the supernet; it is not modified.
        export_subnet_mode: ``'mutable'`` or ``'mutator'``.
        slice_weight: also build the static model.
        export_channel: in ``'mutator'`` form, add each unit's ``channels`` (the member
            layers and ranges, enough to rebuild the units without tracing); the
            ``'mutable'`` form has no channels and ignores it, as MMRazor.

    Raises:
        AliasConflictError: if mutables that share an alias chose different values.
        InvalidArgumentError: for an unknown mode, ``'mutator'`` on a model without
            channel units, or a choice that is not plain data.

    Example:
        >>> from torch import nn
        >>> export_fix_subnet(nn.Linear(2, 2))  # no mutables: an empty subnet, no model
        ({}, None)
    """
    _check_mode(export_subnet_mode, "export_subnet_mode")
    if export_subnet_mode == "mutable":
        fix_subnet = _dump_mutables(model)
    else:
        fix_subnet = _dump_units(model, export_channel)
    if not slice_weight:
        return fix_subnet, None
    static = make_static_model(
        model, lambda copy: load_fix_subnet(copy, fix_subnet, load_subnet_mode=export_subnet_mode))
    return fix_subnet, static


def _config_key(name: str, prefix: str, extra_prefix: str) -> str:
    """The config key of the mutable at module path ``name`` (as MMRazor: ``prefix`` is
    taken off the model's names, ``extra_prefix`` put in front of them)."""
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    return extra_prefix + name


def _match_config(
    model: nn.Module, cfg: Mapping[str, Any], prefix: str, extra_prefix: str
) -> list[tuple[str, BaseMutable, Any]]:
    """Pair each source mutable with its config value; raise listing every mismatch."""
    keys = {str(key): value for key, value in cfg.items()}
    pairs: list[tuple[str, BaseMutable, Any]] = []
    missing: list[str] = []
    owners: dict[str, str] = {}
    for alias_or_name, name, mutable in _source_mutables(model):
        # An alias is a global name, not a module path, so prefixes do not apply to it.
        aliased = bool(getattr(mutable, "alias", None))
        key = alias_or_name if aliased else _config_key(name, prefix, extra_prefix)
        if not aliased and key in owners:
            raise SubnetConfigError(
                f"the mutables {owners[key]!r} and {name!r} both read config key {key!r} "
                f"after applying prefix={prefix!r} and extra_prefix={extra_prefix!r}; "
                "adjust the prefix."
            )
        owners[key] = name
        if key in keys:
            pairs.append((name, mutable, _split_chosen(keys[key])[0]))
        elif key not in missing:
            missing.append(key)
    extra = [key for key in keys if key not in owners]
    if missing or extra:
        raise SubnetConfigError(
            f"subnet config does not match {type(model).__name__}: the config lacks the "
            f"mutables {missing} and names mutables the model does not have {extra} "
            f"(the model's names after prefix={prefix!r}, extra_prefix={extra_prefix!r}). "
            "Export the config from the same supernet, or adjust prefix/extra_prefix."
        )
    return pairs


def _restore_tensor(mutable: BaseMutable, chosen: Any) -> Any:
    """Turn a list read from a file back into a tensor when the mutable's choice is one."""
    current = mutable.current_choice
    if isinstance(current, torch.Tensor) and isinstance(chosen, list):
        return torch.tensor(chosen, dtype=current.dtype, device=current.device)
    return chosen


def _fix_mutables(pairs: list[tuple[str, BaseMutable, Any]]) -> None:
    """Fix each not yet fixed mutable to its choice, all or none.

    Fixing cannot be undone, so every choice is first tried as ``current_choice`` (which
    checks it); if one is refused the earlier ones are set back and nothing is fixed.
    Fixed mutables are left as they are (as MMRazor).
    """
    todo = [(name, m, _restore_tensor(m, chosen)) for name, m, chosen in pairs
            if not m.is_fixed]
    previous = [(m, m.current_choice) for _, m, _ in todo]
    tried = 0
    try:
        for _, mutable, chosen in todo:
            mutable.current_choice = chosen
            tried += 1
    except (FxRazorError, ValueError, TypeError):
        for mutable, choice in reversed(previous[: tried + 1]):
            mutable.current_choice = choice
        raise
    for name, mutable, chosen in todo:
        logger.debug("fixing %s to %r", name, chosen)
        mutable.fix_chosen(chosen)


def _load_units(model: nn.Module, cfg: Mapping[str, Any]) -> None:
    """The pruning form: the model sets the units' choices, then every unit is fixed."""
    load = getattr(model, _LOAD_METHOD, None)
    if not callable(load):
        raise InvalidArgumentError(
            f"load_subnet_mode='mutator' needs a model that defines {_LOAD_METHOD}() (a "
            f"converted supernet); {type(model).__name__} does not. Use "
            "load_subnet_mode='mutable'."
        )
    wrapped = cfg.get("channel_unit_cfg")
    if isinstance(wrapped, Mapping):  # MMRazor's mutator config: units under channel_unit_cfg
        units = wrapped.get("units")
        if not isinstance(units, Mapping):
            raise SubnetConfigError(
                "a mutator config with 'channel_unit_cfg' must hold its units as a dict under "
                f"channel_unit_cfg['units'], got {type(units).__name__}")
        cfg = units
    load(dict(cfg))  # checks names and choices and sets all of them or none
    for unit in channel_units(model).values():
        if not unit.is_fixed:
            unit.fix_chosen()


def load_fix_subnet(
    model: nn.Module,
    subnet_dict: Mapping[str, Any] | str | Path,
    load_subnet_mode: str = "mutable",
    prefix: str = "",
    extra_prefix: str = "",
) -> None:
    """Fix ``model`` to the subnet a config describes: set every choice, then fix it.

    ``'mutable'`` form: the config keys must name exactly the model's source mutables: an
    aliased mutable reads the key of its alias; any other reads the key made of its
    module name, as MMRazor (``prefix`` is taken off names that start with it, e.g. the
    ``'architecture.'`` of a wrapped model loading a config of the bare one, and
    ``extra_prefix`` is put in front, e.g. ``'backbone.'`` for a backbone loading a
    config exported from a whole model). Each mutable that is not fixed yet
    then gets ``fix_chosen(chosen)``; values may be ``{'chosen': x, 'meta': ...}`` dicts
    or bare choices. A list chosen for a mutable whose choice is a tensor (a channel mask
    written to a file) is turned back into a tensor of the same dtype first.

    ``'mutator'`` form: the model's ``_fxr_load_subnet(cfg)`` sets the units' choices
    (``prefix`` and ``extra_prefix`` are not applied), then every channel unit is fixed
    (``fix_chosen()``), as MMRazor's load leaves a static model. A config in MMRazor's
    mutator shape, ``{'channel_unit_cfg': {'units': {...}, ...}, ...}``, is read from
    its ``units``.

    Nothing is half-applied: a config that does not match, or a choice that is refused,
    raises before anything is fixed. Fixed mutables and units no longer change (a
    supernet lists only unfixed units in ``units`` and ``choices()``).

    Args:
        model: the supernet; it is modified in place.
        subnet_dict: the config, or the path of a ``.yaml``/``.yml``/``.json`` file.
        load_subnet_mode: ``'mutable'`` or ``'mutator'``.
        prefix: taken off the model's module names, e.g. ``'architecture.'``.
        extra_prefix: put in front of the model's module names, e.g. ``'backbone.'``.

    Raises:
        SubnetConfigError: if the file cannot be read, or the config and the model do not
            name the same mutables (all missing and extra names are listed).
        InvalidArgumentError: for an unknown mode, or both ``prefix`` and
            ``extra_prefix`` (MMRazor refuses the pair too).
        InvalidChoiceError: for a choice a mutable refuses (nothing is fixed then).

    Example:
        >>> from torch import nn
        >>> load_fix_subnet(nn.Linear(2, 2), {})  # no mutables, empty config: nothing to do
    """
    _check_mode(load_subnet_mode, "load_subnet_mode")
    if prefix and extra_prefix:
        raise InvalidArgumentError(
            f"load_fix_subnet: prefix={prefix!r} and extra_prefix={extra_prefix!r} cannot be "
            "set together; strip one prefix or add the other, not both."
        )
    cfg = read_subnet_file(subnet_dict) if isinstance(subnet_dict, str | Path) else subnet_dict
    if not isinstance(cfg, Mapping):
        raise SubnetConfigError(
            f"a subnet config must be a dict of mutable name -> choice, got {type(cfg).__name__}."
        )
    if load_subnet_mode == "mutator":
        _load_units(model, cfg)
        return
    _fix_mutables(_match_config(model, cfg, prefix, extra_prefix))
