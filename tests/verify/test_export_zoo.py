"""The export zoo on a handful of torchvision models (slow): a random subnet of each saves
as ONNX (run in ONNX Runtime) and .pt2 (reloaded) with the frozen model's outputs."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")

from fxrazor.verify.equivalence import within  # noqa: E402
from fxrazor.verify.export_zoo import check_export  # noqa: E402
from fxrazor.verify.zoo import model_specs  # noqa: E402

# three cheap ones (plain, depthwise with SE, grouped): CI time; docs/coverage-export.md has more
MODELS = ["resnet18", "mobilenet_v3_small", "regnet_x_400mf"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_random_subnet_exports_to_onnx_and_pt2(name: str) -> None:
    spec = next(s for s in model_specs() if s.name == name)
    r = check_export(spec)
    assert (r.onnx_failure, r.pt2_failure) == ("", "")
    assert within(r.onnx_error, r.output_scale), r.onnx_error
    assert within(r.pt2_error, r.output_scale), r.pt2_error
