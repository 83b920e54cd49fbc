"""Run the example scripts end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_spos_search_space_example_runs():
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "spos_search_space.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: fixed subnet output matches the supernet" in result.stdout
    # the exported YAML names every choice block and the depth alias
    for key in ("blocks.0:", "blocks.3:", "depth:"):
        assert key in result.stdout


def _run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_digits_common_smoke() -> None:
    result = _run_example("digits_common.py", "--smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train (256, 1, 8, 8) test (128, 1, 8, 8)" in result.stdout
    assert "SmallCNN: test accuracy" in result.stdout
    assert "SmallResNet: test accuracy" in result.stdout


def test_prune_distill_smoke() -> None:
    result = _run_example("prune_distill.py", "--smoke")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every pruned subnet has 0.49-0.50 of its model's FLOPs" in result.stdout
    rows = [dict(f.split("=") for f in line.split()[1:])
            for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(r["model"] for r in rows) == ["cnn", "resnet"]
    for row in rows:
        assert 0.49 <= float(row["flops_ratio"]) <= 0.50
        assert 0.2 <= float(row["again_ratio"]) <= 0.25  # pruned to half, then half again
        for key in ("base", "pruned", "ce", "kd", "kd+feat", "again_kd"):
            assert 0.0 <= float(row[key]) <= 1.0
