"""Checks shared by the mutable modules: candidate dicts, choice names, arch params.

Example:
    >>> check_choice_name("conv", ["conv", "pool"], "op")
    'conv'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from fxrazor.errors import InvalidChoiceError, MutableArgumentError

__all__ = ["describe_mutable", "build_module_dict", "check_choice_name", "check_choice_names",
           "check_arch_param"]


def describe_mutable(mutable: nn.Module) -> str:
    """Name a mutable for error messages: its class, plus its alias when it has one."""
    alias = getattr(mutable, "alias", None)
    name = type(mutable).__name__
    return f"{name}(alias={alias!r})" if alias is not None else name


def build_module_dict(
    candidates: nn.ModuleDict | Mapping[str, nn.Module], owner: str, what: str = "candidate"
) -> nn.ModuleDict:
    """Return a new ``nn.ModuleDict`` holding the candidate modules (the modules are shared).

    A fresh container is built so that deleting candidates later (when fixing) leaves
    the caller's dict untouched.
    """
    if not isinstance(candidates, Mapping | nn.ModuleDict):
        raise MutableArgumentError(
            f"{owner}: {what}s must be an nn.ModuleDict or a dict of name -> nn.Module, "
            f"got {type(candidates).__name__}"
        )
    if len(candidates) == 0:
        raise MutableArgumentError(f"{owner}: got no {what}s; pass at least one {what} module")
    for name, module in candidates.items():
        if not isinstance(name, str):
            raise MutableArgumentError(
                f"{owner}: {what} names must be strings, got {name!r} ({type(name).__name__})"
            )
        if not isinstance(module, nn.Module):
            raise MutableArgumentError(
                f"{owner}: {what} {name!r} is a {type(module).__name__}, not an nn.Module; "
                f"build the module yourself and pass the instance (configs are not supported)"
            )
    return nn.ModuleDict(dict(candidates.items()))


def check_choice_name(choice: Any, valid: list[str], owner: str) -> str:
    """Return ``choice`` if it is one of ``valid``, else raise :class:`InvalidChoiceError`."""
    if not isinstance(choice, str) or choice not in valid:
        raise InvalidChoiceError(
            f"{owner}: {choice!r} is not a valid choice; choose one of {valid}"
        )
    return choice


def check_choice_names(choices: Any, valid: list[str], owner: str) -> list[str]:
    """Validate a non-empty list of distinct choice names and return it as a list."""
    if isinstance(choices, str) or not isinstance(choices, Iterable):
        raise InvalidChoiceError(
            f"{owner}: expected a list of choice names, got {choices!r}; pass e.g. {valid[:2]}"
        )
    names = [check_choice_name(c, valid, owner) for c in choices]
    if not names:
        raise InvalidChoiceError(f"{owner}: the list of choices is empty; pick from {valid}")
    if len(set(names)) != len(names):
        raise InvalidChoiceError(f"{owner}: choices {names} contain duplicates")
    return names


def check_arch_param(arch_param: Any, size: int, owner: str) -> torch.Tensor:
    """Check that ``arch_param`` is a 1-D tensor with one entry per original candidate."""
    if not isinstance(arch_param, torch.Tensor):
        raise MutableArgumentError(
            f"{owner}: arch_param must be a tensor, got {type(arch_param).__name__}"
        )
    if arch_param.dim() != 1 or arch_param.numel() != size:
        raise MutableArgumentError(
            f"{owner}: arch_param has shape {tuple(arch_param.shape)}; expected ({size},), "
            f"one entry per candidate"
        )
    return arch_param
