"""Training progress (epoch, iteration and their totals), kept for the whole process.

MMRazor's ``RuntimeInfo`` reads these from mmengine's ``MessageHub``, which the mmengine
runner fills as it trains. fxrazor has no runner, so this module replaces the MessageHub:
the training loop writes its progress with :meth:`RuntimeInfo.set_info`, and methods whose
behaviour follows training progress (DCFF's temperature) read it with MMRazor's names.

Example:
    >>> with RuntimeInfo.scope(epoch=2, max_epochs=10, iter=250, max_iters=1000):
    ...     RuntimeInfo.epoch(), RuntimeInfo.max_iters(), RuntimeInfo.iter_by_epoch()
    (2, 1000, 50)
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from fxrazor.errors import InvalidArgumentError

__all__ = ["RuntimeInfo"]

# Keys with a meaning of their own, and the smallest value each may take; any other key
# (a config text, a work dir) is stored as given.
_COUNTERS = {"epoch": 0, "iter": 0, "max_epochs": 1, "max_iters": 1}


def _check(key: str, value: Any) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"RuntimeInfo keys are non-empty strings, got {key!r}")
    least = _COUNTERS.get(key)
    if least is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise InvalidArgumentError(
            f"RuntimeInfo.set_info: {key} must be an int >= {least}, got {value!r}; "
            f"pass the training loop's own counter (epochs and iterations count from 0)")


class RuntimeInfo:
    """The process-wide store of training progress; every method is a classmethod.

    A training loop calls ``set_info(epoch=..., max_epochs=..., iter=..., max_iters=...)``
    as it goes (``iter`` counts iterations over the whole run, as mmengine does); readers
    call ``epoch()``, ``max_epochs()``, ``iter()``, ``max_iters()``, ``iter_by_epoch()``,
    ``iter_pre_epoch()`` or ``get_info(key)``. A key never set is an error naming it.
    Reads and writes hold one lock, so threads of one process see each ``set_info`` whole.
    ``scope(...)`` sets values for a block and restores the old ones; ``reset()`` clears.

    Example:
        >>> RuntimeInfo.reset()
        >>> RuntimeInfo.set_info(epoch=0, max_epochs=3)
        >>> RuntimeInfo.get_info("max_epochs")
        3
        >>> RuntimeInfo.reset()
    """

    _lock: ClassVar[threading.RLock] = threading.RLock()
    _store: ClassVar[dict[str, Any]] = {}

    @classmethod
    def set_info(cls, **info: Any) -> None:
        """Set one or more values; all are checked before any is written."""
        for key, value in info.items():
            _check(key, value)
        with cls._lock:
            cls._store.update(info)

    @classmethod
    def info(cls) -> dict[str, Any]:
        """A copy of every value set."""
        with cls._lock:
            return dict(cls._store)

    @classmethod
    def get_info(cls, key: str) -> Any:
        """The value of ``key``; an error says how to set it when it was never set."""
        with cls._lock:
            if key in cls._store:
                return cls._store[key]
        raise InvalidArgumentError(
            f"RuntimeInfo has no {key!r}: the training loop must call "
            f"RuntimeInfo.set_info({key}=...) first (fxrazor has no runner to fill it)")

    @classmethod
    def epoch(cls) -> int:
        return int(cls.get_info("epoch"))

    @classmethod
    def max_epochs(cls) -> int:
        return int(cls.get_info("max_epochs"))

    @classmethod
    def iter(cls) -> int:
        return int(cls.get_info("iter"))

    @classmethod
    def max_iters(cls) -> int:
        return int(cls.get_info("max_iters"))

    @classmethod
    def iter_pre_epoch(cls) -> int:
        """Iterations per epoch, ``ceil(max_iters / max_epochs)`` (MMRazor's name)."""
        with cls._lock:  # both totals from the same moment
            return math.ceil(cls.max_iters() / cls.max_epochs())

    @classmethod
    def iter_by_epoch(cls) -> int:
        """The iteration inside the current epoch: ``iter % iter_pre_epoch()``."""
        with cls._lock:
            return cls.iter() % cls.iter_pre_epoch()

    @classmethod
    def reset(cls) -> None:
        """Forget every value."""
        with cls._lock:
            cls._store.clear()

    @classmethod
    @contextlib.contextmanager
    def scope(cls, **info: Any) -> Iterator[None]:
        """Set ``info`` on top of the current values for the block, then put back exactly
        what was there before (tests, or a nested evaluation loop).

        Example:
            >>> RuntimeInfo.reset()
            >>> with RuntimeInfo.scope(epoch=4):
            ...     RuntimeInfo.epoch()
            4
            >>> RuntimeInfo.info()
            {}
        """
        for key, value in info.items():
            _check(key, value)
        with cls._lock:
            saved = dict(cls._store)
            cls._store.update(info)
        try:
            yield
        finally:
            with cls._lock:
                cls._store.clear()
                cls._store.update(saved)
