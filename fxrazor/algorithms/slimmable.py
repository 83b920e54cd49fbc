"""Slimmable networks (Yu et al., "Slimmable Neural Networks", ICLR 2019): a few fixed
widths trained together, each with its own BatchNorm statistics and affine parameters.

The model is converted with ``unit="slimmable"``: every unit takes the width ratios as
its candidates, and each member BatchNorm becomes switchable (a set per width). A step
trains every width on the same batch, one loss per width (``width_0.25``, ...); the
backward passes add to the same gradients and the optimizer steps once.
``export(width)`` freezes the network at one width, with that width's BatchNorm.

Example:
    >>> import torch
    >>> from torch import nn
    >>> algo = SlimmableNetwork(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
    ...                         torch.randn(2, 4), widths=(0.5, 1.0))
    >>> opt = torch.optim.SGD(algo.supernet.model_params(), lr=0.1)
    >>> sorted(algo.train_step((torch.randn(6, 4), torch.tensor([0, 1, 2] * 2)), opt))
    ['width_0.5', 'width_1']
    >>> algo.export(0.5).get_submodule("0").out_features
    4
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from fxrazor.algorithms.base import BaseAlgorithm
from fxrazor.algorithms.subnet_steps import kept_choices
from fxrazor.errors import InvalidArgumentError, InvalidChoiceError
from fxrazor.mutables.slimmable_unit import SlimmableChannelUnit
from fxrazor.supernet import Supernet

__all__ = ["SlimmableNetwork"]

logger = logging.getLogger(__name__)


def _check_widths(widths: Iterable[float]) -> tuple[float, ...]:
    try:
        found = tuple(sorted({float(w) for w in widths}))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"widths must be numbers in (0, 1], got {widths!r}") from e
    if not found or not all(0 < w <= 1 for w in found):
        raise InvalidArgumentError(f"widths must be ratios in (0, 1], got {widths!r}")
    return found


def _loss_key(width: float) -> str:
    return f"width_{width:g}"


class SlimmableNetwork(BaseAlgorithm):
    """Train a fixed set of widths together, with switchable BatchNorm.

    Args:
        model: a model (converted with ``unit="slimmable"`` and the widths as candidates)
            or a :class:`~fxrazor.Supernet` whose units are all slimmable and take every
            width.
        example_inputs: the inputs to trace ``model`` with.
        widths: ratios of every unit's channels, each trained every step.
        seed: kept for the common interface (the widths are fixed: nothing is drawn).
        criterion: ``criterion(outputs, targets) -> loss`` (cross-entropy by default).
        **convert_options: passed to :func:`fxrazor.convert`; ``unit_args`` other than
            the candidates (``divisor``, ``min_value``) go to the units.

    Attributes:
        widths: the widths, smallest first.
        subnets: ``{width: choices}``: every mutable unit at that ratio.
        last_subnets: the subnets the last step trained, keyed as its losses.
    """

    default_unit = "slimmable"

    def __init__(self, model: torch.nn.Module, example_inputs: Any = None, *,
                 widths: Iterable[float] = (0.25, 0.5, 0.75, 1.0), seed: int = 0,
                 criterion: Callable[[Any, Any], torch.Tensor] | None = None,
                 **convert_options: Any) -> None:
        fixed = _check_widths(widths)
        if not isinstance(model, Supernet):
            unit = convert_options.get("unit", "slimmable")
            if unit != "slimmable" and not (isinstance(unit, type)
                                            and issubclass(unit, SlimmableChannelUnit)):
                raise InvalidArgumentError(
                    f"SlimmableNetwork trains switchable BatchNorm: unit must be "
                    f"'slimmable' (or a SlimmableChannelUnit subclass), got {unit!r}")
            unit_args = dict(convert_options.get("unit_args") or {})
            if "candidate_choices" in unit_args or unit_args.get("choice_mode", "ratio") \
                    != "ratio":
                raise InvalidArgumentError(
                    "SlimmableNetwork sets the units' candidates from widths (as ratios); "
                    "leave candidate_choices and choice_mode out of unit_args")
            convert_options["unit_args"] = {**unit_args, "candidate_choices": list(fixed),
                                            "choice_mode": "ratio"}
        super().__init__(model, example_inputs, seed=seed, criterion=criterion,
                         **convert_options)
        self.widths = fixed
        self.subnets = {w: {u.name: w for u in self.supernet.units} for w in fixed}
        self._check_units()
        self.last_subnets: dict[str, dict[str, Any]] = {}

    def _check_units(self) -> None:
        """Every unit is slimmable and every width is one of its candidates (checked once
        here, so that a step never fails halfway)."""
        for unit in self.supernet.units:
            if not isinstance(unit, SlimmableChannelUnit):
                raise InvalidArgumentError(
                    f"unit {unit.name!r} is a {type(unit).__name__}; SlimmableNetwork needs "
                    f"slimmable units (fxrazor.convert(..., unit='slimmable'))")
        for width, subnet in self.subnets.items():
            try:
                with kept_choices(self.supernet):
                    self.supernet.set_choices(subnet)
            except InvalidChoiceError as e:
                raise InvalidArgumentError(
                    f"width {width:g} is not a candidate of every unit: {e}") from e

    def _step(self, inputs: Any, targets: Any) -> Mapping[str, Any]:
        losses: dict[str, torch.Tensor] = {}
        with kept_choices(self.supernet):
            for width, subnet in self.subnets.items():
                self.supernet.set_choices(subnet)
                loss = self.criterion(self(inputs), targets)
                loss.backward()  # now: one width's activations held at a time
                losses[_loss_key(width)] = loss.detach()
        self.last_subnets = {_loss_key(w): s for w, s in self.subnets.items()}
        return losses

    def export(self, width: float | None = None) -> torch.fx.GraphModule:
        """The frozen network at ``width`` (one of :attr:`widths`; the current choices
        when None), with that width's BatchNorm; the supernet's choices are kept."""
        if width is None:
            return super().export()
        if width not in self.subnets:
            raise InvalidArgumentError(f"width {width!r} is not one of {list(self.widths)}")
        with kept_choices(self.supernet):
            self.supernet.set_choices(self.subnets[width])
            return super().export()
