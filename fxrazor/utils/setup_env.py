"""Set up the process for fxrazor: load every registering module, tune multiprocessing.

MMRazor's ``register_all_modules`` fills mmengine registries and sets the default scope;
fxrazor has no registries of that kind. Its tables are plain dicts in the modules that
define them (unit types, layer records, function and method rules), so the equivalent job
is to import those modules and hand the tables back.

Example:
    >>> tables = register_all_modules()
    >>> tables["unit_types"]["l1"].__name__
    'L1MutableChannelUnit'
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
from collections.abc import Mapping
from typing import Any

import torch.multiprocessing as mp

from fxrazor.errors import InvalidArgumentError

__all__ = ["register_all_modules", "setup_multi_processes"]

logger = logging.getLogger(__name__)

# (table name, module, attribute). The modules are loaded by name on call: this helper
# sits at the bottom of the package's stages, and nothing imports it at import time.
_TABLES = (
    ("unit_types", "fxrazor.api", "UNIT_TYPES"),
    ("layers", "fxrazor.layers", "LAYERS"),
    ("function_rules", "fxrazor.rules.functions", "FUNCTION_RULES"),
    ("method_rules", "fxrazor.rules.functions", "METHOD_RULES"),
    ("named_function_rules", "fxrazor.rules.functions", "NAMED_FUNCTION_RULES"),
    ("contraction_rules", "fxrazor.rules.contraction", "CONTRACTION_RULES"),
)
# Modules whose import defines the remaining public names (mutables, structures, passes).
_MODULES = ("fxrazor.mutables", "fxrazor.structures", "fxrazor.passes")


def register_all_modules(init_default_scope: bool = True) -> dict[str, Mapping[Any, Any]]:
    """Import every fxrazor module that defines a lookup table, and return the tables.

    The equivalent of MMRazor's ``register_all_modules``: there it imports its packages
    so that their classes land in mmengine registries. fxrazor's "registries" are the
    dicts returned here (by name): ``unit_types`` (``convert(unit=...)`` names),
    ``layers`` (layer records), ``function_rules``, ``method_rules``,
    ``named_function_rules`` and ``contraction_rules`` (channel rules of graph nodes).
    They are the live tables, not copies.

    Args:
        init_default_scope: accepted for signature compatibility; fxrazor has no
            registry scopes, so it changes nothing.

    Returns:
        ``{table name: table}``.
    """
    del init_default_scope  # no scopes here (see the docstring)
    for name in _MODULES:
        importlib.import_module(name)
    return {key: getattr(importlib.import_module(module), attr)
            for key, module, attr in _TABLES}


def _get(cfg: Any, key: str, default: Any) -> Any:
    """``cfg[key]`` for a mapping, ``cfg.key`` for a config object, else ``default``."""
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def setup_multi_processes(cfg: Any) -> None:
    """Set the multiprocessing start method and thread counts from a config, as MMRazor.

    Reads (all optional): ``mp_start_method`` (default ``'fork'``; not on Windows),
    ``opencv_num_threads`` (default 0, applied only when OpenCV is installed) and
    ``data.workers_per_gpu``: with more than one worker per GPU, ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS`` are set to 1 unless already set, so that worker processes do not
    overload the machine. ``cfg`` is a plain dict (or any object with those attributes).

    Args:
        cfg: the config.

    Raises:
        InvalidArgumentError: for an unknown start method.

    Example:
        >>> import os
        >>> setup_multi_processes({"mp_start_method": None})  # None: leave it as it is
    """
    method = _get(cfg, "mp_start_method", "fork")
    if platform.system() != "Windows" and method is not None:
        if method not in mp.get_all_start_methods():
            raise InvalidArgumentError(
                f"setup_multi_processes: mp_start_method {method!r} is not one of "
                f"{mp.get_all_start_methods()}")
        current = mp.get_start_method(allow_none=True)
        if current is not None and current != method:
            logger.warning("multiprocessing start method %r replaces %r (set mp_start_method "
                           "in the config to keep it)", method, current)
        mp.set_start_method(method, force=True)
    threads = _get(cfg, "opencv_num_threads", 0)
    try:
        cv2: Any = importlib.import_module("cv2")
    except ImportError:
        logger.debug("OpenCV is not installed; opencv_num_threads=%s not applied", threads)
    else:
        cv2.setNumThreads(threads)  # OpenCV's own threads would oversubscribe the workers
    workers = _get(_get(cfg, "data", {}), "workers_per_gpu", 0)
    if workers > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            if var not in os.environ:
                logger.warning("setting %s=1 for each process so that %d workers per GPU do "
                               "not overload the machine; tune it as needed", var, workers)
                os.environ[var] = "1"
