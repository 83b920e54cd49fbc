"""The supernet: a graph module of dynamic ops whose widths follow channel units.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import fxrazor
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> sn = fxrazor.convert(model, torch.randn(1, 3, 8, 8))
    >>> sn.choices()
    {'0': 8}
    >>> sn.set_choices({'0': 5})
    >>> sn(torch.randn(1, 3, 8, 8)).shape
    torch.Size([1, 4, 6, 6])
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import fx, nn

from fxrazor.analysis.result import ChannelAnalysis
from fxrazor.errors import InvalidChoiceError, SubnetConfigError, UnknownUnitError
from fxrazor.mutables.channel_unit import MutableChannelUnit
from fxrazor.ops import Binding, DynamicOp, Selection, SizeCounter

__all__ = ["Supernet"]

logger = logging.getLogger(__name__)


def _selection(kept: torch.Tensor) -> Selection:
    """None when all kept; a slice when the kept positions are one block; else indices."""
    if bool(kept.all()):
        return None
    idx = kept.nonzero().flatten()
    if idx.numel() and int(idx[-1]) - int(idx[0]) + 1 == idx.numel():
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


class Supernet(nn.Module):
    """A model whose channel widths are chosen per unit. Build it with ``fxrazor.convert``.

    Attributes:
        graph_module: the graph of dynamic ops.
        example_args: the example inputs it was built with (one per graph input).
        all_units: every unit found, including single-channel and fixed ones.
        analysis: the channel analysis (units, pinned groups and why).
    """

    def __init__(self, graph_module: fx.GraphModule, units: list[MutableChannelUnit],
                 analysis: ChannelAnalysis, bindings: list[Binding], counters: list[Binding],
                 example_args: tuple[Any, ...] = ()) -> None:
        super().__init__()
        self.graph_module = graph_module
        self.all_units = nn.ModuleList(units)
        self.analysis = analysis
        self._bindings = bindings
        self._counters = counters
        self._last_mask: torch.Tensor | None = None
        self.example_args = example_args
        # Take the graph's mode without walking the whole graph module again.
        self.training = graph_module.training
        self.all_units.train(self.training)

    # ---- units and choices ---------------------------------------------------------------------
    def every_unit(self) -> list[MutableChannelUnit]:
        """Every unit, single-channel and fixed ones included, in the order of
        ``analysis.units`` (``all_units`` holds them as a ModuleList, so that they move with
        the supernet, which types them as plain modules)."""
        return cast("list[MutableChannelUnit]", list(self.all_units))

    @property
    def units(self) -> list[MutableChannelUnit]:
        """The mutable units (more than one channel, not fixed), in graph order."""
        return [u for u in self.every_unit() if u.is_mutable]

    def unit(self, name: str) -> MutableChannelUnit:
        for u in self.every_unit():
            if u.name == name:
                return u
        raise UnknownUnitError(
            f"no unit named {name!r}; units are {[u.name for u in self.units][:20]}"
            + (" ..." if len(self.units) > 20 else "")
        )

    def choices(self) -> dict[str, Any]:
        """``{unit name: current choice}`` for every mutable unit."""
        return {u.name: u.current_choice for u in self.units}

    def set_choices(self, choices: dict[str, Any]) -> None:
        """Apply ``{unit name: choice}``; every key and value is checked before any is set."""
        if not isinstance(choices, dict):
            raise InvalidChoiceError(f"choices must be a dict, got {type(choices).__name__}")
        units = {u.name: u for u in self.every_unit()}
        unknown = [k for k in choices if k not in units]
        if unknown:
            raise UnknownUnitError(
                f"unknown unit names {unknown}; valid names are listed by supernet.choices()"
            )
        previous = {name: units[name].current_choice for name in choices}
        try:
            for name, choice in choices.items():
                units[name].current_choice = choice
        except InvalidChoiceError:
            for name, choice in previous.items():  # leave nothing half-applied
                if not units[name].is_fixed:
                    units[name].current_choice = choice
            raise

    def sample_choices(self, mode: str = "random") -> dict[str, Any]:
        """A choice per mutable unit: ``random``, ``max`` or ``min`` (not applied)."""
        if mode == "random":
            return {u.name: u.sample_choice() for u in self.units}
        if mode in ("max", "min"):
            return {u.name: getattr(u, f"{mode}_choice") for u in self.units}
        raise InvalidChoiceError(f"sample mode must be 'random', 'max' or 'min', got {mode!r}")

    # ---- forward -----------------------------------------------------------------------------------
    def current_mask(self) -> torch.Tensor:
        """All unit masks concatenated, plus one always-True entry for pinned positions."""
        masks = [u.current_mask for u in self.every_unit()]
        return torch.cat([*masks, torch.ones(1, dtype=torch.bool)])

    def sync(self) -> None:
        """Push the units' current masks into every dynamic op and size literal."""
        mask = self.current_mask()
        if self._last_mask is None or not torch.equal(mask, self._last_mask):
            self._push(mask)

    def _push(self, mask: torch.Tensor) -> None:
        for binding in self._bindings:  # dynamic ops and parameters
            cast(DynamicOp, binding.module).set_selection(binding.role,
                                                          _selection(mask[binding.gidx]))
        for counter in self._counters:
            cast(SizeCounter, counter.module).value = int(mask[counter.gidx].sum())
        self._last_mask = mask

    @contextlib.contextmanager
    def full_width(self) -> Iterator[None]:
        """Run the graph at full width inside the block, whatever the units' choices."""
        self._push(torch.ones_like(self.current_mask()))
        try:
            yield
        finally:
            self._push(self.current_mask())

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.sync()
        # The graph module generates its code on first use; doing it here rather than inside
        # its own call keeps hooks registered on it from running twice on that call.
        generate = getattr(self.graph_module, "real_recompile", None)
        if generate is not None:
            generate()
        return self.graph_module(*args, **kwargs)

    # ---- subnet configs (used by fxrazor.export_fix_subnet / load_fix_subnet) --------------
    def _fxr_dump_subnet(self) -> dict[str, Any]:
        return {u.name: u.config_template(with_init_args=True) for u in self.units}

    def _fxr_load_subnet(self, config: dict[str, Any]) -> None:
        if not isinstance(config, dict):
            raise SubnetConfigError(f"a subnet config must be a dict, got {type(config).__name__}")
        names = {u.name for u in self.units}
        extra = sorted(set(config) - {u.name for u in self.all_units})
        missing = sorted(names - set(config))
        if extra or missing:
            raise SubnetConfigError(
                f"subnet config does not match the supernet: unknown units {extra}, "
                f"missing units {missing}"
            )
        choices = {k: (v["choice"] if isinstance(v, dict) else v) for k, v in config.items()}
        try:
            self.set_choices(choices)
        except InvalidChoiceError as e:
            raise SubnetConfigError(f"subnet config has an invalid choice: {e}") from e
