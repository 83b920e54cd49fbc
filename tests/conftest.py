"""Test tree by pipeline stage: trace/, analysis/, rules/, ops/, passes/, mutables/,
structures/, utils/, verify/ and e2e/; the helpers they share live in helpers/.

pytest runs with ``--import-mode=importlib``, which puts no test folder on ``sys.path``;
this puts ``helpers/`` there once, so that a test imports ``small_models``, ``models``,
``fuzz_models``, ``oracles``, ... by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

HELPERS = str(Path(__file__).resolve().parent / "helpers")
if HELPERS not in sys.path:
    sys.path.insert(0, HELPERS)
