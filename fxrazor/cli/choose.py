"""How the command line picks the subnet: every unit to one ratio, a subnet config file, or
a FLOPs target, with the channels ranked by a data-free criterion.

A subnet config is what ``export-config`` (``fxrazor.export_fix_subnet(sn,
export_subnet_mode="mutator")``) writes: ``{unit: {"init_args": {...}, "choice": c}}``,
or MMRazor's shape with the units under ``channel_unit_cfg.units``. Its choices are set
without fixing the units, so that the report still lists them with their widths.

Example:
    >>> choice_mode({"conv1": {"init_args": {"choice_mode": "number"}, "choice": 32}})
    'number'
    >>> choice_mode({"conv1": 0.5})
    'ratio'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fxrazor.cli.usage import UsageError
from fxrazor.errors import SubnetConfigError
from fxrazor.estimate import estimate
from fxrazor.importance import DATA_CRITERIA, importance
from fxrazor.pruning import prune
from fxrazor.search.common import progress_bar
from fxrazor.structures.subnet.subnet_io import read_subnet_file
from fxrazor.supernet import Supernet

__all__ = ["CRITERIA", "DATA_CRITERIA_ALL", "check_criterion", "read_config", "choice_mode",
           "rank_units", "apply_ratio", "apply_config", "apply_flops_target"]

#: Criteria that read the weights only (the command line has no calibration data).
CRITERIA = {"l1": "L1 norm of each channel's weights over the unit's layers",
            "l2": "squared L2 norm of each channel's weights over the unit's layers",
            "bn_scale": "|gamma| of each channel's BatchNorm"}
DATA_CRITERIA_ALL = (*DATA_CRITERIA, "taylor")


def check_criterion(name: str) -> None:
    """Refuse a criterion that needs calibration data, in one line."""
    if name in DATA_CRITERIA_ALL:
        raise UsageError(f"criterion {name!r} needs calibration data, which the command line "
                         f"does not take; use one of {', '.join(CRITERIA)}, or "
                         f"fxrazor.pruning.prune(sn, target, importance={name!r}, loader=...) "
                         f"in Python")
    if name not in CRITERIA:
        raise UsageError(f"unknown criterion {name!r}; the command line takes "
                         f"{', '.join(CRITERIA)}")


def read_config(path: str) -> dict[str, Any]:
    """The units' entries of a subnet config file (unwrapping MMRazor's shape)."""
    if not Path(path).is_file():
        raise UsageError(f"no such subnet config file: {path}")
    cfg = read_subnet_file(path)
    wrapped = cfg.get("channel_unit_cfg")
    if isinstance(wrapped, Mapping):
        units = wrapped.get("units")
        if not isinstance(units, Mapping):
            raise SubnetConfigError(f"{path}: channel_unit_cfg has no dict of 'units'")
        cfg = dict(units)
    if not cfg:
        raise SubnetConfigError(f"{path} holds no units")
    return cfg


def choice_mode(cfg: Mapping[str, Any]) -> str:
    """``"number"`` or ``"ratio"``: how the config's choices are written (its units'
    ``init_args``, else the values: all ints are numbers)."""
    for entry in cfg.values():
        mode = entry.get("init_args", {}).get("choice_mode") if isinstance(entry, dict) \
            else None
        if mode in ("number", "ratio"):
            return str(mode)
    values = [e.get("choice") if isinstance(e, dict) else e for e in cfg.values()]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    return "number" if ints else "ratio"


def _units(sn: Supernet) -> list[Any]:
    return list(sn.channel_mutator.mutable_units)


def rank_units(sn: Supernet, criterion: str | None) -> str:
    """Rank every unit's channels by ``criterion`` (None: l1 where the units rank); return
    what the report says about the ranking."""
    units = _units(sn)
    ranking = [u for u in units if callable(getattr(u, "set_importance", None))]
    if len(ranking) < len(units) or not units:
        if criterion is not None:
            raise UsageError(f"--criterion {criterion} needs units that rank their channels: "
                             f"use --unit l1")
        return "none (the units keep their first channels)"
    name = criterion or "l1"
    check_criterion(name)
    scores = importance(sn, name)
    for u in ranking:
        u.set_importance(scores[u.name])
    return f"{name} ({CRITERIA[name]})"


def apply_ratio(sn: Supernet, ratio: float) -> None:
    """Every unit keeps ``ratio`` of its channels (a unit of candidates must have it)."""
    sn.set_choices({u.name: ratio for u in sn.units})


def apply_config(sn: Supernet, cfg: Mapping[str, Any], path: str) -> None:
    """Set the config's choices; every unit must be named, and no other."""
    names = {u.name for u in sn.units} | {g.key for g in sn.nas_mutator.groups}
    known = {u.name for u in sn.every_unit()} | names
    extra, missing = sorted(set(cfg) - known), sorted(names - set(cfg))
    if extra or missing:
        raise SubnetConfigError(f"{path} does not fit the model: unknown units {extra[:5]}, "
                                f"missing units {missing[:5]}")
    sn.set_choices({k: (v["choice"] if isinstance(v, dict) else v) for k, v in cfg.items()})


def apply_flops_target(sn: Supernet, fraction: float, criterion: str | None,
                       quiet: bool) -> None:
    """Prune to at most ``fraction`` of the full model's FLOPs (``fxrazor.pruning.prune``
    with one global threshold), counting the estimates on a progress bar."""
    bar = progress_bar(not quiet, "search (estimates)")

    def counted(choices: dict[str, Any]) -> Mapping[str, float]:
        bar.update(1)
        return estimate(sn, choices)

    try:
        prune(sn, {"flops": fraction}, importance=criterion or "l1", estimator=counted)
    finally:
        bar.close()
