"""Run ``examples/topk_distill.py`` (prune, distill, prune again with top-K candidates)
in smoke mode and check its printed ``candidates``, ``RESULT``, ``COMPARE`` and ``OK``
lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_topk_distill_smoke() -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "topk_distill.py"), "--smoke"],
                            capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "OK: every top-K candidate has at most 0.50, then 0.25 of the unpruned FLOPs" in out
    rows = [dict(f.split("=") for f in line.split()[1:])
            for line in out.splitlines() if line.startswith("RESULT ")]
    assert [(r["model"], r["seed"]) for r in rows] == [("cnn", "0")]
    row = {k: float(v) for k, v in rows[0].items() if k != "model"}
    for key in ("max_ratio", "top1_ratio", "sel_ratio"):
        assert 0.0 < row[key] <= 0.5, key
    for key in ("again_max_ratio", "again_top1_ratio", "again_sel_ratio", "again_l1_ratio"):
        assert 0.0 < row[key] <= 0.25, key
    assert 0.49 <= row["l1_ratio"] <= 0.5
    assert row["top1_ratio"] <= row["max_ratio"] and row["sel_ratio"] <= row["max_ratio"]
    assert row["sel_rank"] in (0.0, 1.0, 2.0) and row["again_sel_rank"] in (0.0, 1.0, 2.0)
    if row["sel_rank"] == 0.0:  # the top-1 run and the selected run are the same run
        assert row["sel_kd"] == row["top1_kd"]
    for key in ("base", "top1_pruned", "top1_kd", "sel_kd", "l1_kd", "again_top1_pruned",
                "again_top1_kd", "again_sel_kd", "again_l1_kd"):
        assert 0.0 <= row[key] <= 1.0, key
    candidates = [line for line in out.splitlines() if line.startswith("candidates ")]
    assert [line.split()[1] for line in candidates] == ["half", "quarter"]
    assert all(line.count("ratio=") == 3 for line in candidates)  # K = 3
    assert sum(line.startswith("COMPARE ") for line in out.splitlines()) == 2
