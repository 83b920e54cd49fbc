"""Write a plain module as a ``.pt2`` program, an ONNX file or TorchScript, atomically.

Each writer takes a module of plain torch (a frozen subnet), its example inputs and a
destination, and handles its exporter's quirks: the module runs in eval mode (and is put
back as it was), the batch dim is one ``torch.export.Dim`` named ``"batch"`` shared by
every input whose first dim has the batch size, and an example batch of 1 is traced at 2
(export specialises a size of 1 to a constant). A write goes to a temporary folder beside
the destination and is renamed into place when complete: a failure leaves nothing behind.
:func:`fxrazor.save` is the face over these writers.

Example:
    >>> import torch
    >>> args, kwargs = split_inputs({"x": torch.zeros(1, 3)})
    >>> args, list(kwargs)
    ((), ['x'])
    >>> batch_inputs((torch.zeros(1, 3), torch.zeros(3)), {})[0][0].shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxrazor.errors import ExportFailedError

__all__ = ["WRITERS", "atomic_path", "batch_inputs", "dynamic_batch_shapes", "split_inputs",
           "write_onnx", "write_pt2", "write_torchscript", "exporter_failed"]

logger = logging.getLogger(__name__)

Inputs = tuple[tuple[Any, ...], dict[str, Any]]


def split_inputs(example_inputs: Any) -> Inputs:
    """``(args, kwargs)`` of a tensor, a tuple/list of positional inputs or a dict of
    keyword inputs."""
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    if isinstance(example_inputs, tuple | list):
        return tuple(example_inputs), {}
    return (example_inputs,), {}


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() >= 1:
            return int(value.shape[0])
    return None


def _is_batched(value: Any, batch: int | None) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == batch


def batch_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Inputs:
    """The inputs with a batch of 1 repeated to 2 (the first tensor's first dim is the
    batch size; tensors whose first dim has it are batched), else as given."""
    batch = _batch_size(args, kwargs)
    if batch != 1:
        return args, kwargs

    def grow(value: Any) -> Any:
        return torch.cat([value, value]) if _is_batched(value, batch) else value

    return tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}


def dynamic_batch_shapes(module: nn.Module, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
    """``dynamic_shapes`` for ``torch.export``: ``{0: Dim("batch")}`` for each batched
    tensor, ``None`` for the rest; a tuple for positional inputs alone, else a dict by the
    forward's parameter names (a ``*args`` parameter takes a tuple, ``**kwargs`` a dict)."""
    batch = _batch_size(args, kwargs)
    dim = torch.export.Dim("batch", min=1)

    def spec(value: Any) -> Any:
        return {0: dim} if _is_batched(value, batch) else None

    signature = inspect.signature(module.forward)
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    if not kwargs and inspect.Parameter.VAR_POSITIONAL not in kinds.values():
        return tuple(spec(a) for a in args)
    shapes: dict[str, Any] = {}
    for name, value in signature.bind(*args, **kwargs).arguments.items():
        if kinds[name] == inspect.Parameter.VAR_POSITIONAL:
            shapes[name] = tuple(spec(v) for v in value)
        elif kinds[name] == inspect.Parameter.VAR_KEYWORD:
            shapes[name] = {k: spec(v) for k, v in value.items()}
        else:
            shapes[name] = spec(value)
    return shapes


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a path named like ``path`` in a fresh temporary folder beside it; on success
    move every file written there into ``path``'s folder (``path`` itself last), on
    failure remove them all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield folder / path.name
        written = folder / path.name
        if not written.is_file():
            raise ExportFailedError(f"the exporter wrote no file at {path}")
        for extra in folder.iterdir():  # e.g. ONNX external data, named in the main file
            if extra != written:
                os.replace(extra, path.parent / extra.name)
        os.replace(written, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _first_lines(error: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the ONNX exporter's colours
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:3])[:600].rstrip(".") if lines else "(no message)"


def exporter_failed(fmt: str, exporter: str, error: BaseException, hint: str) -> ExportFailedError:
    """An :class:`ExportFailedError` naming the format, the exporter's reason (and the
    innermost cause's, where the exporter wraps another) and a hint."""
    reason = f"{type(error).__name__}: {_first_lines(error)}"
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is not error:
        reason += f" (caused by {type(cause).__name__}: {_first_lines(cause)})"
    return ExportFailedError(f"save(format={fmt!r}) failed: {exporter} raised {reason}. {hint}")


_DYNAMIC_HINT = "If the model fixes its batch size, pass dynamic_batch=False; "


def _export_program(module: nn.Module, inputs: Inputs, dynamic_batch: bool) -> Any:
    args, kwargs = inputs
    if not dynamic_batch:
        return torch.export.export(module, args, kwargs, strict=False)
    args, kwargs = batch_inputs(args, kwargs)
    return torch.export.export(module, args, kwargs, strict=False,
                               dynamic_shapes=dynamic_batch_shapes(module, args, kwargs))


def write_pt2(module: nn.Module, inputs: Inputs, path: Path, dynamic_batch: bool) -> None:
    """``torch.export.export(..., strict=False)`` then ``torch.export.save``; reload with
    ``torch.export.load(path).module()``."""
    try:
        program = _export_program(module, inputs, dynamic_batch)
    except Exception as e:
        raise exporter_failed("pt2", "torch.export.export", e, _DYNAMIC_HINT * dynamic_batch +
                              "format='state_dict' saves the weights and subnet whatever "
                              "the graph holds.") from e
    with atomic_path(path) as tmp:
        torch.export.save(program, tmp)


def _need_onnx() -> None:
    missing = [p for p in ("onnx", "onnxscript") if importlib.util.find_spec(p) is None]
    if missing:
        raise ExportFailedError(
            f"save(format='onnx') needs the {' and '.join(missing)} package(s), which are not "
            "installed: pip install 'fxrazor[onnx]' (onnx, onnxscript, onnxruntime)")


def _name_batch(graph: Any) -> None:
    """Call the ONNX graph's batch dim ``"batch"`` (export names it ``s<n>``) wherever a
    value's shape holds it: the first dim of the first input."""
    import onnx_ir as ir  # installed with onnxscript

    batched = [v for v in graph.inputs if v.shape is not None and len(v.shape)
               and not isinstance(v.shape[0], int)]
    if not batched:
        return
    symbol = str(batched[0].shape[0])
    values = [*graph.inputs, *(out for node in ir.traversal.RecursiveGraphIterator(graph)
                                for out in node.outputs)]
    for value in values:
        if value.shape is not None and any(str(d) == symbol for d in value.shape):
            value.shape = ir.Shape(["batch" if str(d) == symbol else d for d in value.shape])


def write_onnx(module: nn.Module, inputs: Inputs, path: Path, dynamic_batch: bool) -> None:
    """``torch.export`` as for ``pt2`` (same batch dim, same failures), then the dynamo ONNX
    exporter (``torch.onnx.export(program, dynamo=True)``), the batch axis named
    ``"batch"``; weights over ONNX's 2 GB limit go to external data files beside ``path``.
    Run with ``onnxruntime.InferenceSession(path)``."""
    _need_onnx()
    try:
        exported = _export_program(module, inputs, dynamic_batch)
    except Exception as e:
        raise exporter_failed("onnx", "torch.export.export (the ONNX exporter's first step)",
                              e, _DYNAMIC_HINT * dynamic_batch + "format='state_dict' saves "
                              "the weights and subnet whatever the graph holds.") from e
    try:
        program = torch.onnx.export(exported, dynamo=True, verbose=False)
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        _name_batch(program.model.graph)
    except Exception as e:
        raise exporter_failed(
            "onnx", "torch.onnx.export(dynamo=True)", e, "An op without an ONNX translation "
            "needs a newer onnxscript or torch, or another format: 'pt2' keeps every ATen "
            "op.") from e
    with atomic_path(path) as tmp:
        program.save(str(tmp))


def write_torchscript(module: nn.Module, inputs: Inputs, path: Path, dynamic_batch: bool) -> None:
    """``torch.jit.script`` then ``torch.jit.save``: deprecated by torch (prefer ``pt2``),
    kept for runtimes that only read TorchScript. Every size stays dynamic."""
    logger.warning("TorchScript is deprecated by torch; format='pt2' (torch.export) is its "
                   "successor")
    with warnings.catch_warnings():  # torch's own deprecation notice, said once above
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit")
        try:
            scripted = torch.jit.script(module)
        except Exception as e:
            raise exporter_failed("torchscript", "torch.jit.script", e,
                                  "format='pt2' or 'onnx' capture Python that TorchScript "
                                  "cannot compile.") from e
        with atomic_path(path) as tmp:
            torch.jit.save(scripted, str(tmp))


Writer = Callable[[nn.Module, Inputs, Path, bool], None]
WRITERS: dict[str, Writer] = {"pt2": write_pt2, "onnx": write_onnx,
                              "torchscript": write_torchscript}
