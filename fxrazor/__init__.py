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
from fxrazor.errors import FxRazorError
from fxrazor.estimate import ResourceEstimator, estimate, estimate_many
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
    "estimate",
    "estimate_many",
    "importance",
    "export_fix_subnet",
    "freeze",
    "load_fix_subnet",
    "summary",
    "unbind",
    "value_mutables",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``fxrazor.search`` after ``import fxrazor``: the search stage sits above the face
    (it scores through ``estimate``), so it is imported on first use, not here."""
    if name == "search":
        return importlib.import_module("fxrazor.search")
    raise AttributeError(f"module 'fxrazor' has no attribute {name!r}")
