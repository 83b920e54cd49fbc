"""Read an exported file back and compare its output with the frozen model's: a file that
loads but computes something else is worse than no file.

``pt2`` loads with ``torch.export.load``, ``torchscript`` with ``torch.jit.load``, ``onnx``
runs in ONNX Runtime (where installed), ``state_dict`` is rebuilt from the original model
with :func:`fxrazor.load_subnet_state`.

Example:
    >>> import tempfile, torch
    >>> net = torch.nn.Linear(3, 2)
    >>> path = tempfile.mkdtemp() + "/net.pt"
    >>> torch.jit.save(torch.jit.script(net), path)
    >>> reload_line(path, "torchscript", net, torch.randn(1, 3), None)[:26]
    'reloaded file == frozen: m'
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fxrazor.cli.models import LoadedModel
from fxrazor.cli.report import call
from fxrazor.export import load_subnet_state
from fxrazor.verify.equivalence import output_scale, within

__all__ = ["reload_line", "tensor_leaves"]


def tensor_leaves(out: Any) -> list[torch.Tensor]:
    """The tensors of an output, in order (dict values, sequence items, nested)."""
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in tensor_leaves(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in tensor_leaves(v)]
    return [out] if isinstance(out, torch.Tensor) else []


def _difference(got: list[torch.Tensor], want: list[torch.Tensor]) -> float | None:
    """The largest absolute difference; None where the outputs do not pair up."""
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=True)):
        return None
    return max((float((g.double() - w.double()).abs().max()) for g, w in zip(got, want,
                                                                              strict=True)
                if g.numel()), default=0.0)


def _onnx_outputs(path: str, inputs: Any) -> list[torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    values = list(inputs.values()) if isinstance(inputs, Mapping) else \
        list(inputs) if isinstance(inputs, tuple) else [inputs]
    feed = {n: v.detach().cpu().numpy() for n, v in zip(names, values, strict=False)}
    return [torch.from_numpy(o) for o in session.run(None, feed)]


def reload_line(path: str, fmt: str, frozen: nn.Module, inputs: Any,
                loaded: LoadedModel | None) -> str:
    """Load ``path`` back, run it on ``inputs``, and say how far it is from ``frozen``
    (``loaded``: the original model and convert options, for ``state_dict``)."""
    want = call(frozen, inputs)
    if fmt == "pt2":
        got = call(torch.export.load(path).module(), inputs)
    elif fmt == "torchscript":
        got = call(torch.jit.load(path), inputs)
    elif fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return "reloaded file: not checked (onnxruntime is not installed)"
        got = _onnx_outputs(path, inputs)
    else:
        assert loaded is not None  # (state_dict is rebuilt from the model)
        options = dict(loaded.convert_options)
        got = call(load_subnet_state(loaded.model, loaded.inputs, path, **options), inputs)
    error = _difference(tensor_leaves(got), tensor_leaves(want))
    if error is None:
        return "reloaded file: not compared (its outputs do not pair up with the model's)"
    scale = output_scale(want)
    verdict = "==" if within(error, scale) else "!="
    return f"reloaded file {verdict} frozen: max |diff| {error:.1e} (output scale {scale:.1e})"
