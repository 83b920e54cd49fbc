"""Graph passes of fxrazor: discover channel units, insert dynamic ops, freeze."""

from __future__ import annotations

__all__: list[str] = []
