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
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import fx, nn

from fxrazor.analysis.result import ChannelAnalysis, Slot
from fxrazor.errors import (
    InvalidArgumentError,
    InvalidChoiceError,
    SubnetConfigError,
    UnknownUnitError,
)
from fxrazor.mutables.channel_unit import MutableChannelUnit
from fxrazor.ops import Binding, DynamicOp, Selection, SizeCounter

__all__ = ["Supernet", "UnitMember"]

logger = logging.getLogger(__name__)


def _selection(kept: torch.Tensor) -> Selection:
    """None when all kept; a slice when the kept positions are one block; else indices."""
    if bool(kept.all()):
        return None
    idx = kept.nonzero().flatten()
    if idx.numel() and int(idx[-1]) - int(idx[0]) + 1 == idx.numel():
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


@dataclass(frozen=True)
class UnitMember:
    """One slot of a unit in a supernet: a layer's role, or a dim of a parameter.

    Attributes:
        slot: the slot (``target``, ``role``: ``out``/``in``/``channels``/``dim<k>``).
        module: the layer at ``slot.target`` (its dynamic op), or None for a parameter.
        positions: a (num_channels, r) array: unit channel k is positions
            ``positions[k]`` of the slot.
    """

    slot: Slot
    module: nn.Module | None
    positions: np.ndarray

    @property
    def target(self) -> str:
        return self.slot.target

    @property
    def role(self) -> str:
        return self.slot.role


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

    def unit_members(self, name: str) -> list[UnitMember]:
        """The slots of unit ``name``, with the layer now at each (method units read
        them in ``prepare_for_pruning`` to put in their own layers).

        Example:
            >>> import torch, fxrazor
            >>> from torch import nn
            >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4),
            ...                                    nn.Conv2d(4, 2, 1)), torch.randn(1, 3, 4, 4))
            >>> [(m.target, m.role) for m in sn.unit_members("0")]
            [('0', 'out'), ('1', 'channels'), ('2', 'in')]
        """
        self.unit(name)  # a clear error for an unknown name
        spec = next(s for s in self.analysis.units if s.name == name)
        return [UnitMember(slot, None if slot.is_param
                           else self.graph_module.get_submodule(slot.target), positions)
                for slot, positions in spec.members]

    def replace_layer(self, target: str, module: nn.Module) -> None:
        """Put ``module`` at layer path ``target`` of the graph, in place of the layer
        there, and move that layer's selections to it. For method units that bring their
        own layers (a switchable BatchNorm, a fusing conv): ``module`` must take the
        selections of the roles the old layer had (``set_selection``).

        Example:
            >>> import torch, fxrazor
            >>> from torch import nn
            >>> from fxrazor.ops.conv import DynamicConv2d
            >>> sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)),
            ...                      torch.randn(1, 3, 4, 4))
            >>> sn.replace_layer("0", DynamicConv2d.from_static(nn.Conv2d(3, 4, 1)))
            >>> sn.set_choices({"0": 2}); sn(torch.randn(1, 3, 4, 4)).shape
            torch.Size([1, 2, 4, 4])
        """
        try:
            old = self.graph_module.get_submodule(target)
        except AttributeError as e:
            raise InvalidArgumentError(f"replace_layer: the graph has no layer {target!r}") from e
        bound = [b for b in self._bindings if b.module is old]
        if bound and not callable(getattr(module, "set_selection", None)):
            raise InvalidArgumentError(
                f"replace_layer: layer {target!r} has prunable channels, so its replacement "
                f"must be a dynamic op (set_selection); got {type(module).__name__}")
        parent, _, attr = target.rpartition(".")
        setattr(self.graph_module.get_submodule(parent) if parent else self.graph_module,
                attr, module)
        for binding in bound:
            binding.module = module
        self._last_mask = None  # push every selection again on the next forward

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
