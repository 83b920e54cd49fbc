"""fxrazor: a torch.fx compiler for structural pruning and neural architecture search.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
    ...                      torch.randn(2, 4))
    >>> sn.set_choices({"0": 3})
    >>> fxrazor.freeze(sn).get_submodule("2").in_features
    3
"""

from __future__ import annotations

import importlib
from typing import Any

from fxrazor.api import convert, convert_, freeze
from fxrazor.drawing import draw
from fxrazor.errors import FxRazorError
from fxrazor.estimate import estimate, estimate_many
from fxrazor.export import load_subnet_state, save
from fxrazor.importance import importance
from fxrazor.mutators import ChannelMutator, NasMutator
from fxrazor.structures.subnet import export_fix_subnet, load_fix_subnet
from fxrazor.structures.subnet.static_model import register_static_exporter
from fxrazor.summary import summary
from fxrazor.supernet import Supernet
from fxrazor.value_binding import bind_unit, bind_value, unbind, value_mutables

# export_fix_subnet(sn, slice_weight=True) returns the frozen subnet; the structures stage
# may not import the passes, so the face registers freeze for it.
register_static_exporter(Supernet, freeze)

__all__ = [
    "ChannelMutator",
    "FxRazorError",
    "NasMutator",
    "ResourceEstimator",
    "Supernet",
    "__version__",
    "bind_unit",
    "bind_value",
    "convert",
    "convert_",
    "draw",
    "estimate",
    "estimate_many",
    "importance",
    "export_fix_subnet",
    "freeze",
    "load_fix_subnet",
    "load_subnet_state",
    "save",
    "summary",
    "unbind",
    "value_mutables",
]
__version__ = "0.1.0"


_ABOVE = {"search": ("fxrazor.search", None),
          "algorithms": ("fxrazor.algorithms", None),
          "ResourceEstimator": ("fxrazor.resource_estimator", "ResourceEstimator")}


def __getattr__(name: str) -> Any:
    """``fxrazor.search``, ``fxrazor.algorithms`` and ``fxrazor.ResourceEstimator`` after
    ``import fxrazor``: those stages sit above the face (they estimate, time or train
    through it), so they are imported on first use, not here."""
    if name in _ABOVE:
        module, attr = _ABOVE[name]
        found = importlib.import_module(module)
        return found if attr is None else getattr(found, attr)
    raise AttributeError(f"module 'fxrazor' has no attribute {name!r}")
