"""General helpers used across fxrazor.

Example:
    >>> from fxrazor.utils import make_divisible
    >>> make_divisible(20, 8)
    24
"""

from __future__ import annotations

from fxrazor.utils.checkpoint import find_latest_checkpoint
from fxrazor.utils.index_dict import IndexDict
from fxrazor.utils.misc import (
    add_prefix,
    get_module_device,
    make_divisible,
    parse_values,
    set_requires_grad,
)
from fxrazor.utils.placeholder import get_package_placeholder, get_placeholder
from fxrazor.utils.rewriter import pop_rewriter_function_record
from fxrazor.utils.runtime_info import RuntimeInfo
from fxrazor.utils.setup_env import register_all_modules, setup_multi_processes

__all__ = [
    "IndexDict",
    "RuntimeInfo",
    "add_prefix",
    "find_latest_checkpoint",
    "get_module_device",
    "get_package_placeholder",
    "get_placeholder",
    "make_divisible",
    "parse_values",
    "pop_rewriter_function_record",
    "register_all_modules",
    "set_requires_grad",
    "setup_multi_processes",
]
