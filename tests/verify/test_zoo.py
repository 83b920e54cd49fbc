"""Every torchvision classification, segmentation and video model: convert, one random
subnet, freeze, and check it with the equivalence oracles (see fxrazor.verify.zoo)."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")

from fxrazor.verify.zoo import ModelSpec, check_model, model_specs  # noqa: E402

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


def test_zoo_run_of_chosen_models_prints_instead_of_replacing_the_table(
        tmp_path, monkeypatch, capsys) -> None:
    from fxrazor import zoo

    monkeypatch.chdir(tmp_path)  # a stray default write would land here
    assert zoo.main(["--models", "squeezenet1_0"]) == 0
    out = capsys.readouterr().out
    assert "| squeezenet1_0" in out and "1/1 models ran" in out
    assert not (tmp_path / "docs").exists()
    assert zoo.main(["--models", "squeezenet1_0", "--out", str(tmp_path / "t.md")]) == 0
    assert "| squeezenet1_0" in (tmp_path / "t.md").read_text()
