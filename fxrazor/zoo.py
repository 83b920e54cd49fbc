"""``python -m fxrazor.zoo``: the coverage run over torchvision's model zoo.

The runner lives in :mod:`fxrazor.verify.zoo`; this entry keeps the public command.
"""

from __future__ import annotations

from fxrazor.verify.zoo import ModelSpec, ZooResult, check_model, half_width, main, model_specs

__all__ = ["ModelSpec", "ZooResult", "model_specs", "check_model", "half_width", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
