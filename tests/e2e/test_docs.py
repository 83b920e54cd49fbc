"""Every ``python`` code block of the user guides runs (in order, one namespace per page).

Each page runs in a fresh temporary folder (pages write files such as ``units.html`` or
``net.pt2`` by relative paths), in a namespace named ``__main__`` as a script's would be,
and is skipped where a package it imports is not installed.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
# page -> the optional packages its blocks import
PAGES: dict[str, tuple[str, ...]] = {
    "training.md": (),
    "pruning.md": ("torchvision",),
    "saving.md": ("onnx", "onnxscript", "onnxruntime", "yaml"),
    "pins.md": (),
    "models.md": ("timm", "transformers", "safetensors"),
}
SLOW_PAGES = {"models.md"}  # real timm and Hugging Face models: in the slow selection


def _cases() -> list:
    return [pytest.param(page, marks=pytest.mark.slow) if page in SLOW_PAGES else page
            for page in PAGES]


@pytest.mark.parametrize("page", _cases())
def test_code_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [m for m in PAGES[page] if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{page} needs {', '.join(missing)}")
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)
    assert blocks, f"{page} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{page}[{i}]", "exec"), namespace)
        except Exception as e:  # name the page and block that failed
            raise AssertionError(f"{page}, python block {i} failed: {e!r}") from e


def test_every_guide_is_tested_and_linked() -> None:
    """Each guide in PAGES exists, and the README's "User guides" section links it."""
    readme = (DOCS.parent / "README.md").read_text()
    guides = readme.split("## User guides", 1)[1].split("\n## ", 1)[0]
    for page in PAGES:
        assert (DOCS / page).is_file(), page
        assert f"(docs/{page})" in guides, f"README's User guides does not link {page}"


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
