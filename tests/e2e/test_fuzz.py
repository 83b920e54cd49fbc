"""Fuzz fxrazor's compiler with random DAG networks (``fuzz_models.py``).

For every generated network: ``convert`` succeeds and leaves the model alone, the supernet
at full width computes what the model computes, and for the smallest and a random subnet
the frozen module computes what the supernet computes, as does the original model with the
pruned channels zeroed (unless a norm mixes statistics over channels); the frozen random
subnet scripts. Patterns that expose known library bugs are switched off by the
``ENABLE_*`` flags of ``fuzz_models.py`` (each with the bug next to it).

Subnets come from "sequential" units (trailing channels pruned) and "l1" units (channels
pruned anywhere). A failure prints a replay line (``note``) with the shrunk spec as JSON::

    model, x, has_norm = build_network(json.loads(SPEC))
    check_network(model, x, has_norm, SEED, unit=U)

``benchmarks/fuzz.py`` runs the same checks on many more networks.
"""

from __future__ import annotations

import copy
import json
import random
import warnings
from typing import Any

import fuzz_models
import pytest
import torch
from fuzz_models import (
    ENABLED_OPS,
    RandomChooser,
    build_network,
    port_channels,
    random_networks,
    random_spec,
)
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from oracles import zero_pruned_channels

import fxrazor
from fxrazor.rules.functions import pointwise

__all__ = ["FAILURE_KINDS", "FuzzFailure", "check_network", "replay_line"]

FAILURE_KINDS = (
    "convert error", "model modified", "full-width mismatch", "unknown op unpinned",
    "freeze error", "frozen mismatch", "oracle mismatch", "script error",
)


class FuzzFailure(AssertionError):
    """A check failed; ``kind`` is one of :data:`FAILURE_KINDS`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def replay_line(spec: dict, choice_seed: int, unit: str = "sequential") -> str:
    """Python that rebuilds the network and reruns the checks (tests/ on sys.path)."""
    return (f"replay: model, x, has_norm = build_network(json.loads({json.dumps(spec)!r})); "
            f"check_network(model, x, has_norm, {choice_seed}, unit={unit!r})")


def _close(actual: Any, expected: Any, rtol: float = 1e-4) -> None:
    """assert_close with an absolute tolerance relative to the output's magnitude."""
    exp = expected if isinstance(expected, tuple) else (expected,)
    act = actual if isinstance(actual, tuple) else (actual,)
    if len(act) != len(exp):
        raise AssertionError(f"{len(act)} outputs, expected {len(exp)}")
    for a, e in zip(act, exp, strict=True):
        scale = max(1.0, float(e.abs().max()))
        torch.testing.assert_close(a, e, rtol=rtol, atol=rtol * scale)


def _stage(kind: str, fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # any failure of the library under test is a finding, by kind
        raise FuzzFailure(kind, f"{type(e).__name__}: {e}") from e


def _unknown_nodes(spec: dict) -> int:
    return sum(node["op"] == "unknown" for node in spec["nodes"])


def _check_subnet(model: torch.nn.Module, sn: fxrazor.Supernet, x: torch.Tensor,
                  has_channel_norm: bool, script: bool) -> None:
    """Freeze the supernet's current subnet and compare it with the supernet and oracle."""
    frozen = _stage("freeze error", lambda: fxrazor.freeze(sn))
    got = _stage("freeze error", lambda: frozen(x))
    _stage("frozen mismatch", lambda: _close(got, sn(x)))
    if not has_channel_norm:
        zeroed = zero_pruned_channels(model, sn)
        _stage("oracle mismatch", lambda: _close(got, zeroed(x)))
    if script:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices
            scripted = _stage("script error", lambda: torch.jit.script(frozen))
        _stage("script error", lambda: _close(scripted(x), got))


def _random_subnet(sn: fxrazor.Supernet, choice_seed: int) -> None:
    random.seed(choice_seed)
    sn.set_choices(sn.sample_choices())


@torch.no_grad()
def check_network(model: torch.nn.Module, x: torch.Tensor, has_channel_norm: bool,
                  choice_seed: int, **convert_kwargs: Any) -> dict:
    """Run every check on one network; raise :class:`FuzzFailure` on the first that fails.

    Two subnets are checked: the smallest (every unit at its minimum, where emptied tensors
    show up first) and a random one from ``choice_seed``, which is also scripted.
    Returns ``{"units": ..., "pruned": ...}``: how many mutable units the supernet has and
    whether the random subnet removed any channel (for coverage reports).
    """
    expected = model(x)
    sn = _stage("convert error", lambda: fxrazor.convert(model, x, **convert_kwargs))
    _stage("malformed supernet graph", sn.graph_module.graph.lint)
    _stage("model modified", lambda: _close(model(x), expected, rtol=0.0))
    # custom rules may make an op known; otherwise every unknown node must be reported
    custom_rules = any(key.endswith("_rules") for key in convert_kwargs)
    if not custom_rules and len(sn.analysis.unknown_ops) < _unknown_nodes(model.spec):
        raise FuzzFailure("unknown op unpinned",
                          f"{_unknown_nodes(model.spec)} unknown ops in the model, analysis "
                          f"reports {list(sn.analysis.unknown_ops)}")
    _stage("full-width mismatch",
           lambda: (sn.set_choices(sn.sample_choices("max")), _close(sn(x), expected)))
    _stage("freeze error", lambda: sn.set_choices(sn.sample_choices("min")))
    _check_subnet(model, sn, x, has_channel_norm, script=False)
    _stage("freeze error", lambda: _random_subnet(sn, choice_seed))
    _check_subnet(model, sn, x, has_channel_norm, script=True)
    pruned = any(not bool(u.current_mask.all()) for u in sn.units)
    return {"units": len(sn.units), "pruned": pruned}


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(net=random_networks(), choice_seed=st.integers(0, 2**31 - 1),
       unit=st.sampled_from(["sequential", "l1"]))  # l1 keeps channels out of order
def test_random_network(net: tuple, choice_seed: int, unit: str) -> None:
    model, x, has_norm = net
    note(replay_line(model.spec, choice_seed, unit))
    check_network(model, x, has_norm, choice_seed, unit=unit)


# ---------------------------------------------------------------------------- the generator
def _specs(n: int) -> list[dict]:
    return [random_spec(RandomChooser(random.Random(i))) for i in range(n)]


def test_generator_covers_every_pattern() -> None:
    specs = _specs(300)
    ops = {node["op"] for s in specs for node in s["nodes"]}
    assert ops == set(ENABLED_OPS)
    details = {(n["op"], n.get("kind") or n.get("fn")) for s in specs for n in s["nodes"]}
    for want in [("split", "split"), ("split", "chunk"), ("split", "slice"),
                 ("unknown", "cumsum"), ("unknown", "wrapped"), ("unknown", "autograd")]:
        assert want in details
    conv_groups = [(n["groups"], port_channels(s)[n["inputs"][0][0]][n["inputs"][0][1]])
                   for s in specs for n in s["nodes"] if n["op"] == "conv"]
    assert any(1 < g == c for g, c in conv_groups)  # depthwise
    assert any(1 < g < c for g, c in conv_groups)  # grouped
    assert any(len(s["heads"]) == 2 for s in specs)
    assert any(n["op"] == "linear" and n["ln"] for s in specs for n in s["nodes"])


def test_specs_are_small_and_channels_bounded() -> None:
    for spec in _specs(200):
        assert 1 <= len(spec["nodes"]) <= 10
        ports = port_channels(spec)
        for node, outs in zip(spec["nodes"], ports[1:], strict=True):
            assert all(1 <= c <= 16 for c in outs)
            if node["op"] == "split" and not fuzz_models.ENABLE_ONE_CHANNEL_PARTS:
                assert min(outs) >= 2, node


def test_build_network_is_reproducible_from_json() -> None:
    spec = _specs(5)[4]
    model_a, x_a, norm_a = build_network(spec)
    model_b, x_b, norm_b = build_network(json.loads(json.dumps(spec)))
    torch.testing.assert_close(x_a, x_b, rtol=0, atol=0)
    torch.testing.assert_close(model_a(x_a), model_b(x_b), rtol=0, atol=0)
    assert norm_a == norm_b


def test_has_channel_norm_flags_layer_and_group_norm() -> None:
    base = {"seed": 0, "in_channels": 4, "heads": [{"input": [1, 0], "kind": "pool", "out": 2}]}
    gn = {**base, "nodes": [{"op": "gn", "inputs": [[0, 0]], "groups": 2}]}
    ln = {**base, "nodes": [{"op": "linear", "inputs": [[0, 0]], "out": 3, "ln": True}]}
    plain = {**base, "nodes": [{"op": "linear", "inputs": [[0, 0]], "out": 3, "ln": False}]}
    assert build_network(gn)[2] and build_network(ln)[2] and not build_network(plain)[2]


@pytest.mark.parametrize("node", [
    {"op": "add", "inputs": [[0, 0], [1, 0]], "proj": False},  # 4 vs 6 channels
    {"op": "split", "inputs": [[1, 0]], "kind": "split", "sizes": [2, 2]},  # sums to 4, not 6
    {"op": "gn", "inputs": [[1, 0]], "groups": 4},  # 4 does not divide 6
    {"op": "conv", "inputs": [[1, 0]], "out": 5, "k": 3, "groups": 2, "bias": True,
     "bn": False, "act": None},  # 5 out channels in 2 groups
    {"op": "shared", "inputs": [[0, 0], [1, 0]], "out": 3, "combine": True},
    {"op": "nope", "inputs": [[0, 0]]},
])
def test_invalid_specs_are_rejected(node: dict) -> None:
    first = {"op": "conv", "inputs": [[0, 0]], "out": 6, "k": 1, "groups": 1, "bias": True,
             "bn": False, "act": None}
    spec = {"seed": 0, "in_channels": 4, "nodes": [first, node],
            "heads": [{"input": [1, 0], "kind": "pool", "out": 2}]}
    with pytest.raises(ValueError):
        build_network(spec)


def test_checks_catch_a_wrong_channel_rule() -> None:
    # Declaring torch.flip element-wise is wrong (it reverses channels); the checks must
    # notice on some subnet, else they could not notice a wrong built-in rule either.
    conv = {"op": "conv", "inputs": [[0, 0]], "out": 6, "k": 1, "groups": 1, "bias": True,
            "bn": False, "act": None}
    spec = {"seed": 3, "in_channels": 3, "nodes": [
        conv, {"op": "unknown", "inputs": [[1, 0]], "fn": "flip"},
        {**conv, "inputs": [[2, 0]], "out": 4}],
        "heads": [{"input": [3, 0], "kind": "pool", "out": 2}]}
    model, x, has_norm = build_network(spec)
    check_network(copy.deepcopy(model), x, has_norm, 0)  # the right rule passes
    kinds = set()
    for seed in range(5):
        try:
            check_network(model, x, has_norm, seed, function_rules={torch.flip: pointwise})
        except FuzzFailure as e:
            kinds.add(e.kind)
    assert kinds & {"frozen mismatch", "oracle mismatch"}
