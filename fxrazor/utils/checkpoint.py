"""Find the newest checkpoint in a working directory.

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d:
    ...     for name in ("epoch_2.pth", "epoch_10.pth"):
    ...         _ = (pathlib.Path(d) / name).write_bytes(b"")
    ...     pathlib.Path(find_latest_checkpoint(d)).name
    'epoch_10.pth'
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

__all__ = ["find_latest_checkpoint"]

logger = logging.getLogger(__name__)

# Names such as ``iter_1200.pth`` or ``best_epoch_7.pth``; the number orders them.
_STEP_PATTERN = re.compile(r"(?:iter|epoch)_(\d+)")


def _from_pointer_file(directory: Path) -> str | None:
    """Return the file named in ``directory/last_checkpoint``, if that file exists."""
    pointer = directory / "last_checkpoint"
    if not pointer.is_file():
        return None
    target = Path(pointer.read_text().strip())
    if not target.is_absolute() and not target.is_file():
        # A relative name is read as relative to the working directory it sits in.
        target = directory / target
    if target.is_file():
        return str(target)
    logger.warning("%s points to %s, which does not exist; searching by name", pointer, target)
    return None


def find_latest_checkpoint(path: str | Path, suffix: str = "pth") -> str | None:
    """Return the newest checkpoint in ``path``.

    If ``path/last_checkpoint`` exists and names an existing file, that file is the answer;
    else ``path/latest.{suffix}`` if it exists (MMRazor's first look). Otherwise the ``*.{suffix}`` file whose name holds the largest ``iter_N`` or
    ``epoch_N`` number wins. Files without such a number are ignored.

    Args:
        path: the working directory to search.
        suffix: the checkpoint file extension, without the dot.

    Returns:
        The path of the newest checkpoint, or None if there is none (or ``path`` is not
        a directory).
    """
    directory = Path(path)
    if not directory.is_dir():
        return None
    pointed = _from_pointer_file(directory)
    if pointed is not None:
        return pointed
    latest = directory / f"latest.{suffix}"
    if latest.is_file():
        return str(latest)
    best: tuple[int, str] | None = None
    for candidate in directory.glob(f"*.{suffix}"):
        steps = [int(n) for n in _STEP_PATTERN.findall(candidate.stem)]
        if not steps or not candidate.is_file():
            continue
        # Ties on the number are broken by name so the answer does not depend on listing order.
        key = (max(steps), candidate.name)
        if best is None or key > best:
            best = key
    return None if best is None else str(directory / best[1])
