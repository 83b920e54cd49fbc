"""The static model that ``export_fix_subnet(..., slice_weight=True)`` hands back.

MMRazor deep-copies the model and turns its dynamic ops into static ones (or fixes every
mutable of the copy), and returns that model. Here a model type can register how to make
its static model (``fxrazor`` registers ``freeze`` for its ``Supernet``, from the package
face, since this stage may not import the passes); a model may instead define
``_fxr_static_model()``. Any other model is deep-copied and the subnet is loaded into the
copy, which drops the candidates that were not chosen.

Example:
    >>> from torch import nn
    >>> register_static_exporter(nn.Identity, lambda model: nn.Sequential())
    >>> type(make_static_model(nn.Identity(), lambda copy: None)).__name__
    'Sequential'
    >>> _ = _EXPORTERS.pop()  # (the doctest's own registration)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from fxrazor.errors import InvalidArgumentError
from fxrazor.mutables.channel_unit import MutableChannelUnit

__all__ = ["register_static_exporter", "make_static_model", "channel_units"]

# Any argument: an exporter takes the one model type it is registered for.
StaticExporter = Callable[[Any], nn.Module]
_EXPORTERS: list[tuple[type, StaticExporter]] = []
_STATIC_METHOD = "_fxr_static_model"


def register_static_exporter(model_type: type, exporter: StaticExporter) -> None:
    """Make ``export_fix_subnet(model, slice_weight=True)`` return ``exporter(model)`` for
    models of ``model_type`` (a later registration for the same type replaces it).

    Args:
        model_type: the model class (subclasses match too).
        exporter: builds the static model; it must not modify its argument.

    Raises:
        InvalidArgumentError: if ``model_type`` is not a class or ``exporter`` not callable.
    """
    if not isinstance(model_type, type) or not callable(exporter):
        raise InvalidArgumentError(
            "register_static_exporter(model_type, exporter) needs a class and a callable, "
            f"got {model_type!r} and {exporter!r}")
    _EXPORTERS[:] = [(t, f) for t, f in _EXPORTERS if t is not model_type]
    _EXPORTERS.append((model_type, exporter))


def make_static_model(model: nn.Module, load: Callable[[nn.Module], None]) -> nn.Module:
    """The static model of ``model``'s chosen subnet; ``model`` is not modified.

    Args:
        model: the supernet.
        load: fixes a deep copy of ``model`` to the exported subnet (used when neither
            ``_fxr_static_model`` nor a registered exporter applies).
    """
    method = getattr(model, _STATIC_METHOD, None)
    if callable(method):
        return method()
    for model_type, exporter in reversed(_EXPORTERS):  # the newest registration first
        if isinstance(model, model_type):
            return exporter(model)
    static = copy.deepcopy(model)
    load(static)
    return static


def channel_units(model: nn.Module) -> dict[str, MutableChannelUnit]:
    """The channel units held by ``model``, by unit name (a unit never named by an
    analysis, ``'unbind'``, goes by its module path).

    Raises:
        InvalidArgumentError: if two units share a name.
    """
    units: dict[str, MutableChannelUnit] = {}
    for path, module in model.named_modules():
        if isinstance(module, MutableChannelUnit):
            name = module.name if module.name != "unbind" else path
            if name in units and units[name] is not module:
                raise InvalidArgumentError(
                    f"two channel units of {type(model).__name__} are named {name!r}; "
                    "give every unit its own name before exporting")
            units[name] = module
    return units
