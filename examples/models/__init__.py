"""Small language models for the fxrazor examples and tests: a Llama-style and a
GPT-2-style decoder, both traceable by torch.fx.

Example:
    >>> import torch
    >>> from models import GPT2, GPT2Config, Llama, LlamaConfig  # with examples/ on sys.path
    >>> Llama(LlamaConfig(num_layers=1))(torch.zeros(1, 4, dtype=torch.long)).shape
    torch.Size([1, 4, 128])
"""

from __future__ import annotations

from .gpt2 import GPT2, GPT2Config
from .llama import Llama, LlamaConfig

__all__ = ["GPT2", "GPT2Config", "Llama", "LlamaConfig"]
