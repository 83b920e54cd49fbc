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

A model with op mutables (``OneShotMutableOP``, ``DiffMutableOP``, ...) or bound value
mutables has them in the same dict: see :meth:`Supernet.choices`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import fx, nn

from fxrazor.analysis.result import ChannelAnalysis
from fxrazor.errors import (
    FxRazorError,
    InvalidArgumentError,
    InvalidChoiceError,
    SubnetConfigError,
    UnknownUnitError,
)
from fxrazor.layers.weights import UnitMember
from fxrazor.mutables.channel_unit import MutableChannelUnit
from fxrazor.mutators.channel_mutator import ChannelMutator
from fxrazor.mutators.nas_mutator import (
    VALUE_RECORD,
    NasMutator,
    check_sample_mode,
    hold_value_mutables,
    unknown_keys_error,
)
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


class Supernet(nn.Module):
    """A model whose channel widths are chosen per unit. Build it with ``fxrazor.convert``.

    Attributes:
        graph_module: the graph of dynamic ops.
        example_args: the example inputs it was built with (one per graph input).
        all_units: every unit found, including single-channel and fixed ones.
        analysis: the channel analysis (units, pinned groups and why).
        arch_param_dict: the arch params of the differentiable op mutables (see
            :meth:`arch_params`); empty when there are none.
        value_mutable_dict: the recorded value mutables as submodules (see
            :meth:`sync_value_modules`); absent while none are recorded.
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
        self.prepare_mutators()

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
        # (caches over the layers, e.g. the estimate's plan, compare this count)
        self.__dict__["_fxr_layers_version"] = self.__dict__.get("_fxr_layers_version", 0) + 1
        self._last_mask = None  # push every selection again on the next forward
        # Find the op mutables again on next use (not now: convert replaces many layers).
        self.__dict__["_fxr_nas_mutator"] = None

    # ---- mutators and the one choices dict ----------------------------------------------
    def prepare_mutators(self) -> None:
        """Build the channel and NAS mutators again (the NAS one finds the op mutables
        in ``graph_module`` and the value mutables recorded on the supernet, checks alias
        groups, and gives differentiable ops their arch params). Done when the supernet
        is built; a changed value record is picked up by itself.
        """
        if "arch_param_dict" not in self._modules:  # (also a supernet pickled before them)
            self.arch_param_dict = nn.ParameterDict().train(self.training)
        channel = ChannelMutator()
        channel.prepare_from_supernet(self)
        self.__dict__["_fxr_channel_mutator"] = channel
        self.__dict__["_fxr_nas_mutator"] = None
        self.nas_mutator  # noqa: B018 (builds it now, so alias errors surface here)

    @property
    def channel_mutator(self) -> ChannelMutator:
        """The mutator of the channel units."""
        if "_fxr_channel_mutator" not in self.__dict__:  # a supernet pickled before them
            self.prepare_mutators()
        return cast(ChannelMutator, self.__dict__["_fxr_channel_mutator"])

    @property
    def nas_mutator(self) -> NasMutator:
        """The mutator of the op and value mutables (rebuilt when the record of value
        mutables, ``__dict__['_fxr_value_mutables']``, changed since it was built)."""
        if "_fxr_channel_mutator" not in self.__dict__:  # a supernet pickled before them
            self.prepare_mutators()
        nas = self.__dict__.get("_fxr_nas_mutator")
        record = self.__dict__.get(VALUE_RECORD) or {}
        if nas is None or not nas.matches_values(record):
            nas = NasMutator()
            nas.prepare_from_supernet(self, record, [u.name for u in self.every_unit()])
            nas.prepare_arch_params(self.arch_param_dict)
            self.__dict__["_fxr_nas_mutator"] = nas
            self.sync_value_modules()
        return cast(NasMutator, nas)

    def sync_value_modules(self) -> None:
        """Hold the recorded value mutables as submodules, ``value_mutable_dict`` (see
        :func:`~fxrazor.mutators.nas_mutator.hold_value_mutables`); value binding calls it."""
        hold_value_mutables(self)

    def arch_params(self) -> nn.ParameterDict:
        """The architecture parameters: one per search group of differentiable op mutables,
        shaped ``(candidates,)``, named by the group key with dots as ':'. They are in
        ``state_dict()`` under ``arch_param_dict.<name>`` and move with the supernet; give
        them an optimizer of their own, and :meth:`model_params` to the weights' one.

        Example:
            >>> import torch, fxrazor
            >>> from torch import nn
            >>> sn = fxrazor.convert(nn.Linear(2, 2), torch.randn(1, 2))
            >>> len(sn.arch_params())
            0
        """
        self.nas_mutator  # noqa: B018 (a new record may bring new groups)
        return self.arch_param_dict

    def model_params(self) -> Iterator[nn.Parameter]:
        """The model's weights: the parameters of ``graph_module``. Neither the arch params
        (:meth:`arch_params`) nor a channel unit's own ones (DMCP's ``arch_param``, in
        ``all_units``) are among them.

        Example:
            >>> import torch, fxrazor
            >>> from torch import nn
            >>> sn = fxrazor.convert(nn.Linear(2, 3), torch.randn(1, 2), unit="dmcp")
            >>> [tuple(p.shape) for p in sn.model_params()]
            [(3, 2), (3,)]
        """
        return self.graph_module.parameters()

    def choices(self) -> dict[str, Any]:
        """The current choice of everything searched, in one dict: ``{unit name: width}``
        for mutable channel units (graph order), then ``{key: candidate name}`` for op
        mutables (key: module path in ``graph_module``; a route's choice is a list of
        edge names), then ``{key: value}`` for value mutables (their recorded key).
        Mutables sharing an alias have one entry, keyed by the alias; fixed ones none.
        A differentiable op's choice is a record (what to fix it to, e.g. the argmax of
        its arch param); until fixed, its forward mixes the candidates by the arch param.

        Example:
            >>> import torch, fxrazor
            >>> from torch import nn
            >>> from fxrazor.mutables import OneShotMutableOP
            >>> model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1),
            ...                       OneShotMutableOP({"id": nn.Identity(), "relu": nn.ReLU()}))
            >>> sn = fxrazor.convert(model, torch.randn(1, 3, 2, 2))
            >>> sn.choices()
            {'0': 4, '2': 'id'}
            >>> sn.set_choices({"0": 2, "2": "relu"}); sn.choices()
            {'0': 2, '2': 'relu'}
        """
        return {**self.channel_mutator.current_choices, **self.nas_mutator.current_choices}

    def set_choices(self, choices: dict[str, Any]) -> None:
        """Apply ``{key: choice}`` (any subset of the keys of :meth:`choices`, or any unit's
        name); every key is checked before any is set, and a refused choice undoes the
        others, so nothing is ever half-applied."""
        if not isinstance(choices, dict):
            raise InvalidChoiceError(f"choices must be a dict, got {type(choices).__name__}")
        channel, nas = self.channel_mutator, self.nas_mutator
        units = {u.name for u in self.every_unit()}
        groups = {g.key for g in nas.groups}
        unknown = [k for k in choices if k not in units and k not in groups]
        if unknown:
            raise unknown_keys_error(unknown, list(self.choices()), nas.hints())
        before = channel.snapshot()
        channel.set_choices({k: v for k, v in choices.items() if k in units})
        try:
            nas.set_choices({k: v for k, v in choices.items() if k not in units})
        except FxRazorError:
            channel.restore(before)
            raise

    def prune(self, target: Any, **options: Any) -> dict[str, Any]:
        """Set the unit widths to meet ``target`` by a criterion: see
        :func:`fxrazor.pruning.prune` (that stage sits above the supernet, hence the
        import on call)."""
        return importlib.import_module("fxrazor.pruning").prune(  # type: ignore[no-any-return]
            self, target, **options)

    def sample_choices(self, mode: str = "random") -> dict[str, Any]:
        """A choice for every key of :meth:`choices` (not applied), by ``mode``:
        ``random``, ``max`` or ``min``. Op mutables have no size order of their own:
        ``max``/``min`` take the candidate with the most/fewest parameters, and a
        differentiable op the argmax of its arch param (for both); see
        ``fxrazor.mutators.choice_rules``."""
        check_sample_mode(mode)
        return {**self.channel_mutator.sample_choices(mode),
                **self.nas_mutator.sample_choices(mode)}

    # ---- forward -----------------------------------------------------------------------------------
    def current_mask(self) -> torch.Tensor:
        """All unit masks concatenated, plus one always-True entry for pinned positions."""
        masks = [u.current_mask for u in self.every_unit()]
        return torch.cat([*masks, torch.ones(1, dtype=torch.bool)])

    def sync(self) -> None:
        """Push the units' current masks into every dynamic op and size literal (every
        channel kept inside :meth:`full_width`)."""
        mask = self.current_mask()
        if self.__dict__.get("_fxr_full_depth", 0):
            mask = torch.ones_like(mask)
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
        """Run at full width inside the block (the supernet's forward and its graph
        module's), whatever the units' choices; the choices themselves are untouched.
        Searched kernel sizes and op choices stay as chosen.

        Example:
            >>> import torch, fxrazor
            >>> from torch import nn
            >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
            ...                      torch.randn(1, 4))
            >>> sn.set_choices({"0": 3})
            >>> with sn.full_width():
            ...     sn.graph_module.get_submodule("1").to_static().in_features
            8
            >>> sn.choices()
            {'0': 3}
        """
        self.__dict__["_fxr_full_depth"] = self.__dict__.get("_fxr_full_depth", 0) + 1
        self.sync()
        try:
            yield
        finally:
            self.__dict__["_fxr_full_depth"] -= 1
            self.sync()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        _outside_compile()(self)
        return self.graph_module(*args, **kwargs)

    def _prepare(self) -> None:
        self.sync()
        # .to() or load_state_dict may have put in new arch param objects: bind them
        (self.__dict__.get("_fxr_nas_mutator") or self.nas_mutator).bind_arch_params()
        # The graph module generates its code on first use; doing it here rather than inside
        # its own call keeps hooks registered on it from running twice on that call.
        generate = getattr(self.graph_module, "real_recompile", None)
        if generate is not None:
            generate()

    # ---- subnet configs (used by fxrazor.export_fix_subnet / load_fix_subnet) --------------
    def _fxr_dump_subnet(self) -> dict[str, Any]:
        config = {u.name: u.config_template(with_init_args=True) for u in self.units}
        for group in self.nas_mutator.groups:  # op and value mutables: choice and candidates
            config[group.key] = {"choice": group.first.current_choice,
                                 "all_choices": group.candidates}
        return config

    def _fxr_load_subnet(self, config: dict[str, Any]) -> None:
        if not isinstance(config, dict):
            raise SubnetConfigError(f"a subnet config must be a dict, got {type(config).__name__}")
        groups = [g.key for g in self.nas_mutator.groups]
        names = {u.name for u in self.units} | set(groups)
        extra = sorted(set(config) - {u.name for u in self.all_units} - set(groups))
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


@functools.cache
def _outside_compile() -> Any:
    """``Supernet._prepare`` under ``torch.compiler.disable``: torch.compile runs this
    bookkeeping eagerly (traced, masks to selections broke the graph three times) and
    compiles the graph module's call as one graph per subnet. Made at the first forward:
    making it imports torch._dynamo, 2.4 s of a 5 s ``import fxrazor``."""
    return torch.compiler.disable(Supernet._prepare)
