"""Channel importance per unit: a criterion scored on every member of the unit, aggregated.

A unit's channels live in several tensors: the layers that make them (weight rows), the
norms over them (BatchNorm's scale), the layers that read them (the next layer's weight
columns). A criterion scores each unit channel in each member tensor; ``aggregate``
(``mean``, ``sum``, ``max``) combines the members, as Torch-Pruning's group reduction does,
and ``normalize`` (``mean``, ``max``, ``sum``, ``standardization``, ``gaussian`` or None)
rescales each unit's scores.

Criteria (higher = more important):

* ``"l1"`` / ``"l2"``: ``sum |w|`` / ``sum w**2`` over each channel's weights, in every
  member (producers' rows, norms' scales, consumers' columns);
* ``"bn_scale"``: ``|gamma|`` of the BatchNorm members (a unit without one scores 0);
* ``"taylor"``: ``sum |w * dL/dw|`` in every member; the gradients must be there: run a loss
  backward first, or pass ``calibrate=`` (called once with the supernet);
* a callable ``criterion(weight, dim, role) -> tensor`` of one score per position along
  ``dim`` (role: ``"out"``, ``"norm"`` or ``"in"``): your own.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = model[0].weight.copy_(torch.tensor([[1., 1.], [0., 2.], [3., 0.]]))
    ...     _ = model[2].weight.copy_(torch.tensor([[1., 0., 1.]]))
    >>> sn = fxrazor.convert(model, torch.randn(1, 2))
    >>> importance(sn, "l1", aggregate="sum")["0"].tolist()  # rows + the next layer's columns
    [3.0, 2.0, 4.0]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fxrazor.errors import InvalidArgumentError
from fxrazor.layers import LayerRecord, UnitWeights
from fxrazor.supernet import Supernet

__all__ = ["importance", "CRITERIA", "AGGREGATES", "NORMALIZERS"]

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
AGGREGATES = ("mean", "sum", "max")
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


def _members(weights: UnitWeights, bn_only: bool) -> list[tuple[Any, str]]:
    """(tensor, dim, positions) of every member with its role."""
    if bn_only:
        norms = [(p, "norm") for p in weights.outputs(with_bias=False)
                 if _is_batch_norm(weights.model, p.weight)]
        return norms
    found = [(p, "out") for p in weights.outputs(with_bias=False)]
    found += [(p, "in") for p in weights.consumers()
              if int(p.positions.max()) < p.weight.shape[p.dim]]  # (grouped convs: no columns)
    return found


def _is_batch_norm(model: nn.Module, tensor: torch.Tensor) -> bool:
    return any(m.weight is tensor for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm))


def importance(sn: Supernet, criterion: str | Criterion = "l1", *, aggregate: str = "mean",
               normalize: str | None = None, calibrate: Callable[[Supernet], Any] | None = None,
               layers: Mapping[type, LayerRecord] | None = None) -> dict[str, torch.Tensor]:
    """``{unit name: scores}``, one float per unit channel, for every unit of ``sn``.

    Args:
        criterion: ``"l1"``, ``"l2"``, ``"bn_scale"``, ``"taylor"`` or a callable (see the
            module doc).
        aggregate: how the members' scores combine: ``mean``, ``sum`` or ``max``.
        normalize: rescale each unit's scores (see :data:`NORMALIZERS`).
        calibrate: ``calibrate(sn)`` runs first (a forward and backward for ``taylor``).
    """
    if aggregate not in AGGREGATES:
        raise InvalidArgumentError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if normalize not in NORMALIZERS:
        raise InvalidArgumentError(f"normalize must be one of {NORMALIZERS}, got {normalize!r}")
    bn_only = criterion == "bn_scale"
    if bn_only:
        score: Criterion = _l1
    elif callable(criterion):
        score = criterion
    elif criterion in CRITERIA:
        score = CRITERIA[criterion]
    else:
        raise InvalidArgumentError(f"criterion must be one of {[*CRITERIA, 'bn_scale']} or a "
                                   f"callable, got {criterion!r}")
    if calibrate is not None:
        calibrate(sn)
    result: dict[str, torch.Tensor] = {}
    for unit, spec in zip(sn.every_unit(), sn.analysis.units, strict=True):
        weights = UnitWeights(sn.graph_module, spec, layers)
        per_member = []
        for member, role in _members(weights, bn_only):
            positions = torch.as_tensor(member.positions, dtype=torch.long)  # (channels, r)
            values = score(member.weight, member.dim, role).float()
            per_member.append(values[positions].sum(1))
        if not per_member:
            scores = torch.zeros(unit.num_channels)
        else:
            stacked = torch.stack(per_member)
            scores = {"mean": stacked.mean(0), "sum": stacked.sum(0),
                      "max": stacked.amax(0)}[aggregate]
        result[unit.name] = _normalize(scores, normalize)
    return result
