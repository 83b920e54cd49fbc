"""Every torchvision classification, segmentation and video model: convert, one random
subnet, freeze, and check it with the equivalence oracles (see fxrazor.zoo)."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")

from fxrazor.zoo import ModelSpec, check_model, model_specs  # noqa: E402

SPECS = model_specs()


def test_the_zoo_is_complete() -> None:
    kinds = {s.kind for s in SPECS}
    assert sum(s.kind == "classification" for s in SPECS) >= 80
    assert kinds == {"classification", "segmentation", "video"}


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_zoo_model(spec: ModelSpec) -> None:
    r = check_model(spec, seed=0, choices="random")
    tol = 1e-4 * max(1.0, r.output_scale)
    assert r.full_width_error <= tol, "full-width supernet differs from the model"
    assert r.frozen_error <= tol, "frozen subnet differs from the supernet"
    assert r.scripted, "TorchScript output differs"
    assert r.units >= 1, f"no prunable unit; pinned because {r.reasons}"
    assert r.params_after < r.params_before
    if r.oracle_error is not None:  # every model without norms over pruned channels
        assert r.oracle_error <= tol, "zero-invariance oracle failed"
