"""Run the algorithm examples on digits (AutoSlim, DMCP, DCFF) in smoke mode and check
their printed ``RESULT`` and ``OK`` lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _run(name: str, *args: str) -> tuple[str, list[dict[str, str]]]:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args],
                            capture_output=True, text=True, timeout=300, check=False)
    rows = [dict(f.split("=") for f in line.split()[1:])
            for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, rows


def _accuracies(row: dict[str, str], keys: tuple[str, ...]) -> None:
    for key in keys:
        assert 0.0 <= float(row[key]) <= 1.0


def test_autoslim_digits_smoke() -> None:
    out, rows = _run("autoslim_digits.py", "--smoke")
    assert "OK: every searched subnet has at most 0.50" in out, out
    assert [r["model"] for r in rows] == ["cnn"]
    row = rows[0]
    assert 0.40 <= float(row["ratio"]) <= 0.50  # greedy stops at the first step under half
    assert 0.40 <= float(row["uniform_ratio"]) <= 0.50
    _accuracies(row, ("max", "searched", "uniform"))
    assert float(row["val"]) <= 0.0  # the search's score: minus a cross-entropy
    assert "TARGET model=cnn:" in out


@pytest.mark.slow
def test_autoslim_digits_smoke_resnet() -> None:
    out, rows = _run("autoslim_digits.py", "--smoke", "--models", "resnet")
    assert "OK: every searched subnet" in out, out
    assert float(rows[0]["ratio"]) <= 0.50


def test_dmcp_digits_smoke() -> None:
    out, rows = _run("dmcp_digits.py", "--smoke")
    assert [r["model"] for r in rows] == ["cnn"]
    row = rows[0]
    # one epoch is too short for the arch params to reach the target: only the
    # bookkeeping is checked here (the ratio the script judges is the frozen subnet's)
    assert 0.0 < float(row["ratio"]) <= 1.0
    assert float(row["ratio"]) == pytest.approx(float(row["dmcp_ratio"]), abs=0.02)
    _accuracies(row, ("unpruned", "exported", "finetuned"))
    assert ("OK: every exported subnet's FLOPs ratio" in out) != ("SMOKE: a FLOPs ratio" in out)


def test_dcff_digits_smoke() -> None:
    out, rows = _run("dcff_digits.py", "--smoke")
    assert "OK: every DCFF and L1 subnet has at most 0.50" in out, out
    row = rows[0]
    assert 0.49 <= float(row["l1_ratio"]) <= 0.50
    assert 0.45 <= float(row["dcff_ratio"]) <= 0.50
    assert float(row["dcff_width"]) == pytest.approx(0.70)  # 11/22/22 channels of 16/32/32
    assert float(row["scratch_ratio"]) == pytest.approx(float(row["dcff_ratio"]))
    _accuracies(row, ("unpruned", "l1_ce", "dcff", "scratch"))
