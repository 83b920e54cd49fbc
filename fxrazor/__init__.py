"""fxrazor: a torch.fx compiler for structural pruning and neural architecture search."""

from __future__ import annotations

from fxrazor.errors import FxRazorError

__all__ = ["FxRazorError", "__version__"]
__version__ = "0.1.0"
