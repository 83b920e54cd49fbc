"""The command line prunes a torchvision model and reports a correct, smaller subnet."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torchvision")

from fxrazor.cli import main  # noqa: E402


def test_prune_command_reports_units_and_an_exact_frozen_model(capsys, tmp_path) -> None:
    saved = tmp_path / "frozen.pt"
    code = main(["prune", "--model", "resnet18", "--ratio", "0.5", "--input-size", "64",
                 "--batch", "1", "--repeats", "1", "--save", str(saved)])
    out = capsys.readouterr().out
    assert code == 0
    assert "layer1.0.conv1" in out and "model output" in out
    error = float(re.search(r"max \|frozen - supernet\| = (\S+)", out).group(1))
    assert error < 1e-4
    params = re.search(r"params\s+(\d+)\s+(\d+)", out)
    assert int(params.group(2)) < int(params.group(1))
    assert saved.exists()


def test_unknown_model_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="unknown torchvision"):
        main(["prune", "--model", "not_a_model"])
