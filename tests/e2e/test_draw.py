"""fxrazor.draw: the picture of a supernet names every unit and every pin reason, parses as
HTML or SVG, fetches nothing, and is the same bytes for the same supernet."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.drawing import draw, scene
from fxrazor.drawing_layout import layout
from fxrazor.errors import FxRazorError, InvalidArgumentError, UnsupportedModelError

torchvision = pytest.importorskip("torchvision")


class Gate(nn.Module):
    """Kept whole (a leaf): its channels are opaque to the analysis."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * torch.sigmoid(x.mean((2, 3), keepdim=True))


def _resnet18() -> fxrazor.Supernet:
    sn = fxrazor.convert(torchvision.models.resnet18(weights=None), torch.randn(1, 3, 64, 64))
    sn.set_choices({"conv1": 32})
    return sn


def _vit() -> fxrazor.Supernet:
    from torchvision.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=16, mlp_dim=32)
    return fxrazor.convert(vit, torch.randn(1, 3, 32, 32))


def _opaque() -> fxrazor.Supernet:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), Gate(), nn.Conv2d(8, 16, 1),
                          nn.ReLU(), nn.Conv2d(16, 4, 1))
    return fxrazor.convert(model, torch.randn(1, 3, 16, 16), leaf_modules=(Gate,))


MODELS = {"resnet18": _resnet18, "vit": _vit, "opaque_leaf": _opaque}


class _Strict(HTMLParser):
    """Collects the text (entities resolved) and checks that tags nest."""

    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _text(path: Path) -> str:
    """The document's text, parsed (so that escaped names read as written)."""
    if path.suffix == ".svg":
        return "\n".join(ET.parse(path).getroot().itertext())
    parser = _Strict()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [], parser.open
    return "\n".join(parser.text)


@pytest.fixture(scope="module", params=sorted(MODELS))
def supernet(request: pytest.FixtureRequest) -> fxrazor.Supernet:
    torch.manual_seed(0)
    return MODELS[request.param]()


@pytest.mark.parametrize("suffix", [".html", ".svg"])
def test_picture_names_units_and_pins(supernet: fxrazor.Supernet, suffix: str,
                                      tmp_path: Path) -> None:
    path = fxrazor.draw(supernet, tmp_path / f"net{suffix}")
    assert path == tmp_path / f"net{suffix}" and path.is_file()
    text = _text(path)
    for unit in supernet.units:
        assert unit.name in text
        assert f"width {unit.activated_channels}/{unit.num_channels}" in text
    reasons = [r for group in supernet.analysis.pinned for r in group.reasons]
    assert reasons
    for reason in reasons:
        assert reason in text
    raw = path.read_text(encoding="utf-8")
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", raw))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert "src=" not in raw and "@import" not in raw


@pytest.mark.parametrize("suffix", [".html", ".svg"])
def test_same_supernet_same_bytes(supernet: fxrazor.Supernet, suffix: str,
                                  tmp_path: Path) -> None:
    first = draw(supernet, tmp_path / f"a{suffix}").read_bytes()
    second = draw(supernet, tmp_path / f"b{suffix}").read_bytes()
    assert first == second


def test_resnet_nodes_are_layers_and_ops_without_noise() -> None:
    sn = _resnet18()
    drawn = scene(sn)
    names = [n.name for n in drawn.nodes]
    modules = [n.name for n in sn.graph_module.graph.nodes if n.op == "call_module"]
    assert set(modules) <= set(names)
    assert sum(n.lines[0] == "add_" for n in drawn.nodes) == 8  # the residual adds
    assert names[0] == "x" and names[-1] == "output"
    # conv1's body has conv1's unit; the first block's conv1 takes it in its input band
    conv1 = drawn.nodes[names.index("conv1")]
    block = drawn.nodes[names.index("layer1_0_conv1")]
    assert drawn.units[conv1.out_units[0]].name == "conv1"
    assert block.in_units == conv1.out_units and conv1.pinned_in and not conv1.pinned_out
    assert drawn.nodes[names.index("fc")].pinned_out  # model output


def test_vit_shape_arithmetic_is_left_out() -> None:
    drawn = scene(_vit())
    labels = {n.lines[0] for n in drawn.nodes}
    assert {"cat", "scaled_dot_product_attention", "reshape"} <= labels
    assert not labels & {"getattr", "getitem", "eq", "_assert", "floordiv", "dim"}
    assert not any(n.name.startswith("fxr_size") for n in drawn.nodes)


def test_opaque_leaf_is_marked() -> None:
    sn = _opaque()
    drawn = scene(sn)
    gate = next(n for n in drawn.nodes if n.name == "_2")
    assert gate.pinned_out and "no channel rule" in gate.hover
    assert any("Gate '2'" in name for name, _ in drawn.opaque)


def test_text_is_escaped(tmp_path: Path) -> None:
    sn = fxrazor.convert(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)),
                         torch.randn(1, 3, 4, 4))
    title = 'a <b> & "c"'
    for suffix in (".html", ".svg"):
        path = draw(sn, tmp_path / f"t{suffix}", title=title)
        assert title in _text(path)
        assert "<b>" not in path.read_text(encoding="utf-8")


def test_layout_is_layered_and_ordered() -> None:
    # a diamond with a long edge: rows by longest path, the long edge bends via waypoints
    plan = layout([(60, 30)] * 4, [(0, 1), (1, 2), (2, 3), (0, 3)])
    rows = [b.y for b in plan.boxes]
    assert rows == sorted(rows) and len(set(rows)) == 4
    assert len(plan.routes[3]) == 4  # source, two waypoints, target
    with pytest.raises(ValueError):
        layout([(60, 30)] * 2, [(1, 0)])


def test_not_a_supernet(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="Supernet"):
        fxrazor.draw(nn.Linear(2, 2), tmp_path / "x.html")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["x.png", "x", "x.html.txt"])
def test_bad_suffix(name: str, tmp_path: Path) -> None:
    sn = fxrazor.convert(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.randn(2, 4))
    with pytest.raises(InvalidArgumentError, match=r"\.html or \.svg") as caught:
        draw(sn, tmp_path / "out" / name)
    assert isinstance(caught.value, FxRazorError)
    assert list(tmp_path.iterdir()) == []
