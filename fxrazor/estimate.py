"""FLOPs and parameters of a supernet's subnets, worked out from the graph and the unit
widths: nothing is frozen or run.

``flops`` is what ``torch.utils.flop_counter.FlopCounterMode`` counts when the frozen subnet
runs on the supernet's example inputs (matrix products, convolutions and fused attention
where the kernel that runs it is counted; torch does not count its CPU attention kernels),
``params`` the frozen subnet's parameter count. Calls whose counted kernels the plan does
not model (``einsum``, a recurrent layer, a searched kernel size, op mutables) raise
:class:`~fxrazor.errors.UnsupportedModelError` naming the node: freeze and count those.

Example:
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(3, 4))
    >>> estimate(sn)
    {'flops': 288, 'params': 58}
    >>> estimate(sn, {"0": 2}), sn.choices()
    ({'flops': 72, 'params': 16}, {'0': 8})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from fxrazor.errors import UnsupportedModelError
from fxrazor.estimate_plan import EstimatePlan, Monomial, Size, build_plan
from fxrazor.mutators.nas_mutator import VALUE_RECORD
from fxrazor.supernet import Supernet

__all__ = ["estimate", "estimate_many", "KeptCounts"]

logger = logging.getLogger(__name__)

_PLAN_KEY = "_fxr_estimate_plan"


def _plan(sn: Supernet) -> tuple[EstimatePlan, _Widths | None]:
    """The supernet's plan (and its width shortcut), built on first use and again after a
    layer was replaced."""
    if not isinstance(sn, Supernet):
        raise UnsupportedModelError(
            f"estimate expects a Supernet from fxrazor.convert, got {type(sn).__name__}")
    # replace_layer counts its replacements: a per-call walk over the bindings cost as
    # much as the rest of an estimate with seen choices. A value mutable bound since (a
    # kernel size, a width) is in the record: the plan, which refuses them, is made again
    key = (id(sn.graph_module), sn.__dict__.get("_fxr_layers_version", 0),
           tuple(sn.__dict__.get(VALUE_RECORD) or ()))
    cached = sn.__dict__.get(_PLAN_KEY)
    if cached is None or cached[0] != key:
        plan = build_plan(sn)
        cached = (key, plan, _Widths.of(sn, plan))
        sn.__dict__[_PLAN_KEY] = cached
    return cached[1], cached[2]


class _Widths:
    """The shortcut where every count covers whole units evenly (a layer's channels, not
    a slice of them): then a count is ``const + sum(r[u] * kept[u])`` and a candidate
    needs only each unit's number of kept channels, not its mask. That number, per (unit,
    choice), is learnt from the masks of choices applied once (``set_choices`` checks them
    there); unseen or other choices take the mask path."""

    def __init__(self, units: list[Any], base: np.ndarray, rates: np.ndarray,
                 const: np.ndarray, offsets: np.ndarray) -> None:
        self.units = units
        self.index = {u.name: i for i, u in enumerate(units) if u.is_mutable}
        self.offsets = offsets  # of each unit in the concatenated masks
        self.base, self.rates, self.const = base, rates, const
        self.kept_for: dict[tuple[int, Any], int] = {}

    @classmethod
    def of(cls, sn: Supernet, plan: EstimatePlan) -> _Widths | None:
        units = sn.every_unit()
        sizes = np.array([u.num_channels for u in units], dtype=np.int64)
        offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        rates = np.zeros((len(plan.counts), len(units)), dtype=np.int64)
        const = np.zeros(len(plan.counts), dtype=np.int64)
        for c, gidx in enumerate(plan.counts):
            free = gidx[gidx < plan.total]
            const[c] = len(gidx) - len(free)
            unit = np.searchsorted(offsets, free, side="right") - 1
            for u in np.unique(unit).tolist():
                hits = np.bincount(free[unit == u] - offsets[u], minlength=int(sizes[u]))
                if hits.min() != hits.max():
                    return None  # a part of a unit: which channels are kept matters
                rates[c, u] = hits[0]
        mask = sn.current_mask().numpy()[:-1].astype(np.int64)
        base = np.add.reduceat(mask, offsets[:-1]) if len(units) else sizes
        return cls(list(units), base, rates, const, offsets[:-1])

    def kept(self, choices: Mapping[str, Any]) -> np.ndarray | None:
        """Kept channels per unit under ``choices`` (naming every mutable unit), or None
        where a choice was not seen yet."""
        if len(choices) != len(self.index):
            return None
        kept = self.base.copy()
        try:
            for name, choice in choices.items():
                i = self.index[name]
                found = self.kept_for.get((i, choice))
                kept[i] = self._count(i, choice) if found is None else found
        except (KeyError, TypeError):  # another key or an unhashable choice
            return None
        return kept

    def _count(self, i: int, choice: Any) -> int:
        """Channels unit ``i`` keeps under a number ``choice`` not seen before, checked
        as its setter checks it (the mutable channel validates; a router's top-k
        minimum here), without applying it: a whole ``set_choices`` costs ~100x more.
        Anything else (a mask, a name) raises KeyError: the mask path handles it."""
        if isinstance(choice, bool) or not isinstance(choice, (int, float)):
            raise KeyError(choice)
        unit = self.units[i]
        count = unit.activated_channels_for(choice)
        if count < unit.min_kept:
            unit.current_choice = choice  # refuses with the setter's own message
        self.kept_for[(i, choice)] = count
        return count

    def learn(self, choices: Mapping[str, Any], mask: np.ndarray) -> None:
        """Remember how many channels each unit keeps under its choice in ``choices``
        (applied, so checked), from ``mask``, the concatenated masks they gave."""
        if not len(self.offsets):
            return
        sums = np.add.reduceat(mask[:-1].astype(np.int64), self.offsets)
        for name, choice in choices.items():
            i = self.index.get(name)
            if i is not None and isinstance(choice, (int, float)):
                self.kept_for[(i, choice)] = int(sums[i])

    def counts(self, kept: np.ndarray) -> np.ndarray:
        return kept @ self.rates.T + self.const


def _mask(sn: Supernet, choices: Mapping[str, Any] | None) -> np.ndarray:
    """The concatenated unit masks under ``choices`` (the current ones for None); the
    supernet's choices are as before afterwards."""
    if choices is None:
        return sn.current_mask().numpy()
    before = sn.channel_mutator.snapshot()
    try:
        sn.set_choices(dict(choices))
        return sn.current_mask().numpy()
    finally:
        sn.channel_mutator.restore(before)


def _arrays(plan: EstimatePlan) -> tuple[np.ndarray, ...]:
    """(joined count indices, count starts, FLOP factor indices and coefficients, param
    ones): the monomials as index arrays, built once per plan."""
    if plan._arrays is None:
        sizes = [len(c) for c in plan.counts]
        joined = np.concatenate(plan.counts) if sizes else np.zeros(0, np.int64)
        starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64) if sizes \
            else np.zeros(0, np.int64)
        plan._arrays = (joined, starts, *_table(plan.flops, len(sizes)),
                        *_table(plan.params, len(sizes)))
    return plan._arrays


def _table(terms: list[Monomial], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Factor indices (padded with ``pad``, a column of ones) and coefficients."""
    width = max((len(f) for _, f in terms), default=0) or 1
    idx = np.array([list(f) + [pad] * (width - len(f)) for _, f in terms],
                   dtype=np.int64).reshape(len(terms), width)
    return idx, np.array([c for c, _ in terms], dtype=np.int64)


def evaluate(plan: EstimatePlan, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flops, params) per row of ``masks`` (candidates × ``total + 1``, booleans): each
    count is a sum over its mask positions, each monomial a product of counts."""
    return _totals(plan, _counts(plan, masks))


def _counts(plan: EstimatePlan, masks: np.ndarray) -> np.ndarray:
    joined, starts = _arrays(plan)[:2]
    if not len(joined):
        return np.zeros((masks.shape[0], 0), dtype=np.int64)
    return np.add.reduceat(masks[:, joined].astype(np.int64), starts, axis=1)


def _totals(plan: EstimatePlan, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flop_idx, flop_coef, param_idx, param_coef = _arrays(plan)[2:]
    # the last column pads short monomials
    table = np.concatenate([counts, np.ones((len(counts), 1), dtype=np.int64)], axis=1)
    flops = (table[:, flop_idx].prod(axis=2) * flop_coef).sum(axis=1)
    for (coef, factors), a, b in plan.gated:
        flops = flops + coef * table[:, list(factors)].prod(axis=1) * \
            (_column(table, a) != _column(table, b))
    return flops, (table[:, param_idx].prod(axis=2) * param_coef).sum(axis=1)


def _column(table: np.ndarray, size: Size) -> np.ndarray | int:
    return table[:, size[1]] if isinstance(size, tuple) else size


def estimate(sn: Supernet, choices: Mapping[str, Any] | None = None) -> dict[str, int]:
    """FLOPs and parameters of the subnet ``choices`` selects (default: the current one).

    Args:
        sn: a supernet from :func:`fxrazor.convert`.
        choices: ``{unit name: width}`` as :meth:`Supernet.set_choices` takes, applied for
            the estimate only (refused as ``set_choices`` refuses it).

    Returns:
        ``{"flops": int, "params": int}``: exactly FlopCounterMode's count of
        ``fxrazor.freeze(sn)`` on ``sn.example_args``, and its parameter count.
    """
    flops, params = _totals(*_candidate_counts(sn, [choices]))
    return {"flops": int(flops[0]), "params": int(params[0])}


def _candidate_counts(sn: Supernet, candidates: Sequence[Mapping[str, Any] | None]
                      ) -> tuple[EstimatePlan, np.ndarray]:
    """The plan, and each candidate's counts (candidates × counts)."""
    plan, widths = _plan(sn)
    return plan, _counts_under(sn, plan, widths, candidates)


def _counts_under(sn: Supernet, plan: EstimatePlan, widths: _Widths | None,
                  candidates: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
    """Each candidate's counts of ``plan`` (candidates × counts)."""
    rows: list[np.ndarray | None] = [None] * len(candidates)
    masks: list[np.ndarray] = []
    slow: list[int] = []
    for i, choices in enumerate(candidates):
        kept = widths.kept(choices) if widths is not None and choices is not None else None
        if kept is not None:
            rows[i] = widths.counts(kept)  # type: ignore[union-attr]
            continue
        mask = _mask(sn, choices)
        if widths is not None and choices is not None:
            widths.learn(choices, mask)
        masks.append(mask)
        slow.append(i)
    for start in range(0, len(masks), 256):  # bounds the (candidates × positions) gather
        counts = _counts(plan, np.stack(masks[start:start + 256]))
        for i, row in zip(slow[start:start + 256], counts, strict=True):
            rows[i] = row
    return np.stack(cast("list[np.ndarray]", rows)).reshape(len(candidates), -1)


class KeptCounts:
    """How many of some groups of channel positions a subnet keeps, worked out as
    :func:`estimate` works out its counts (nothing frozen or run; a candidate that names
    every mutable unit with widths seen before costs a few microseconds).

    Args:
        sn: a supernet from :func:`fxrazor.convert`.
        positions: groups of global mask positions (``Binding.gidx``: a layer role's
            channels, pinned ones as the last, always-kept index).

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
        ...                      torch.randn(3, 4))
        >>> counts = KeptCounts(sn, [b.gidx.numpy() for b in sn._bindings[:1]])
        >>> counts([{"0": 3}, {"0": 8}]).tolist()
        [[3], [8]]
    """

    def __init__(self, sn: Supernet, positions: Sequence[np.ndarray]) -> None:
        total = int(sn.current_mask().numel()) - 1
        self.sn = sn
        self.plan = EstimatePlan(total, counts=[np.asarray(p, dtype=np.int64)
                                                for p in positions])
        self.widths = _Widths.of(sn, self.plan)

    def __call__(self, candidates: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
        """Kept counts, candidates × position groups (None: the current choices)."""
        if not len(candidates):
            return np.zeros((0, len(self.plan.counts)), dtype=np.int64)
        return _counts_under(self.sn, self.plan, self.widths, candidates)


def estimate_many(sn: Supernet, choices: Sequence[Mapping[str, Any]]) -> list[dict[str, int]]:
    """:func:`estimate` of each of ``choices``, in one vectorised evaluation.

    Example:
        >>> import torch, fxrazor
        >>> from torch import nn
        >>> sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)),
        ...                      torch.randn(3, 4))
        >>> [r["flops"] for r in estimate_many(sn, [{"0": 8}, {"0": 2}])]
        [288, 72]
    """
    _plan(sn)  # refuses a plain module before anything else
    if not len(choices):
        return []
    flops, params = _totals(*_candidate_counts(sn, list(choices)))
    return [{"flops": int(f), "params": int(p)}
            for f, p in zip(flops.tolist(), params.tolist(), strict=True)]
