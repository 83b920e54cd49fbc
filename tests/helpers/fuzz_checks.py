"""The compiler checks of one fuzz network (``fuzz_models.py``), by failure kind.

``check_network`` converts a network, checks that the model is left alone, that the
supernet at full width computes what the model computes, and, for the smallest and a
random subnet, that the frozen module computes what the supernet computes and what the
model with the pruned channels zeroed computes (where the zero oracle applies); the frozen
random subnet must script (unless it calls a custom autograd Function: TorchScript
cannot). Numbers come from :mod:`fxrazor.verify.equivalence`; a failure
is a :class:`FuzzFailure` whose ``kind`` says which check failed. ``tests/e2e/test_fuzz.py``
and ``benchmarks/fuzz.py`` run it.

Example:
    >>> import random
    >>> from fuzz_models import RandomChooser, build_network, random_spec
    >>> model, x, has_norm = build_network(random_spec(RandomChooser(random.Random(0))))
    >>> sorted(check_network(model, x, has_norm, 0))
    ['pruned', 'units']
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

import fxrazor
from fxrazor.verify.equivalence import (
    check_full_width,
    check_subnet,
    oracle_applies,
    output_error,
    within,
    zero_oracle_error,
)

__all__ = ["FAILURE_KINDS", "FuzzFailure", "check_network", "replay_line"]

FAILURE_KINDS = (
    "convert error", "model modified", "full-width mismatch", "unknown op unpinned",
    "freeze error", "frozen mismatch", "oracle mismatch", "script error",
)

T = TypeVar("T")


class FuzzFailure(AssertionError):
    """A check failed; ``kind`` is one of :data:`FAILURE_KINDS`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def replay_line(spec: dict, choice_seed: int, unit: str = "sequential") -> str:
    """Python that rebuilds the network and reruns the checks (tests/helpers on sys.path)."""
    return (f"replay: model, x, has_norm = build_network(json.loads({json.dumps(spec)!r})); "
            f"check_network(model, x, has_norm, {choice_seed}, unit={unit!r})")


def _stage(kind: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as e:  # any failure of the library under test is a finding, by kind
        raise FuzzFailure(kind, f"{type(e).__name__}: {e}") from e


def _expect_within(kind: str, error: float, scale: float) -> None:
    if not within(error, scale):
        raise FuzzFailure(kind, f"largest difference {error:.3g} at output scale {scale:.3g}")


def _has_autograd_function(spec: dict) -> bool:
    return any(node["op"] == "unknown" and node.get("fn") == "autograd"
               for node in spec["nodes"])


def _unknown_nodes(spec: dict) -> int:
    return sum(node["op"] == "unknown" for node in spec["nodes"])


def _check_subnet(model: torch.nn.Module, sn: fxrazor.Supernet, x: torch.Tensor,
                  script: bool) -> None:
    """Freeze the supernet's current subnet and compare it with the supernet and oracle."""
    frozen = _stage("freeze error", lambda: fxrazor.freeze(sn))
    _stage("freeze error", lambda: frozen(x))
    check = _stage("frozen mismatch",
                   lambda: check_subnet(model, sn, x, frozen=frozen, oracle=False))
    _expect_within("frozen mismatch", check.frozen_error, check.output_scale)
    if oracle_applies(sn):
        error = _stage("oracle mismatch",
                       lambda: zero_oracle_error(model, sn, x, check.frozen_output))
        _expect_within("oracle mismatch", error, check.output_scale)
    if script:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            scripted = _stage("script error", lambda: torch.jit.script(frozen))
        error = _stage("script error", lambda: output_error(scripted(x), check.frozen_output))
        _expect_within("script error", error, check.output_scale)


def _random_subnet(sn: fxrazor.Supernet, choice_seed: int) -> None:
    random.seed(choice_seed)
    sn.set_choices(sn.sample_choices())


@torch.no_grad()
def check_network(model: torch.nn.Module, x: torch.Tensor, has_channel_norm: bool,
                  choice_seed: int, **convert_kwargs: Any) -> dict:
    """Run every check on one network; raise :class:`FuzzFailure` on the first that fails.

    Two subnets are checked: the smallest (every unit at its minimum, where emptied tensors
    show up first) and a random one from ``choice_seed``, which is also scripted. The zero
    oracle runs where :func:`~fxrazor.verify.equivalence.oracle_applies`; a network that
    ``build_network`` says has no channel norm (``has_channel_norm`` False) must have it.
    Returns ``{"units": ..., "pruned": ...}``: how many mutable units the supernet has and
    whether the random subnet removed any channel (for coverage reports).
    """
    expected = model(x)
    sn = _stage("convert error", lambda: fxrazor.convert(model, x, **convert_kwargs))
    _stage("malformed supernet graph", sn.graph_module.graph.lint)
    if output_error(model(x), expected) != 0.0:
        raise FuzzFailure("model modified", "the model's output changed")
    # custom rules may make an op known; otherwise every unknown node must be reported
    custom_rules = any(key.endswith("_rules") for key in convert_kwargs)
    if not custom_rules and len(sn.analysis.unknown_ops) < _unknown_nodes(model.spec):
        raise FuzzFailure("unknown op unpinned",
                          f"{_unknown_nodes(model.spec)} unknown ops in the model, analysis "
                          f"reports {list(sn.analysis.unknown_ops)}")
    if not has_channel_norm and not oracle_applies(sn):
        raise FuzzFailure("oracle mismatch", "no norm over channels, yet the oracle is off")
    full = _stage("full-width mismatch", lambda: check_full_width(model, sn, x))
    _expect_within("full-width mismatch", full.error, full.scale)
    _stage("freeze error", lambda: sn.set_choices(sn.sample_choices("min")))
    _check_subnet(model, sn, x, script=False)
    _stage("freeze error", lambda: _random_subnet(sn, choice_seed))
    # TorchScript cannot call a custom autograd Function, which the frozen model keeps (so
    # that its backward runs): such networks do not script, as the model itself does not
    _check_subnet(model, sn, x, script=not _has_autograd_function(model.spec))
    pruned = any(not bool(u.current_mask.all()) for u in sn.units)
    return {"units": len(sn.units), "pruned": pruned}
