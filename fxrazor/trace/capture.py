"""Choose the capture front-end: torch.fx symbolic tracing, non-strict torch.export, or both.

``"fx"`` traces with torch.fx (opaque leaves where a submodule cannot be traced);
``"export"`` captures with ``torch.export`` (:mod:`fxrazor.trace.export_capture`);
``"auto"`` traces with fx and, when the failing code is in the top-level forward (no
submodule can be made opaque), captures with export instead. A model that fx traces with
some submodules kept opaque (code it cannot trace: their channels pinned) keeps the fx
graph, which scripts; ``"export"`` sees through those submodules. When neither works, one
:class:`~fxrazor.errors.CaptureFailedError` names both failures.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Looped(nn.Module):  # a data-dependent loop in the top-level forward
    ...     def forward(self, x):
    ...         while x.sum() > 0:
    ...             x = x - 1
    ...         return x
    >>> capture_model(Looped(), torch.ones(2), capture="auto")
    Traceback (most recent call last):
    ...
    fxrazor.errors.CaptureFailedError: neither front-end can capture Looped. torch.fx: ... torch.export: ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from fxrazor.errors import CaptureFailedError, InvalidChoiceError, TraceFailedError
from fxrazor.trace.blocks import BlockExpander
from fxrazor.trace.export_capture import capture_export
from fxrazor.trace.tracer import KnownLayer, TracedModel, trace_model

__all__ = ["CAPTURE_MODES", "capture_model"]

logger = logging.getLogger(__name__)

CAPTURE_MODES = ("auto", "fx", "export")


def capture_model(model: nn.Module, example_inputs: Any, leaf_modules: Iterable[type | str] = (),
                  copy_model: bool = True, layers: Mapping[type, KnownLayer] | None = None,
                  expand_block: BlockExpander | None = None, capture: str = "auto"
                  ) -> TracedModel:
    """Capture ``model`` with the front-end ``capture`` names (see the module docstring).

    Choice blocks (``expand_block``) are traced branch by branch by the fx front-end only;
    the export front-end runs each block's current choice, so a model with searchable
    blocks is refused there rather than losing its search space.
    """
    if capture not in CAPTURE_MODES:
        raise InvalidChoiceError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
    leaf_modules = tuple(leaf_modules)
    if capture == "export":
        _check_no_blocks(model, expand_block)
        return capture_export(model, example_inputs, leaf_modules, copy_model, layers)
    try:
        traced = trace_model(model, example_inputs, leaf_modules, copy_model, layers,
                             expand_block)
    except TraceFailedError as fx_error:
        if capture == "fx":
            raise
        if expand_block is not None and _has_blocks(model, expand_block):
            raise
        logger.info("torch.fx cannot trace %s (%s); capturing with torch.export",
                    type(model).__name__, fx_error)
        try:
            return capture_export(model, example_inputs, leaf_modules, copy_model, layers)
        except TraceFailedError as export_error:
            raise CaptureFailedError(
                f"neither front-end can capture {type(model).__name__}. torch.fx: "
                f"{_first_line(fx_error)} torch.export: {_first_line(export_error)} To go "
                f"on: {_hint(model, export_error)}") from export_error
    return traced


def _hint(model: nn.Module, export_error: BaseException) -> str:
    """What to change: a Hugging Face model returning its key/value cache needs the cache
    off (the cache object is no tensor, list or dict either front-end can follow)."""
    config = getattr(model, "config", None)
    if "Cache" in str(export_error) and getattr(config, "use_cache", False):
        return ("the model returns its key/value cache: set model.config.use_cache = False "
                "before convert (pruning needs the logits and hidden states only)")
    return ("move the failing code into a submodule and name it in leaf_modules (fx keeps "
            "it opaque), or make the forward exportable (torch.export's message says where)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if line.endswith(".") else line + "."


def _has_blocks(model: nn.Module, expand_block: BlockExpander) -> bool:
    return any(expand_block(m) is not None for m in model.modules())


def _check_no_blocks(model: nn.Module, expand_block: BlockExpander | None) -> None:
    if expand_block is not None and _has_blocks(model, expand_block):
        raise CaptureFailedError(
            f"{type(model).__name__} holds searchable choice blocks (op mutables): the export "
            f"front-end would capture only each block's current choice; use capture='fx'")
