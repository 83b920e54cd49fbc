"""One equivalence check of a pruning, shared by the zoo runner and the tests.

Three numbers say whether a supernet and its frozen subnets are right:

* *full width*: the supernet at every unit's maximum computes what the model computes;
* *frozen*: the frozen subnet computes what the supernet computes at the same choices;
* *zero oracle*: the original model with the producers of every pruned channel zeroed
  computes what the frozen subnet computes (where the oracle applies, see
  :func:`oracle_applies`).

Each is the largest absolute difference over all outputs (:func:`output_error`). The
callers judge it against a tolerance relative to the output's magnitude; :func:`within`
is the documented default (``1e-4`` of the scale, and of 1 for outputs smaller than 1).

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    >>> x = torch.randn(1, 3, 4, 4)
    >>> sn = fxrazor.convert(model, x)
    >>> check_full_width(model, sn, x).passed()
    True
    >>> sn.set_choices({"0": 3})
    >>> check = check_subnet(model, sn, x)
    >>> check.passed(), check.oracle_error is not None
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fxrazor.rules.statistics import is_norm_statistic
from fxrazor.supernet import Supernet
from fxrazor.verify.oracle import zero_pruned_channels

__all__ = [
    "DEFAULT_RTOL", "FullWidthCheck", "SubnetCheck", "output_error", "output_scale", "within",
    "oracle_applies", "zero_oracle_error", "check_full_width", "check_subnet",
]

DEFAULT_RTOL = 1e-4
"""Default tolerance of :func:`within`: float32 sums in another order differ by about this."""

_NORMS_OVER_CHANNELS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _leaves(out: Any, path: str = "output") -> dict[str, Any]:
    """Every leaf of nested tuples, lists and dicts, keyed by its path."""
    if isinstance(out, Mapping):
        return {p: v for k in out for p, v in _leaves(out[k], f"{path}[{k!r}]").items()}
    if isinstance(out, (tuple, list)):
        return {p: v for i, x in enumerate(out) for p, v in _leaves(x, f"{path}[{i}]").items()}
    return {path: out}


def _difference(a: torch.Tensor, e: torch.Tensor) -> float:
    if not a.numel():
        return 0.0
    if not (a.is_floating_point() or a.is_complex()):  # ints and bools: exact or not
        a, e = a.double(), e.double()
    return (a.detach() - e.detach()).abs().max().item()


def output_error(actual: Any, expected: Any) -> float:
    """The largest absolute difference between two outputs.

    Outputs are tensors or tuples, lists and dicts of them (a segmentation model's
    ``{"out": ...}``); other leaves (ints, None) count as equal or not at all. Different
    structures, keys or shapes give ``inf``; a NaN anywhere gives NaN (which no tolerance
    passes).

    Example:
        >>> import torch
        >>> output_error({"out": torch.tensor([1.0, 2.0])}, {"out": torch.tensor([1.0, 2.5])})
        0.5
        >>> output_error(torch.zeros(2), torch.zeros(3))
        inf
    """
    got, want = _leaves(actual), _leaves(expected)
    if got.keys() != want.keys():
        return math.inf
    error = 0.0
    for path, e in want.items():
        a = got[path]
        if isinstance(a, torch.Tensor) != isinstance(e, torch.Tensor):
            return math.inf
        if not isinstance(a, torch.Tensor):
            if a != e:
                return math.inf
            continue
        if a.shape != e.shape:
            return math.inf
        diff = _difference(a, e)
        if math.isnan(diff):
            return math.nan
        error = max(error, diff)
    return error


def output_scale(out: Any) -> float:
    """The largest absolute value over all tensors of an output (0.0 when there are none).

    Example:
        >>> import torch
        >>> output_scale((torch.tensor([-3.0, 1.0]), {"aux": torch.tensor([2.0])}))
        3.0
    """
    values = [v.detach().abs().max().item() for v in _leaves(out).values()
              if isinstance(v, torch.Tensor) and v.numel()]
    return max(values, default=0.0)


def within(error: float, scale: float, rtol: float = DEFAULT_RTOL) -> bool:
    """Whether ``error`` is at most ``rtol`` of ``max(1, scale)`` (NaN never is).

    Example:
        >>> within(5e-4, 10.0), within(5e-4, 0.1), within(float("nan"), 1.0)
        (True, False, False)
    """
    return error <= rtol * max(1.0, scale)


def oracle_applies(supernet: Supernet) -> bool:
    """Whether the zero-invariance oracle holds for the supernet's units.

    It does not where a LayerNorm, GroupNorm or RMSNorm layer is a unit member, or a
    function normalises over a unit's positions (``ChannelAnalysis.normalised``): the norm
    then normalises over pruned channels, and removing them changes its statistics (by
    design), while zeroing them does not remove them.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        >>> oracle_applies(fxrazor.convert(model, torch.randn(2, 4)))
        False
    """
    if supernet.units and any(is_norm_statistic(n) for n in supernet.graph_module.graph.nodes):
        return False  # a norm written with tensor ops (RMSNorm by hand) over channels
    # functions on the graph's parameters (F.layer_norm, F.group_norm, batch statistics
    # over a standardised conv weight) record the positions they normalise over
    if any((p.unit >= 0).any() for p in getattr(supernet.analysis, "normalised", ())):
        return False
    for spec in supernet.analysis.units:
        for slot, _ in spec.members:
            if not slot.is_param and isinstance(
                    supernet.graph_module.get_submodule(slot.target), _NORMS_OVER_CHANNELS):
                return False
    return True


def _call(module: nn.Module, inputs: Any) -> Any:
    """Call ``module`` with inputs given as ``convert`` takes them."""
    if isinstance(inputs, Mapping):
        return module(**inputs)
    if isinstance(inputs, tuple):
        return module(*inputs)
    return module(inputs)


@dataclass(frozen=True)
class FullWidthCheck:
    """The supernet at full width against the model it was converted from.

    Attributes:
        error: :func:`output_error` of the supernet's output against the model's.
        scale: :func:`output_scale` of the model's output.
    """

    error: float
    scale: float

    def passed(self, rtol: float = DEFAULT_RTOL) -> bool:
        return within(self.error, self.scale, rtol)


def check_full_width(model: nn.Module, supernet: Supernet, inputs: Any) -> FullWidthCheck:
    """Set every unit of ``supernet`` to its maximum (it keeps that choice) and compare its
    output with ``model``'s on ``inputs`` (a tensor, a tuple, or a dict of keyword inputs).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model, x = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(3, 4)
        >>> check_full_width(model, fxrazor.convert(model, x), x).error
        0.0
    """
    supernet.set_choices(supernet.sample_choices("max"))
    with torch.no_grad():
        expected = _call(model, inputs)
        return FullWidthCheck(output_error(_call(supernet, inputs), expected),
                              output_scale(expected))


def zero_oracle_error(model: nn.Module, supernet: Supernet, inputs: Any, frozen_output: Any) -> float:
    """:func:`output_error` of the model with the supernet's pruned channels zeroed
    (:func:`~fxrazor.verify.oracle.zero_pruned_channels`) against the frozen subnet's output.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
        >>> x = torch.randn(1, 3, 4, 4)
        >>> sn = fxrazor.convert(model, x)
        >>> sn.set_choices({"0": 3})
        >>> zero_oracle_error(model, sn, x, fxrazor.freeze(sn)(x)) < 1e-5
        True
    """
    with torch.no_grad():
        return output_error(_call(zero_pruned_channels(model, supernet), inputs), frozen_output)


@dataclass(frozen=True)
class SubnetCheck:
    """What :func:`check_subnet` measured for the supernet's current choices.

    Attributes:
        frozen: the frozen subnet (``fxrazor.freeze`` of the choices).
        frozen_output: its output on the inputs.
        frozen_error: :func:`output_error` of ``frozen_output`` against the supernet's.
        oracle_error: :func:`zero_oracle_error`; None where the oracle was not run.
        output_scale: :func:`output_scale` of the supernet's output.
    """

    frozen: nn.Module
    frozen_output: Any
    frozen_error: float
    oracle_error: float | None
    output_scale: float

    def passed(self, rtol: float = DEFAULT_RTOL) -> bool:
        """Both errors :func:`within` ``rtol`` of the output scale (an oracle not run passes)."""
        return within(self.frozen_error, self.output_scale, rtol) and (
            self.oracle_error is None or within(self.oracle_error, self.output_scale, rtol))


def check_subnet(model: nn.Module, supernet: Supernet, inputs: Any, *,
                 frozen: nn.Module | None = None, oracle: bool | None = None) -> SubnetCheck:
    """Freeze the supernet's current choices and compare the frozen subnet with the
    supernet and, through the zero oracle, with ``model``.

    Args:
        model: the model ``supernet`` was converted from (left unchanged).
        supernet: the :class:`fxrazor.Supernet`, at the choices to check.
        inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        frozen: the frozen subnet of these choices where the caller has it; frozen here
            when None.
        oracle: run the zero oracle; None runs it where :func:`oracle_applies`.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)).eval()
        >>> x = torch.randn(3, 4)
        >>> sn = fxrazor.convert(model, x)
        >>> sn.set_choices({"0": 5})
        >>> check = check_subnet(model, sn, x)
        >>> check.frozen_error < 1e-5, check.oracle_error
        (True, None)
    """
    if frozen is None:
        import fxrazor  # when used: the face may come to import this module

        frozen = fxrazor.freeze(supernet)
    with torch.no_grad():
        expected = _call(supernet, inputs)
        got = _call(frozen, inputs)
    run_oracle = oracle_applies(supernet) if oracle is None else oracle
    return SubnetCheck(
        frozen=frozen, frozen_output=got, frozen_error=output_error(got, expected),
        oracle_error=zero_oracle_error(model, supernet, inputs, got) if run_oracle else None,
        output_scale=output_scale(expected))
