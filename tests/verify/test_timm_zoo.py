"""The timm coverage runner (fxrazor.verify.timm_zoo): how it reports models that fail.

The rows are built by hand (no timm needed); the run itself is not in CI.
"""

from __future__ import annotations

from fxrazor.verify.timm_zoo import KNOWN_CAUSES, failures
from fxrazor.verify.zoo import ZooResult


def _good(name: str) -> ZooResult:
    return ZooResult(name, "family", units=3, full_width_error=0.0, frozen_error=0.0,
                     oracle_error=None, output_scale=1.0, scripted=True)


def test_passing_models_are_not_listed() -> None:
    assert failures([(_good("a"), "")]) == "None."


def test_each_failing_model_says_what_failed_and_its_known_cause() -> None:
    pinned = ZooResult("b", "fam", units=0, reasons=["torch.foo has no channel rule"],
                       full_width_error=0.0, frozen_error=0.0, output_scale=1.0, scripted=True)
    wrong = _good("c")
    wrong.frozen_error = 0.5
    broken = ZooResult("d", "fam", error="TraceFailedError: symbolically traced variables "
                                         "cannot be used as inputs to control flow")
    unscripted = _good("e")
    unscripted.scripted = False
    lines = failures([(_good("a"), ""), (pinned, ""), (wrong, ""), (broken, ""),
                      (unscripted, "not scriptable: RuntimeError: Unknown type name 'dict'")]).splitlines()
    assert [line.split("**")[1] for line in lines] == ["b", "c", "d", "e"]
    assert "no prunable unit (pinned: torch.foo has no channel rule)" in lines[0]
    assert "frozen differs from the supernet" in lines[1]
    assert KNOWN_CAUSES[1][1] in lines[2]  # fx cannot trace the model's control flow
    assert "not scriptable" in lines[3] and KNOWN_CAUSES[0][1] in lines[3]
