"""``python -m fxrazor``: the command line (see fxrazor.cli)."""

from __future__ import annotations

import sys

from fxrazor.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
