"""Turn subnet configs into plain data and move them to and from YAML/JSON files.

Example:
    >>> import torch
    >>> to_plain({"mask": torch.tensor([1, 0]), "ks": (3, 5)})
    {'mask': [1, 0], 'ks': [3, 5]}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from fxrazor.errors import InvalidArgumentError, SubnetConfigError
from fxrazor.mutables.base import DumpChosen

__all__ = ["to_plain", "read_subnet_file", "save_fix_subnet", "convert_fix_subnet"]

_YAML_SUFFIXES = (".yaml", ".yml")
_JSON_SUFFIX = ".json"
_SCALARS = (str, int, float, bool, type(None))


def to_plain(value: Any, where: str = "value") -> Any:
    """Return ``value`` built only of dicts, lists, str, int, float, bool and None.

    Tensors and arrays become (nested) lists via ``tolist()``; tuples and sets become
    lists; a ``DumpChosen`` becomes ``{'chosen': ..., 'meta': ...}``.

    Args:
        value: the value to convert.
        where: a name for the value, used in the error message.

    Raises:
        InvalidArgumentError: for values that have no plain form (e.g. modules).
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, DumpChosen):
        return {
            "chosen": to_plain(value.chosen, where),
            "meta": to_plain(value.meta, where),
        }
    if isinstance(value, Mapping):
        return {to_plain(k, where): to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(item, where) for item in value]
    if isinstance(value, set | frozenset):
        # Sorted so that the same set always writes the same file.
        return [to_plain(item, where) for item in sorted(value, key=repr)]
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_plain(tolist(), where)
    raise InvalidArgumentError(
        f"{where}: cannot store a {type(value).__name__} ({value!r:.80}) in a subnet config; "
        "only plain values, lists, dicts and tensors can be exported."
    )


def _suffix_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (*_YAML_SUFFIXES, _JSON_SUFFIX):
        raise SubnetConfigError(
            f"cannot tell the format of subnet file {str(path)!r} from its suffix "
            f"{path.suffix!r}; use .yaml, .yml or .json."
        )
    return suffix


def read_subnet_file(path: str | Path) -> dict[str, Any]:
    """Read a subnet config from a ``.yaml``, ``.yml`` or ``.json`` file.

    Raises:
        SubnetConfigError: if the suffix is unknown, the file cannot be read or parsed,
            or it does not hold a dict.
    """
    path = Path(path)
    suffix = _suffix_of(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SubnetConfigError(f"cannot read subnet file {str(path)!r}: {e}") from e
    try:
        cfg = yaml.safe_load(text) if suffix in _YAML_SUFFIXES else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SubnetConfigError(f"subnet file {str(path)!r} is not valid {suffix}: {e}") from e
    if cfg is None:  # an empty YAML file
        cfg = {}
    if not isinstance(cfg, dict):
        raise SubnetConfigError(
            f"subnet file {str(path)!r} holds a {type(cfg).__name__}; it must hold a dict "
            "of mutable name -> choice."
        )
    return cfg


def save_fix_subnet(cfg: Mapping[str, Any], path: str | Path) -> Path:
    """Write a subnet config to ``path`` as YAML or JSON, chosen by the suffix.

    Values are converted as in ``convert_fix_subnet`` first, so an export can be saved
    directly. Parent directories must exist.

    Args:
        cfg: the subnet config.
        path: a ``.yaml``, ``.yml`` or ``.json`` path.

    Returns:
        The path written.

    Raises:
        SubnetConfigError: for an unknown suffix.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = pathlib.Path(d) / "subnet.json"
        ...     read_subnet_file(save_fix_subnet({"op": {"chosen": "a"}}, path))
        {'op': {'chosen': 'a', 'meta': None}}
    """
    path = Path(path)
    suffix = _suffix_of(path)
    plain = convert_fix_subnet(cfg)
    if suffix in _YAML_SUFFIXES:
        text = yaml.safe_dump(plain, sort_keys=False)
    else:
        text = json.dumps(plain, indent=2) + "\n"
    path.write_text(text)
    return path


def convert_fix_subnet(fix_subnet: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``fix_subnet`` with every value in plain, file-writable form.

    ``DumpChosen`` values and ``{'chosen': ..., 'meta': ...}`` dicts become
    ``{'chosen': ..., 'meta': ...}`` dicts of plain Python values (tensors become lists,
    tuples become lists). Other values are made plain but keep their shape.

    Args:
        fix_subnet: a subnet config, e.g. from :func:`export_fix_subnet`.

    Returns:
        A new dict; ``fix_subnet`` is not modified.

    Raises:
        InvalidArgumentError: if a value cannot be made plain (e.g. an ``nn.Module``).

    Example:
        >>> import torch
        >>> convert_fix_subnet({"mask": {"chosen": torch.tensor([True, False])}})
        {'mask': {'chosen': [True, False], 'meta': None}}
    """
    converted: dict[str, Any] = {}
    for key, value in fix_subnet.items():
        if isinstance(value, DumpChosen) or _is_chosen_dict(value):
            chosen, meta = _split_chosen(value)
            value = {"chosen": chosen, "meta": meta}
        converted[key] = to_plain(value, where=str(key))
    return converted


def _is_chosen_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and "chosen" in value and set(value) <= {"chosen", "meta"}


def _split_chosen(value: Any) -> tuple[Any, Any]:
    """Return ``(chosen, meta)`` of a DumpChosen, a chosen dict or a bare value."""
    if isinstance(value, DumpChosen):
        return value.chosen, value.meta
    if _is_chosen_dict(value):
        return value["chosen"], value.get("meta")
    return value, None
