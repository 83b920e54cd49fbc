"""MMRazor's ``ResourceEstimator``: FLOPs and parameters from :func:`fxrazor.estimate`
(a supernet) or ``FlopCounterMode`` (a plain module), latency from a
:class:`~fxrazor.latency.LatencyTable`, in the units asked for.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(3, 4))
    >>> ResourceEstimator(units=None).estimate(sn)["params"]
    58
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fxrazor.errors import InvalidArgumentError
from fxrazor.estimate import estimate
from fxrazor.latency import LatencyTable
from fxrazor.supernet import Supernet
from fxrazor.trace.modes import evaluating

__all__ = ["ResourceEstimator"]

_SCALES = {"G": 1e9, "M": 1e6, "K": 1e3, None: 1.0, "": 1.0}
_CFG_KEYS = {"input_shape", "units", "as_strings"}


class ResourceEstimator:
    """MMRazor's ``ResourceEstimator``, thin over :func:`estimate`.

    Args:
        input_shape: the input shape; None (the default) means the supernet's example
            inputs, which the estimate always uses (another shape is refused). A plain
            module (not a supernet) is measured on ``torch.randn(input_shape)`` with
            FlopCounterMode.
        units: ``'G'``, ``'M'``, ``'K'`` or None (plain counts), for FLOPs and params; a
            dict ``{"flops": ..., "params": ...}`` gives each its own.
        as_strings: give ``"12.345 M"``-like strings instead of numbers.
        flops_params_cfg: overrides of ``input_shape``/``units``/``as_strings``.
        latency_cfg: ``{"table": table, "unit": "ms"}``: a
            :class:`~fxrazor.latency.LatencyTable` (or the path of its JSON) predicts the
            supernet's latency, in ``"ms"`` (default), ``"us"`` or ``"s"``. Without a table
            latency is None (MMRazor's keys for measuring it, ``max_iter`` and such, are
            accepted and ignored: fxrazor does not time the model here).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
        ...                      torch.randn(3, 4))
        >>> ResourceEstimator(units="K").estimate(sn)
        {'flops': 0.288, 'params': 0.058, 'latency': None}

        With a latency table (see :mod:`fxrazor.latency`)::

            ResourceEstimator(latency_cfg={"table": LatencyTable.load("table.json")})
    """

    def __init__(self, input_shape: Sequence[int] | None = None,
                 units: str | Mapping[str, str | None] | None = "M", as_strings: bool = False,
                 flops_params_cfg: Mapping[str, Any] | None = None,
                 latency_cfg: Mapping[str, Any] | None = None) -> None:
        self.cfg = _check_cfg({"input_shape": input_shape, "units": units,
                               "as_strings": as_strings}, flops_params_cfg)
        self.latency_cfg = latency_cfg

    def estimate(self, model: nn.Module, flops_params_cfg: Mapping[str, Any] | None = None,
                 latency_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``{"flops", "params", "latency"}`` of ``model`` (a supernet: its current
        subnet), in this estimator's units; latency is the table's prediction where
        ``latency_cfg`` (this call's, else the estimator's) gives a table, else None."""
        cfg = _check_cfg(self.cfg, flops_params_cfg)
        shape = cfg["input_shape"]
        if isinstance(model, Supernet):
            first = model.example_args[0] if model.example_args else None
            if shape is not None and (not isinstance(first, torch.Tensor)
                                      or tuple(first.shape) != tuple(shape)):
                raise InvalidArgumentError(
                    f"input_shape {tuple(shape)} is not the supernet's example input shape "
                    f"{getattr(first, 'shape', None)}; estimates are at the example inputs")
            counts = estimate(model)
        else:
            if shape is None:
                raise InvalidArgumentError("a plain module needs input_shape")
            counter = FlopCounterMode(display=False)
            with evaluating(model), torch.no_grad(), counter:
                model(torch.randn(*shape))
            counts = {"flops": int(counter.get_total_flops()),
                      "params": sum(p.numel() for p in model.parameters())}
        units = cfg["units"]
        result: dict[str, Any] = {}
        for name in ("flops", "params"):
            unit = units.get(name) if isinstance(units, Mapping) else units
            if unit not in _SCALES:
                raise InvalidArgumentError(f"units must be one of 'G', 'M', 'K' or None, "
                                           f"got {unit!r}")
            value = counts[name] / _SCALES[unit] if unit else counts[name]
            result[name] = f"{value:.3f} {unit}".strip() if cfg["as_strings"] else value
        result["latency"] = _latency(model, latency_cfg if latency_cfg is not None
                                     else self.latency_cfg, cfg["as_strings"])
        return result


_LATENCY_SCALES = {"ms": 1.0, "us": 1e3, "s": 1e-3}


def _latency(model: nn.Module, cfg: Mapping[str, Any] | None, as_strings: bool) -> Any:
    """The latency table's prediction for ``model``'s current subnet (None without one)."""
    table = (cfg or {}).get("table")
    if table is None:
        return None
    unit = (cfg or {}).get("unit", "ms")
    if unit not in _LATENCY_SCALES:
        raise InvalidArgumentError(f"latency unit must be one of {list(_LATENCY_SCALES)}, "
                                   f"got {unit!r}")
    if not isinstance(model, Supernet):
        raise InvalidArgumentError("a latency table predicts a supernet's subnets only")
    if isinstance(table, (str, os.PathLike)):
        table = LatencyTable.load(os.fspath(table))
    value = table.predict(model) * _LATENCY_SCALES[unit]
    return f"{value:.3f} {unit}" if as_strings else value


def _check_cfg(base: Mapping[str, Any], override: Mapping[str, Any] | None
               ) -> dict[str, Any]:
    unknown = sorted(set(override or {}) - _CFG_KEYS)
    if unknown:
        raise InvalidArgumentError(f"unknown flops_params_cfg keys {unknown}; "
                                   f"known: {sorted(_CFG_KEYS)}")
    return {**base, **(override or {})}
