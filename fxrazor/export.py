"""Save a frozen subnet: a ``.pt2`` program, ONNX, TorchScript, or weights plus subnet.

``fxrazor.save(frozen, path, format=..., example_inputs=...)`` writes one file that runs
without fxrazor (``pt2``, ``onnx``, ``torchscript``; the batch dim stays dynamic), or the
``state_dict`` form: the frozen weights plus the subnet config they were cut with. That
form is rebuilt from the original model by :func:`load_subnet_state`, the path being
``convert → load_fix_subnet(config) → freeze → load_state_dict``. Every write is atomic:
an exporter that fails raises :class:`~fxrazor.errors.ExportFailedError` (the format, the
exporter's reason, what to try) and leaves nothing at ``path``.

Example:
    >>> import tempfile, torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = torch.randn(1, 4)
    >>> sn = fxrazor.convert(model, x); sn.set_choices({"0": 3})
    >>> frozen = fxrazor.freeze(sn)
    >>> path = fxrazor.save(frozen, tempfile.mkdtemp() + "/net.pt", format="state_dict")
    >>> rebuilt = load_subnet_state(model, x, path)
    >>> rebuilt.get_submodule("2").in_features, torch.equal(rebuilt(x), frozen(x))
    (3, True)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxrazor.api import SUBNET_KEY, convert, freeze
from fxrazor.errors import InvalidArgumentError, SubnetConfigError
from fxrazor.export_writers import WRITERS, atomic_path, split_inputs
from fxrazor.structures.subnet import load_fix_subnet
from fxrazor.structures.subnet.subnet_io import to_plain
from fxrazor.supernet import Supernet

__all__ = ["FORMATS", "save", "load_subnet_state", "read_subnet_state"]

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("pt2", "onnx", "torchscript", "state_dict")
_SUFFIXES = {".pt2": "pt2", ".onnx": "onnx"}
_STATE_TAG = "fxrazor.subnet_state"
_STATE_VERSION = 1


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is None:
        if path.suffix not in _SUFFIXES:
            raise InvalidArgumentError(
                f"save: cannot tell the format of {path.name!r} from its suffix; pass "
                f"format= one of {FORMATS}")
        return _SUFFIXES[path.suffix]
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"save: format must be one of {FORMATS}, got {fmt!r}")
    return fmt


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm's running statistics, no dropout) and no autograd for the
    duration; each submodule's training flag is put back after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def save(model: nn.Module, path: str | Path, format: str | None = None, *,
         example_inputs: Any = None, dynamic_batch: bool = True,
         subnet: Mapping[str, Any] | None = None) -> Path:
    """Write a frozen subnet (or a supernet's current subnet, frozen first) to ``path``.

    Formats:

    - ``"pt2"``: ``torch.export.export(strict=False)`` then ``torch.export.save``; load with
      ``torch.export.load(path).module()``.
    - ``"onnx"``: the dynamo ONNX exporter (``torch.onnx.export(..., dynamo=True)``); run
      with ``onnxruntime.InferenceSession(path)``. Needs ``pip install 'fxrazor[onnx]'``.
    - ``"torchscript"``: ``torch.jit.script`` then ``torch.jit.save`` (deprecated by torch,
      logged as a warning; prefer ``"pt2"``); load with ``torch.jit.load(path)``.
    - ``"state_dict"``: ``{"state_dict", "subnet"}`` in one ``torch.save`` file: the frozen
      weights and the subnet config (``export_fix_subnet``'s form) they were cut with;
      rebuild with :func:`load_subnet_state` from the original model.

    With ``dynamic_batch`` the first dim of every input with the batch size is one dynamic
    dim named ``"batch"`` (``pt2`` and ``onnx``; TorchScript keeps every size dynamic).

    Args:
        model: a module frozen by ``fxrazor.freeze`` (any plain module for the exported
            formats), or a ``Supernet``, frozen at its current choices.
        path: the file to write; its folder is made if missing.
        format: one of :data:`FORMATS`; None reads it from a ``.pt2`` / ``.onnx`` suffix.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs
            (needed by ``pt2`` and ``onnx``).
        dynamic_batch: keep the batch dim dynamic (False: export at the example's sizes).
        subnet: the subnet config for ``state_dict`` when ``model`` has none recorded
            (a module not made by ``fxrazor.freeze``).

    Returns:
        The path written.

    Raises:
        InvalidArgumentError: an unknown format, no example inputs where needed, or
            ``state_dict`` of a module with no subnet config.
        ExportFailedError: the exporter refused the model (or its package is missing);
            nothing is written then.

    Example:
        >>> import tempfile, torch, fxrazor
        >>> net = torch.nn.Linear(3, 2)
        >>> fxrazor.save(net, tempfile.mkdtemp() + "/net.bin", format="tflite")
        Traceback (most recent call last):
        ...
        fxrazor.errors.InvalidArgumentError: save: format must be one of ('pt2', 'onnx', \
'torchscript', 'state_dict'), got 'tflite'
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if isinstance(model, Supernet):
        model = freeze(model)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"save expects a frozen module or a Supernet, got "
                                   f"{type(model).__name__}")
    if fmt == "state_dict":
        _save_state(model, path, subnet)
    else:
        if example_inputs is None and fmt != "torchscript":
            raise InvalidArgumentError(f"save(format={fmt!r}) needs example_inputs: a tensor, "
                                       "a tuple of inputs or a dict of keyword inputs")
        with _eval_mode(model):
            WRITERS[fmt](model, split_inputs(example_inputs), path, dynamic_batch)
    logger.info("saved %s as %s", path, fmt)
    return path


def _save_state(model: nn.Module, path: Path, subnet: Mapping[str, Any] | None) -> None:
    meta = getattr(model, "meta", None)
    config = subnet if subnet is not None else \
        meta.get(SUBNET_KEY) if isinstance(meta, dict) else None
    if config is None:
        raise InvalidArgumentError(
            f"save(format='state_dict'): {type(model).__name__} has no subnet config (it was "
            "not made by fxrazor.freeze); pass subnet=fxrazor.export_fix_subnet(sn)[0]")
    state = {"format": _STATE_TAG, "version": _STATE_VERSION, "torch": str(torch.__version__),
             "subnet": to_plain(dict(config), "subnet"),
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_subnet_state(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(subnet config, state_dict)`` of a file written by ``save(format="state_dict")``,
    read with ``torch.load(weights_only=True)`` (no code runs)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise SubnetConfigError(f"cannot read the subnet state {path}: "
                                f"{type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != _STATE_TAG:
        raise SubnetConfigError(f"{path} is not a file of fxrazor.save(format='state_dict')")
    if state.get("version", 0) > _STATE_VERSION:
        raise SubnetConfigError(f"{path} has version {state['version']}; this fxrazor reads "
                                f"up to {_STATE_VERSION}: upgrade fxrazor")
    return state["subnet"], state["state_dict"]


def load_subnet_state(model: nn.Module, example_inputs: Any, path: str | Path,
                      **convert_options: Any) -> torch.fx.GraphModule:
    """Rebuild a frozen subnet saved with ``save(format="state_dict")`` from its model.

    ``convert(model, example_inputs, **convert_options) → load_fix_subnet(sn, config) →
    freeze(sn) → load_state_dict(weights)``; give the options the subnet was converted
    with (``unit=``, ``split_dims=``, ...) so that the units are the same.

    Args:
        model: the original (unpruned) model; it is not modified.
        example_inputs: inputs for ``fxrazor.convert``.
        path: the file written by :func:`save`.
        **convert_options: passed to ``fxrazor.convert``.

    Returns:
        The frozen subnet, with the saved weights.

    Raises:
        SubnetConfigError: the file is not a subnet state, or its config or weights do not
            fit the model converted with these options.
    """
    config, weights = read_subnet_state(path)
    sn = convert(model, example_inputs, **convert_options)
    load_fix_subnet(sn, config)
    frozen = freeze(sn)
    try:
        frozen.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise SubnetConfigError(
            f"the weights of {path} do not fit the subnet rebuilt from "
            f"{type(model).__name__}; convert with the options it was saved with: {e}") from e
    return frozen

