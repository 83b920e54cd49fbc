"""The NAS and distributed training examples in ``--smoke`` mode, end to end: the printed
``RESULT`` lines hold an architecture of the space and accuracies in [0, 1], and each
script's own check (``OK``) passed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OPS = {"conv3x3", "conv5x5", "sep3x3", "maxpool", "skip"}


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _results(stdout: str) -> list[dict[str, str]]:
    return [dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            for line in stdout.splitlines() if line.startswith("RESULT ")]


def _check_search(stdout: str, algo: str, runs: int) -> None:
    rows = _results(stdout)
    searched = [r for r in rows if r.get("algo") == algo]
    assert len(searched) == runs
    for row in searched:
        arch = row["arch"].split("/")
        assert len(arch) == 4 and set(arch) <= OPS
        assert 0.0 <= float(row["test"]) <= 1.0
    baseline = [r for r in rows if "n" in r]
    assert baseline and all(r["n"] == "10" for r in baseline)
    assert sum(1 for line in stdout.splitlines() if line.startswith("  random ")) >= 10


def test_spos_digits_smoke(tmp_path) -> None:
    cache = tmp_path / "baseline.json"
    result = _run(str(EXAMPLES / "spos_digits.py"), "--smoke", "--baseline-cache", str(cache))
    assert "OK: every exported subnet computes what the supernet computes" in result.stdout
    _check_search(result.stdout, "spos", runs=1)
    assert cache.exists()  # written, for darts_digits.py to reuse


def test_darts_digits_smoke_first_and_second_order() -> None:
    result = _run(str(EXAMPLES / "darts_digits.py"), "--smoke", "--unrolled")
    assert "OK: every exported architecture is the argmax" in result.stdout
    _check_search(result.stdout, "darts", runs=2)
    orders = [r["order"] for r in _results(result.stdout) if r.get("algo") == "darts"]
    assert orders == ["first", "second"]
    for row in _results(result.stdout):
        if row.get("algo") == "darts":  # one probability per op and cell, each cell sums to 1
            cells = [[float(p) for p in c.split(",")] for c in row["probs"].split(";")]
            assert len(cells) == 4 and all(len(c) == 5 for c in cells)
            assert all(abs(sum(c) - 1) < 0.03 for c in cells)


@pytest.mark.slow
def test_train_distributed_two_gloo_ranks_smoke() -> None:
    result = _run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                  str(EXAMPLES / "train_distributed.py"), "--backend", "gloo", "--smoke",
                  timeout=240)
    assert "world 2, backend gloo" in result.stdout
    assert "OK: all 2 ranks hold identical weights" in result.stdout
    (row,) = _results(result.stdout)
    assert row["world"] == "2" and float(row["max_weight_diff"]) == 0.0
    assert 0.0 <= float(row["test_max"]) <= 1.0
