"""End to end: a supernet with channel units, op mutables and value mutables; every
sampled choice, applied with one dict, freezes to a model that computes the same."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from search_models import KEYS, search_supernet

import fxrazor


@pytest.mark.parametrize("mode", ["max", "min", "random"])
def test_sampled_choices_freeze_to_the_same_function(mode: str) -> None:
    sn, x = search_supernet()
    random.seed(1)
    torch.manual_seed(1)
    choices = sn.sample_choices(mode)
    assert list(choices) == KEYS
    sn.set_choices(choices)
    assert sn.choices() == choices
    sn.eval()
    frozen = fxrazor.freeze(sn)
    # freeze keeps a differentiable op's chosen candidate(s) alone; the supernet mixes all
    # of them by the arch param until the op is fixed: fixed, it runs that choice too
    fixed = copy.deepcopy(sn)
    for key in ("dop", "route"):
        fixed.graph_module.get_submodule(key).fix_chosen(choices[key])
    fixed.prepare_mutators()  # fixed op mutables leave the choices once re-prepared
    assert fixed.choices() == {k: v for k, v in choices.items() if k not in ("dop", "route")}
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), fixed(x))
    assert frozen.get_submodule("stem").out_channels == choices["stem"]
    assert frozen.get_submodule("project").out_channels == choices["project"]
