"""Tests for fxrazor.structures.subnet.Candidates."""

from __future__ import annotations

import pytest

from fxrazor.errors import FxRazorError, IndexOutOfRangeError, InvalidArgumentError
from fxrazor.structures.subnet import Candidates

ZERO = {"score": 0.0, "flops": 0.0, "params": 0.0, "latency": 0.0}
S1 = {"1": "choice1", "2": "choice2"}
S2 = {"choice_3": "layer_3", "choice_4": "layer_4"}
S3 = {"a": 3, "b": [1, 2], "c": {"chosen": 0.5, "meta": None}}


def test_reference_example():
    c = Candidates()
    c.append(S1)
    assert list(c) == [{"{'1': 'choice1', '2': 'choice2'}": ZERO}]
    c.set_resources(0, 49.9, "flops")  # the alias spelling
    c.set_score(0, 100.0)
    assert c[0] == {
        "{'1': 'choice1', '2': 'choice2'}": {
            "score": 100.0,
            "flops": 49.9,
            "params": 0.0,
            "latency": 0.0,
        }
    }
    c.append(S2)
    assert c.subnets == [S1, S2]
    assert c.resources("flops") == [49.9, 0.0]
    assert c.scores == [100.0, 0.0]


def test_every_input_form_is_accepted():
    stored = {str(S2): {"score": 1.0, "flops": 2.0, "params": 3.0, "latency": 4.0}}
    c = Candidates([S1, stored])
    c.append([S3])
    c.extend([{str(S1): {"params": 7}}])  # partial resources get defaults for the rest
    assert c.subnets == [S1, S2, S3, S1]
    assert c[1] == stored
    assert c[3][str(S1)] == {**ZERO, "params": 7.0}
    assert Candidates(S1).subnets == [S1]  # a single dict as initdata
    assert Candidates(stored)[0] == stored


def test_stored_form_is_copied_not_shared():
    resources = {"score": 1.0}
    c = Candidates([{str(S1): resources}])
    c.set_score(0, 5.0)
    assert resources == {"score": 1.0}


def test_single_key_plain_subnet_is_not_mistaken_for_stored_form():
    # key does not spell a dict -> a plain subnet
    plain = {"backbone.layer1": {"score": 1.0}}
    c = Candidates([plain])
    assert c.subnets == [plain]
    assert c.scores == [0.0]
    # value has non-resource keys -> a plain subnet, even though the key spells a dict
    odd = {"{'x': 1}": {"chosen": 3}}
    assert Candidates([odd]).subnets == [odd]


def test_insert_single_and_list():
    c = Candidates([S1])
    c.insert(0, S2)
    assert c.subnets == [S2, S1]
    c.insert(1, [S3, {"z": 0}])
    assert c.subnets == [S2, S3, {"z": 0}, S1]
    c.insert(-1, [{"p": 1}, {"q": 2}])
    assert c.subnets == [S2, S3, {"z": 0}, {"p": 1}, {"q": 2}, S1]


def test_sort_by_score_and_resources():
    c = Candidates([{"n": i} for i in range(4)])
    for i, (score, flops) in enumerate([(0.3, 10.0), (0.9, 5.0), (0.1, 20.0), (0.5, 1.0)]):
        c.set_score(i, score)
        c.set_resource(i, flops, "flops")
    c.sort_by()
    assert c.scores == [0.9, 0.5, 0.3, 0.1]
    assert c.subnets == [{"n": 1}, {"n": 3}, {"n": 0}, {"n": 2}]
    c.sort_by("flops", reverse=False)
    assert c.resources("flops") == [1.0, 5.0, 10.0, 20.0]
    assert c.subnets == [{"n": 3}, {"n": 1}, {"n": 0}, {"n": 2}]


def test_update_resources():
    c = Candidates([{"n": i} for i in range(3)])
    c.update_resources([{"flops": 1.5, "params": 2}, {"latency": 3}], start=1)
    assert c.resources("flops") == [0.0, 1.5, 0.0]
    assert c.resources("params") == [0.0, 2.0, 0.0]
    assert c.resources("latency") == [0.0, 0.0, 3.0]
    assert c.scores == [0.0, 0.0, 0.0]


def test_negative_index_addresses_from_the_end():
    c = Candidates([S1, S2])
    c.set_score(-1, 4.0)
    assert c.scores == [0.0, 4.0]


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.set_score(2, 1.0),
        lambda c: c.set_score(-3, 1.0),
        lambda c: c.set_resource(5, 1.0),
        lambda c: c.update_resources([{"flops": 1}, {"flops": 2}], start=1),
        lambda c: c.update_resources([{"flops": 1}], start=-1),
    ],
)
def test_bad_index_raises(call):
    c = Candidates([S1, S2])
    with pytest.raises(IndexOutOfRangeError, match="range"):
        call(c)
    assert isinstance(IndexOutOfRangeError("x"), IndexError)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.set_resource(0, 1.0, "score"),  # the score has its own setter
        lambda c: c.set_resource(0, 1.0, "memory"),
        lambda c: c.resources("memory"),
        lambda c: c.sort_by("memory"),
        lambda c: c.update_resources([{"memory": 1.0}]),
    ],
)
def test_unknown_key_indicator_raises(call):
    c = Candidates([S1])
    with pytest.raises(InvalidArgumentError, match="key_indicator"):
        call(c)


@pytest.mark.parametrize("bad", [3, "subnet", [S1, 5], {"op": object()}])
def test_bad_candidates_are_rejected(bad):
    with pytest.raises(FxRazorError):
        Candidates().append(bad)


def test_update_resources_is_all_or_nothing():
    c = Candidates([S1, S2])
    with pytest.raises(InvalidArgumentError, match="memory"):
        c.update_resources([{"flops": 1.0}, {"memory": 2.0}])
    assert c.resources("flops") == [0.0, 0.0]
    with pytest.raises(InvalidArgumentError, match="dict"):
        c.update_resources([1.0])
