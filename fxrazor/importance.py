"""Channel importance per unit: a criterion scored on every member of the unit, aggregated.

A unit's channels live in several tensors: the layers that make them (weight rows), the
norms over them (BatchNorm's scale), the layers that read them (the next layer's weight
columns). A criterion scores each unit channel in each member (role ``"out"``: producers,
``"norm"``: norms, ``"in"``: consumers; ``members=`` picks the roles); ``aggregate``
(``mean``, ``sum``, ``max``) combines the members, as Torch-Pruning's group reduction does,
and ``normalize`` (``mean``, ``max``, ``sum``, ``standardization``, ``gaussian`` or None)
rescales each unit's scores. A channel spanning several positions of a member (a head, a
flattened map) sums its positions' scores.

Criteria (higher = more important):

* ``"l1"`` / ``"l2"``: ``sum |w|`` / ``sum w**2`` over each channel's weights, in every
  member (producers' rows, norms' scales, consumers' columns);
* ``"bn_scale"``: ``|gamma|`` of the BatchNorm members (a unit without one scores 0);
* ``"taylor"``: ``sum |w * dL/dw|`` in every member; the gradients come from
  ``forward_loop=``/``loader=`` (see below), or are there already: run a loss backward
  first, or pass ``calibrate=`` (called once with the supernet);
* ``"activation"``: the L2 norm ``sqrt(sum x**2)`` of the channel over every calibration
  sample and position (tokens, pixels) in the outputs of the unit's producers and norms
  (default ``members=("out", "norm")``; ``("in",)`` takes the consumers' inputs, where
  Torch-Pruning's ``ActivationImportance`` and ModelOpt's Minitron hooks look; they use
  ``mean |x|`` of the last batch, and mean-over-sequence then L2 over the batch);
* ``"wanda"``: structured Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach
  for Large Language Models"): Wanda scores weight ``W[i, j]`` by ``|W[i, j]| * ||X_j||_2``,
  ``X_j`` input feature j over every calibration token; a channel j scores the sum over its
  column, ``||X_j||_2 * sum_i |W[i, j]|``, in each consumer (``members=("in",)`` only). For
  a conv, ``||X_j||_2`` is over batch and spatial positions and the column is every kernel
  element of input channel j (``W[:, j]``) (not the im2col norm per kernel offset);
* a callable ``criterion(weight, dim, role) -> tensor`` of one score per position along
  ``dim`` (role: ``"out"``, ``"norm"`` or ``"in"``): your own.

Calibration (``activation``, ``wanda``, and ``taylor`` without ready gradients): pass
``forward_loop=fn`` (``fn(model)`` runs batches through ``model``) or ``loader=batches``
(inputs or ``(inputs, targets)``; ``taylor`` uses ``loss_fn(outputs, targets)``, default
cross-entropy). It runs at full width in eval mode and restores the choices, the training
flags and the ``.grad`` of every parameter (:mod:`fxrazor.importance_data`).

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([[1., 1.], [0., 2.], [3., 0.]]))
    ...     _ = model[0].bias.zero_()
    ...     _ = model[2].weight.copy_(torch.tensor([[1., 0., 1.]]))
    >>> sn = fxrazor.convert(model, torch.randn(1, 2))
    >>> importance(sn, "l1", aggregate="sum")["0"].tolist()  # rows + the next layer's columns
    [3.0, 2.0, 4.0]
    >>> x = torch.tensor([[3.0, 4.0]])
    >>> importance(sn, "activation", loader=[x])["0"].tolist()  # ||(7, 8, 9)|| over 1 sample
    [7.0, 8.0, 9.0]
    >>> importance(sn, "wanda", loader=[x])["0"].tolist()  # |W2[:, j]| * ||relu(h)_j||
    [7.0, 0.0, 9.0]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from fxrazor.analysis.result import Slot, UnitSpec
from fxrazor.errors import InvalidArgumentError
from fxrazor.importance_data import (
    Calibration,
    ForwardLoop,
    LossFn,
    calibrating,
    restored_grads,
    square_sums,
)
from fxrazor.layers import LayerRecord, UnitWeights
from fxrazor.supernet import Supernet

__all__ = ["importance", "CRITERIA", "DATA_CRITERIA", "AGGREGATES", "NORMALIZERS", "ROLES"]

log = logging.getLogger(__name__)

Criterion = Callable[[torch.Tensor, int, str], torch.Tensor]


def _per_position(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every dim but ``dim``."""
    return values.movedim(dim, 0).reshape(values.shape[dim], -1).sum(1)


def _l1(w: torch.Tensor, dim: int, role: str) -> torch.Tensor:
    return _per_position(w.detach().abs(), dim)


def _l2(w: torch.Tensor, dim: int, role: str) -> torch.Tensor:
    return _per_position(w.detach().pow(2), dim)


def _taylor(w: torch.Tensor, dim: int, role: str) -> torch.Tensor:
    if w.grad is None:
        raise InvalidArgumentError(
            "the taylor criterion needs gradients: run a loss backward through the supernet "
            "first, or pass calibrate=fn (fn(sn) runs it)")
    return _per_position((w.detach() * w.grad.detach()).abs(), dim)


CRITERIA: dict[str, Criterion] = {"l1": _l1, "l2": _l2, "taylor": _taylor}
DATA_CRITERIA = ("activation", "wanda")  # scored from calibration activations
AGGREGATES = ("mean", "sum", "max")
ROLES = ("out", "norm", "in")
NORMALIZERS = (None, "mean", "max", "sum", "standardization", "gaussian")


def _normalize(scores: torch.Tensor, how: str | None) -> torch.Tensor:
    if how is None:
        return scores
    if how == "mean":
        return scores / scores.mean()
    if how == "max":
        return scores / scores.max()
    if how == "sum":
        return scores / scores.sum()
    if how == "standardization":
        return (scores - scores.min()) / (scores.max() - scores.min() + 1e-8)
    return (scores - scores.mean()) / (scores.std() + 1e-8)  # gaussian


def _role(slot: Slot | None) -> str:
    if slot is None or slot.is_param or slot.role == "out":
        return "out"
    return "in" if slot.role == "in" else "norm"


def _is_batch_norm(model: nn.Module, tensor: torch.Tensor) -> bool:
    return any(m.weight is tensor for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))


def _has_columns(member: Any) -> bool:
    # a grouped conv's weight holds in/groups columns: it reads the channels group-wise
    return int(member.positions.max()) < member.weight.shape[member.dim]


Scored = list[tuple[torch.Tensor, Any]]  # (one score per position, (channels, r) positions)


def _weight_scores(weights: UnitWeights, score: Criterion, roles: Collection[str],
                   bn_only: bool) -> Scored:
    found: Scored = []
    for member in weights.outputs(with_bias=False):
        role = _role(member.slot)
        if role in roles and (not bn_only or _is_batch_norm(weights.model, member.weight)):
            found.append((score(member.weight, member.dim, role), member.positions))
    if "in" in roles and not bn_only:
        found += [(score(m.weight, m.dim, "in"), m.positions) for m in weights.consumers()
                  if _has_columns(m)]
    return found


def _sites(spec: UnitSpec, criterion: str, roles: Collection[str]) -> list[tuple[str, str]]:
    """The layer inputs/outputs a data criterion reads for ``spec``."""
    if criterion == "wanda":
        return [(slot.target, "in") for slot, _ in spec.members if slot.role == "in"]
    return [(slot.target, "in" if slot.role == "in" else "out") for slot, _ in spec.members
            if not slot.is_param and _role(slot) in roles]


def _data_scores(weights: UnitWeights, criterion: str, roles: Collection[str],
                 sums: Mapping[tuple[str, str], torch.Tensor]) -> Scored:
    if criterion == "wanda":  # ||X_j|| * sum_i |W[i, j]| per consumer column j
        return [(sums[m.slot.target, "in"].sqrt()
                 * m.weight.detach().abs().movedim(m.dim, 0).flatten(1).sum(1), m.positions)
                for m in weights.consumers() if m.slot is not None and _has_columns(m)
                and (m.slot.target, "in") in sums]
    found: Scored = []
    for slot, positions in weights.spec.members:
        site = (slot.target, "in" if slot.role == "in" else "out")
        if not slot.is_param and _role(slot) in roles and site in sums:
            found.append((sums[site].sqrt(), positions))
    return found


def _check(criterion: str | Criterion, aggregate: str, normalize: str | None,
           members: Collection[str] | None) -> tuple[Criterion | None, tuple[str, ...]]:
    """The per-tensor criterion (None for a data criterion) and the member roles."""
    if aggregate not in AGGREGATES:
        raise InvalidArgumentError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if normalize not in NORMALIZERS:
        raise InvalidArgumentError(f"normalize must be one of {NORMALIZERS}, got {normalize!r}")
    defaults = {"bn_scale": ("norm",), "activation": ("out", "norm"), "wanda": ("in",)}
    if callable(criterion):
        score: Criterion | None = criterion
    elif criterion in CRITERIA or criterion in defaults:
        score = _l1 if criterion == "bn_scale" else CRITERIA.get(criterion)
    else:
        raise InvalidArgumentError(f"criterion must be one of {[*CRITERIA, *defaults]} or a "
                                   f"callable, got {criterion!r}")
    key = criterion if isinstance(criterion, str) else ""
    roles = tuple(members) if members is not None else defaults.get(key, ROLES)
    if not roles or not set(roles) <= set(ROLES) or isinstance(members, str):
        raise InvalidArgumentError(f"members is a non-empty collection of {ROLES}, "
                                   f"got {members!r}")
    if key in ("wanda", "bn_scale") and roles != defaults[key]:
        raise InvalidArgumentError(f"{key} scores only the {defaults[key][0]!r} members "
                                   f"(got members={members!r}); leave members out")
    return score, roles


def importance(sn: Supernet, criterion: str | Criterion = "l1", *, aggregate: str = "mean",
               normalize: str | None = None, members: Collection[str] | None = None,
               calibrate: Callable[[Supernet], Any] | None = None,
               forward_loop: ForwardLoop | None = None, loader: Iterable[Any] | None = None,
               loss_fn: LossFn | None = None,
               layers: Mapping[type, LayerRecord] | None = None) -> dict[str, torch.Tensor]:
    """``{unit name: scores}``, one float per unit channel, for every unit of ``sn``.

    Args:
        criterion: ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"taylor"``, ``"activation"``,
            ``"wanda"`` or a callable (see the module doc).
        aggregate: how the members' scores combine: ``mean``, ``sum`` or ``max``.
        normalize: rescale each unit's scores (see :data:`NORMALIZERS`).
        members: the member roles scored (see :data:`ROLES`); default: all, but
            ``("norm",)`` for bn_scale, ``("out", "norm")`` for activation, ``("in",)``
            for wanda.
        calibrate: ``calibrate(sn)`` runs first, as it is (e.g. a backward for ``taylor``).
        forward_loop: ``forward_loop(model)`` runs calibration batches (``taylor``: and the
            loss backward) for a data criterion; or
        loader: an iterable of inputs or ``(inputs, targets)`` batches instead.
        loss_fn: ``taylor``'s loss over ``loader`` batches (default: cross-entropy).

    Raises:
        InvalidArgumentError: a bad option; a data criterion without exactly one of
            ``forward_loop``/``loader``, or calibration that saw no batch.
    """
    score, roles = _check(criterion, aggregate, normalize, members)
    name = criterion if isinstance(criterion, str) else ""
    calibration = None
    if forward_loop is not None or loader is not None or name in DATA_CRITERIA:
        if name not in (*DATA_CRITERIA, "taylor"):
            raise InvalidArgumentError(
                f"forward_loop/loader calibrate the data criteria {[*DATA_CRITERIA, 'taylor']};"
                f" {name or 'a callable criterion'} reads the weights only: leave them out")
        calibration = Calibration(forward_loop, loader, loss_fn)
    if loss_fn is not None and name != "taylor":
        raise InvalidArgumentError("loss_fn goes with criterion='taylor' and loader=")
    if calibrate is not None and calibration is not None and name == "taylor":
        raise InvalidArgumentError("taylor takes its gradients from one source: pass "
                                   "calibrate= or forward_loop=/loader=, not both")
    if calibrate is not None:
        calibrate(sn)
    specs = sn.analysis.units
    if score is None:
        assert calibration is not None  # (a data criterion, checked)
        sites = [site for spec in specs for site in _sites(spec, name, roles)]
        sums = square_sums(sn, sites, calibration)
        return _scores(sn, layers, lambda w: _data_scores(w, name, roles, sums),
                       aggregate, normalize)
    bn_only = name == "bn_scale"

    def by_weights(weights: UnitWeights) -> Scored:
        return _weight_scores(weights, score, roles, bn_only)

    if calibration is None:
        return _scores(sn, layers, by_weights, aggregate, normalize)
    with restored_grads(sn):
        with calibrating(sn):
            calibration.run(sn, backward=True)
        return _scores(sn, layers, by_weights, aggregate, normalize)


def _scores(sn: Supernet, layers: Mapping[type, LayerRecord] | None,
            members: Callable[[UnitWeights], Scored], aggregate: str,
            normalize: str | None) -> dict[str, torch.Tensor]:
    result: dict[str, torch.Tensor] = {}
    unscored = []
    for unit, spec in zip(sn.every_unit(), sn.analysis.units, strict=True):
        per_member = []
        for values, positions in members(UnitWeights(sn.graph_module, spec, layers)):
            index = torch.as_tensor(positions, dtype=torch.long)  # (channels, r)
            per_member.append(values.float()[index].sum(1))
        if not per_member:
            unscored.append(unit.name)
            scores = torch.zeros(unit.num_channels)
        else:
            stacked = torch.stack(per_member)
            scores = {"mean": stacked.mean(0), "sum": stacked.sum(0),
                      "max": stacked.amax(0)}[aggregate]
        result[unit.name] = _normalize(scores, normalize)
    if unscored:
        log.info("units with no member the criterion scores (their scores are 0): %s",
                 unscored[:5])
    return result
