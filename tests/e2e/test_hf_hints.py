"""A Hugging Face model that returns its key/value cache is refused with the fix named."""

from __future__ import annotations

import pytest
import torch

import fxrazor
from fxrazor.errors import CaptureFailedError

transformers = pytest.importorskip("transformers")


def test_a_model_returning_its_cache_is_told_to_turn_it_off() -> None:
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=100)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    inputs = {"input_ids": torch.randint(0, 100, (1, 8))}
    with pytest.raises(CaptureFailedError, match=r"set model\.config\.use_cache = False"):
        fxrazor.convert(model, inputs, split_dims="outer")
    model.config.use_cache = False  # the fix the message names works
    sn = fxrazor.convert(model, inputs, split_dims="outer")
    assert sn.units
