"""The verify runners' ``--help`` shows what they do, not their docstrings' doctests."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize("module", ["fxrazor.verify.zoo", "fxrazor.verify.export_zoo",
                                    "fxrazor.verify.hf_zoo", "fxrazor.verify.timm_zoo"])
def test_runner_help_shows_no_doctest(module: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        importlib.import_module(module).main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "usage:" in out
    assert ">>>" not in out and "Example" not in out
