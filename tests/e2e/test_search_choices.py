"""End to end: a supernet with channel units, op mutables and value mutables; every
sampled choice, applied with one dict, freezes to a model that computes the same."""

from __future__ import annotations

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
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), sn(x))
    assert frozen.get_submodule("stem").out_channels == choices["stem"]
