"""Oracles that check a pruning independently of the code that made it, and the zoo runner
(``python -m fxrazor.zoo``) that applies them to torchvision's models."""

from __future__ import annotations

__all__: list[str] = []
