"""Read the numbers back out of the command line's report (tests/e2e/test_cli_*.py).

Example:
    >>> widths("unit  channels  width  members\\n----  --------  -----  -------\\n"
    ...        "conv1        64     32  conv1, bn1\\n\\nPinned channels:")
    {'conv1': (64, 32)}
    >>> params("params: 25.56 M -> 6.9 M (0.270x)")
    (25.56, 6.9)
"""

from __future__ import annotations

import re

__all__ = ["widths", "params", "flops", "exactness", "speed_up"]

_NUMBER = r"([-+\d.e]+)"


def _match(pattern: str, out: str) -> re.Match[str]:
    found = re.search(pattern, out)
    assert found is not None, f"no {pattern!r} in the output:\n{out}"
    return found


def widths(out: str) -> dict[str, tuple[int, int]]:
    """``{unit: (channels, width)}`` from the unit table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\s*unit\s+channels\s+width", line))
    table = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        name, channels, width = re.split(r"\s{2,}", line.strip())[:3]
        table[name] = (int(channels), int(width))
    return table


def params(out: str) -> tuple[float, ...]:
    """Params in M: ``(total,)`` or ``(before, after)``."""
    line = _match(r"params: (.*)", out).group(1)
    return tuple(float(v) for v in re.findall(_NUMBER + r" M", line))


def flops(out: str) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """``(label, FLOPs in G, multiply-adds in G)`` of the per-sample line."""
    found = _match(r"FLOPs per sample \(([^)]*)\): (.*); multiply-adds (.*)", out)
    values = tuple(float(v) for v in re.findall(_NUMBER + r" G", found.group(2)))
    macs = tuple(float(v) for v in re.findall(_NUMBER + r" G", found.group(3)))
    return found.group(1), values, macs


def exactness(out: str) -> tuple[str, float, float]:
    """``(the whole line, max |diff|, output scale)`` of the frozen == supernet check."""
    found = _match(r"(frozen [=!]= supernet.*max \|diff\| " + _NUMBER +
                   r" \(output scale " + _NUMBER + r"\).*)", out)
    return found.group(1), float(found.group(2)), float(found.group(3))


def speed_up(out: str) -> float:
    return float(_match(r"speed-up " + _NUMBER + "x", out).group(1))
