"""Fuzz fxrazor's compiler with random DAG networks (``helpers/fuzz_models.py``).

For every generated network (``helpers/fuzz_checks.py``, through the shared
:mod:`fxrazor.verify.equivalence`): ``convert`` succeeds and leaves the model alone, the
supernet at full width computes what the model computes, and for the smallest and a random
subnet the frozen module computes what the supernet computes, as does the original model
with the pruned channels zeroed (unless a norm mixes statistics over pruned channels); the
frozen random subnet scripts. Patterns that expose known library bugs are switched off by the
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

import fuzz_models
import pytest
import torch
from fuzz_checks import FuzzFailure, check_network, replay_line
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

from fxrazor.rules.functions import pointwise


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
