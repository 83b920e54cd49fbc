"""Switchable BatchNorm: one set of statistics and affine parameters per width.

Yu et al., "Slimmable Neural Networks" (ICLR 2019): the widths of a slimmable network share
their convolution weights but not their BatchNorm, whose statistics differ with the number
of channels feeding each output. A switchable BatchNorm is a ``nn.BatchNorm*d`` (its own
parameters and buffers are the full-width set) plus ``candidate_bn``, one plain BatchNorm
per narrower width, keyed by the width (as MMRazor's ``SwitchableBatchNorm2d``). The width
in force is the number of positions its channel selection keeps; the forward runs that
width's set only, so training at one width never moves another width's statistics or
parameters. Every set starts as the slice of the full-width one that its width keeps.

The sets are registered submodules with stable names (``candidate_bn.<width>.weight``), so
they go through ``state_dict`` and optimizers; under ``DistributedDataParallel`` the sets
not used at a step are unused parameters (``find_unused_parameters=True``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> bn = SwitchableBatchNorm2d.from_static(nn.BatchNorm2d(4), {2: slice(0, 2)})
    >>> bn.widths
    [2, 4]
    >>> bn.set_selection("channels", slice(0, 2))
    >>> _ = bn(torch.randn(3, 2, 5, 5))  # trains the width-2 set only
    >>> int(bn.candidate_bn["2"].num_batches_tracked), int(bn.num_batches_tracked)
    (1, 0)
    >>> type(bn.to_static()).__name__, bn.to_static().num_features
    ('BatchNorm2d', 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError, InvalidChoiceError
from fxrazor.ops.base import DynamicOp, Selection, count, retype, take

if TYPE_CHECKING:  # the mixin is only ever combined with these layer types
    _BatchNormBase = nn.modules.batchnorm._BatchNorm
else:
    _BatchNormBase = object

__all__ = ["SwitchableBatchNorm1d", "SwitchableBatchNorm2d", "SwitchableBatchNorm3d",
           "SWITCHABLE_BATCH_NORMS"]


def _plain_copy(source: nn.Module, kind: type[nn.Module], sel: Selection) -> nn.Module:
    """A new ``kind`` module with ``source``'s settings (eps, momentum, affine, ... whatever
    this torch version keeps) and copies of its tensors at positions ``sel`` (scalars as
    they are), with hooks and submodules of its own."""
    made = kind.__new__(kind)
    nn.Module.__init__(made)
    for key, value in source.__dict__.items():  # the settings: plain attributes only
        if key not in made.__dict__ and key not in ("_fxr_sel", "layer_name"):
            made.__dict__[key] = value
    made.training = source.training
    made._non_persistent_buffers_set = set(source._non_persistent_buffers_set)
    for name, param in source._parameters.items():
        made._parameters[name] = None if param is None else nn.Parameter(
            take(param.detach(), 0, sel).clone().contiguous(), param.requires_grad)
    for name, buf in source._buffers.items():
        made._buffers[name] = None if buf is None else (
            buf if buf.dim() == 0 else take(buf, 0, sel)).detach().clone().contiguous()
    return made


class _SwitchableBatchNormMixin(DynamicOp, _BatchNormBase):
    """A BatchNorm with one set of statistics and affine parameters per kept subset."""

    static_type: ClassVar[type[nn.modules.batchnorm._BatchNorm]]
    candidate_bn: nn.ModuleDict
    layer_name: str  # the layer's path in its graph, for messages
    _fxr_keys: dict[bytes, str]  # kept positions (as mask bytes) -> set name
    _fxr_active: str | None  # the set in force (None: the layer's own, full width)

    @classmethod
    def from_static(cls, module: nn.Module,
                    candidates: Mapping[int | str, Selection] | None = None,
                    name: str = "") -> _SwitchableBatchNormMixin:
        """A switchable BatchNorm sharing ``module``'s parameters and buffers as its
        full-width set, with the sets of ``candidates`` (see :meth:`set_candidates`), each
        sliced from ``module``. ``name`` (the layer's path) is for messages. ``module``
        itself is not changed."""
        if not isinstance(module, cls.static_type):
            raise InvalidArgumentError(
                f"{cls.__name__}.from_static needs a {cls.static_type.__name__}, got "
                f"{type(module).__name__}")
        op = cast(_SwitchableBatchNormMixin, retype(module, cls))
        op.__dict__.update(_fxr_sel={}, layer_name=name, _fxr_keys={}, _fxr_active=None)
        op._modules.pop("candidate_bn", None)  # (from a switchable one: sets are rebuilt)
        nn.Module.__setattr__(op, "candidate_bn", nn.ModuleDict())
        op.set_candidates(candidates or {})
        return op

    # ---- the sets -----------------------------------------------------------------------------
    @property
    def widths(self) -> list[int]:
        """The widths that have a set, full width included, ascending."""
        return sorted({self.num_features, *(int(cast(Any, bn).num_features) for bn in
                                            self.candidate_bn.values())})

    @property
    def width(self) -> int:
        """The width in force: the number of positions the channel selection keeps."""
        return count(self.selection("channels"), self.num_features)

    def _key(self, sel: Selection) -> bytes:
        """The kept positions of ``sel``, as the bytes of a bool mask."""
        mask = torch.zeros(self.num_features, dtype=torch.bool)
        mask[slice(None) if sel is None else sel if isinstance(sel, slice) else sel.cpu()] = True
        return mask.numpy().tobytes()

    def set_candidates(self, candidates: Mapping[int | str, Selection]) -> None:
        """Make the sets ``{name: the positions that set keeps}``. An int name is a width
        (``str(width)`` names the set, as in MMRazor, and its positions must keep that
        many); a str name is for layers whose kept positions a width alone does not say
        (several units). A set already of that name keeps its statistics and parameters as
        trained; a new one starts as the slice of the full-width set at its positions; sets
        not named are dropped. Full width is always the layer's own set. Checked before
        any change."""
        named: dict[str, Selection] = {}
        keys: dict[bytes, str] = {}
        for name, sel in candidates.items():
            width = count(sel, self.num_features)
            if isinstance(name, bool) or not isinstance(name, int | str) \
                    or (isinstance(name, int) and name != width) \
                    or (isinstance(name, str) and (not name or "." in name)) \
                    or not 1 <= width <= self.num_features:
                raise InvalidChoiceError(
                    f"switchable BatchNorm {self.layer_name!r}: a set is named by its width "
                    f"(an int in [1, {self.num_features}]) or a str without '.'; got "
                    f"{name!r} for positions that keep {width} channels")
            if width != self.num_features:
                named[str(name)] = sel
                keys[self._key(sel)] = str(name)
        sets = {name: self.candidate_bn[name] if name in self.candidate_bn
                else self._sliced_set(sel) for name, sel in sorted(named.items())}
        self.candidate_bn = nn.ModuleDict(sets)
        self.__dict__["_fxr_keys"] = keys
        self._activate(self.selection("channels"), strict=False)

    def _sliced_set(self, sel: Selection) -> nn.Module:
        """A plain BatchNorm holding the full set's values at ``sel``."""
        made: Any = _plain_copy(self, self.static_type, sel)
        made.num_features = count(sel, self.num_features)
        return made

    def _activate(self, sel: Selection, strict: bool = True) -> None:
        """Put the set of ``sel`` in force; a clear error (or, not ``strict``, a mark that
        fails the next forward) when there is none."""
        if count(sel, self.num_features) == self.num_features:
            self.__dict__["_fxr_active"] = None
            return
        name = self._fxr_keys.get(self._key(sel))
        if name is None and strict:
            raise InvalidChoiceError(self._missing(sel))
        self.__dict__["_fxr_active"] = "" if name is None else name

    def _missing(self, sel: Selection) -> str:
        return (f"switchable BatchNorm {self.layer_name!r} has no set of statistics for "
                f"the {count(sel, self.num_features)} channels now kept; it has widths "
                f"{self.widths}. Choose among the unit's candidates, or rebuild the sets "
                f"with the unit's alter_candidates_of_switchbn")

    def _current_set(self) -> nn.Module:
        active = self._fxr_active
        if active == "":
            raise InvalidChoiceError(self._missing(self.selection("channels")))
        return self if active is None else self.candidate_bn[active]

    # ---- the dynamic-op protocol -------------------------------------------------------------
    def set_selection(self, role: str, sel: Selection) -> None:
        if role != "channels":
            raise InvalidArgumentError(
                f"switchable BatchNorm {self.layer_name!r} has only the 'channels' role, "
                f"got {role!r}")
        self._activate(sel)  # fails here, before the selection moves
        super().set_selection(role, sel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self._current_set()
        if active is self:
            return super().forward(x)
        return active(x)

    def to_static(self) -> nn.Module:
        """A plain BatchNorm of the set in force, its tensors copied."""
        return _plain_copy(self._current_set(), self.static_type, None)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, widths={self.widths}"


class SwitchableBatchNorm1d(_SwitchableBatchNormMixin, nn.BatchNorm1d):
    static_type = nn.BatchNorm1d


class SwitchableBatchNorm2d(_SwitchableBatchNormMixin, nn.BatchNorm2d):
    static_type = nn.BatchNorm2d


class SwitchableBatchNorm3d(_SwitchableBatchNormMixin, nn.BatchNorm3d):
    static_type = nn.BatchNorm3d


# The switchable op of each BatchNorm type (SyncBatchNorm has none: it keeps shared statistics).
SWITCHABLE_BATCH_NORMS: Mapping[type[nn.Module], type[_SwitchableBatchNormMixin]] = \
    MappingProxyType({nn.BatchNorm1d: SwitchableBatchNorm1d,
                      nn.BatchNorm2d: SwitchableBatchNorm2d,
                      nn.BatchNorm3d: SwitchableBatchNorm3d})
