"""Every ``python`` code block of the user guides runs (in order, one namespace per page)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ["training.md"]


@pytest.mark.parametrize("page", PAGES)
def test_code_blocks_run(page: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    assert blocks, f"{page} has no python block"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page}[{i}]", "exec"), namespace)
        except Exception as e:  # name the page and block that failed
            raise AssertionError(f"{page}, python block {i} failed: {e!r}") from e


def test_readme_saving_blocks_run() -> None:
    """The README's "Saving and exporting" blocks run, in order, in one namespace."""
    pytest.importorskip("torchvision")
    pytest.importorskip("onnxscript")
    readme = (DOCS.parent / "README.md").read_text()
    section = readme.split("## Saving and exporting", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md saving[{i}]", "exec"), namespace)
    assert namespace["rebuilt"] is not None
