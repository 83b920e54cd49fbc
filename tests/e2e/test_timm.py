"""End-to-end checks on timm models, one per layer style: fused norm + activation
(BatchNormAct2d, GroupNormAct), weight-standardised convs (NFNet's ScaledStdConv2d),
same-padding convs (Conv2dSame), mixed convs (MixedConv2d) and attention.

Each model (random weights) must have prunable units, compute the original output at full
width, and freeze at half width to a plain model that computes what the supernet does.
Skipped without timm.
"""

from __future__ import annotations

import pytest
import torch

import fxrazor
from fxrazor.verify.equivalence import check_full_width, check_subnet
from fxrazor.verify.zoo import half_width

timm = pytest.importorskip("timm")

pytestmark = [pytest.mark.slow]

__all__: list[str] = []

# model -> (layer style, keyword arguments); every input is 64 px
MODELS: dict[str, tuple[str, dict[str, int]]] = {
    "test_efficientnet": ("BatchNormAct2d", {}),
    "test_efficientnet_gn": ("GroupNormAct", {}),
    "test_nfnet": ("ScaledStdConv2d (weight standardisation)", {}),
    "tf_efficientnet_b0": ("Conv2dSame", {}),
    "mixnet_s": ("MixedConv2d", {}),
    "vit_tiny_patch16_224": ("attention", {"img_size": 64}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_timm_model_prunes_and_freezes_exactly(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **MODELS[name][1]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        sn = fxrazor.convert(model, x)
        assert len(sn.units) >= 1, sn.analysis.pinned[:5]
        full = check_full_width(model, sn, x)
        assert full.passed(), full
        sn.set_choices(half_width(sn))
        check = check_subnet(model, sn, x)
        assert check.passed(), check
        # the frozen model is smaller: the pruned channels are gone from its weights
        assert sum(p.numel() for p in check.frozen.parameters()) < \
            sum(p.numel() for p in model.parameters())
