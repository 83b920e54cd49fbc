"""The export front-end: layer-level graphs from torch.export, the same units as torch.fx,
frozen models that run at other sizes, export, and reload without fxrazor."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import CaptureFailedError, InvalidChoiceError, TraceFailedError
from fxrazor.verify.equivalence import check_full_width, check_subnet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


class Block(nn.Module):
    """conv-bn-relu, a residual, attention-style reshapes and a hand-written RMSNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.norm_weight = nn.Parameter(torch.rand(8) + 0.5)
        self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x)))
        y = y + self.conv2(y)
        t = y.flatten(2).transpose(1, 2)  # (B, HW, C)
        t = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight
        t = t + self.fc2(torch.nn.functional.gelu(self.fc1(t)))
        return self.head(t.mean(1))


class Unrolled(nn.Module):
    """Iterates over a tensor in the top-level forward: torch.fx cannot, export can."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = [self.fc1(row) for row in x]
        return self.fc2(torch.relu(torch.stack(rows)))


def _units(sn: fxrazor.Supernet) -> dict[str, int]:
    return {u.name: u.num_channels for u in sn.units}


def test_export_finds_the_units_fx_finds_and_names_them_by_path() -> None:
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(2, 3, 6, 6)
    by_fx = fxrazor.convert(model, x, capture="fx")
    by_export = fxrazor.convert(model, x, capture="export")
    assert _units(by_export) == _units(by_fx) == {"conv": 8, "fc1": 12}
    targets = {n.target for n in by_export.graph_module.graph.nodes if n.op == "call_module"}
    assert {"conv", "bn", "conv2", "fc1", "fc2", "head"} <= targets
    assert check_full_width(model, by_export, x).error == 0.0
    by_export.set_choices({"conv": 5, "fc1": 7})
    check = check_subnet(model, by_export, x)
    assert check.frozen_error < 1e-5
    assert check.frozen.get_submodule("conv").out_channels == 5
    assert check.frozen.get_submodule("fc1").out_features == 7


def test_frozen_from_export_runs_at_other_batch_sizes_and_exports(tmp_path) -> None:
    torch.manual_seed(0)
    model = Block().eval()
    sn = fxrazor.convert(model, torch.randn(2, 3, 6, 6), capture="export")
    sn.set_choices({"conv": 4, "fc1": 6})
    frozen = fxrazor.freeze(sn)
    other = torch.randn(5, 3, 6, 6)
    torch.testing.assert_close(frozen(other), sn(other))
    program = torch.export.export(frozen, (other,))
    torch.testing.assert_close(program.module()(other), frozen(other))
    path = tmp_path / "frozen.pt"
    torch.save(frozen, path)
    torch.save(other, tmp_path / "x.pt")
    torch.save(frozen(other), tmp_path / "y.pt")
    # a fresh process where fxrazor cannot be imported loads and runs it
    code = ("import sys, torch; sys.modules['fxrazor'] = None; d = sys.argv[1]; "
            "m = torch.load(d + '/frozen.pt', weights_only=False); "
            "x = torch.load(d + '/x.pt'); y = torch.load(d + '/y.pt'); "
            "assert torch.allclose(m(x), y, atol=1e-6), 'different output'")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_auto_falls_back_to_export_where_fx_fails_at_the_top() -> None:
    torch.manual_seed(0)
    model, x = Unrolled(), torch.randn(3, 4)
    with pytest.raises(TraceFailedError):
        fxrazor.convert(model, x, capture="fx")
    sn = fxrazor.convert(model, x)  # auto
    assert _units(sn) == {"fc1": 16}
    assert check_full_width(model, sn, x).error == 0.0
    sn.set_choices({"fc1": 9})
    assert check_subnet(model, sn, x).frozen_error < 1e-6


def test_a_model_neither_front_end_captures_names_both_failures() -> None:
    class Looped(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            while x.sum() > 0:
                x = x - 1
            return x

    with pytest.raises(CaptureFailedError) as info:
        fxrazor.convert(Looped(), torch.ones(3))
    text = str(info.value)
    assert "torch.fx:" in text and "torch.export:" in text and "leaf_modules" in text


def test_export_refuses_to_inline_a_custom_autograd_function() -> None:
    class Triple(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):  # type: ignore[no-untyped-def]
            return x.clone()

        @staticmethod
        def backward(ctx, g):  # type: ignore[no-untyped-def]
            return 3 * g

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Triple.apply(self.fc(x))

    with pytest.raises(TraceFailedError, match="Triple.*capture='fx'"):
        fxrazor.convert(Net(), torch.randn(2, 4), capture="export")
    assert fxrazor.convert(Net(), torch.randn(2, 4)).analysis.unknown_ops  # fx keeps it


def test_unknown_capture_mode_is_refused() -> None:
    with pytest.raises(InvalidChoiceError, match="capture"):
        fxrazor.convert(nn.Linear(2, 2), torch.randn(1, 2), capture="dynamo")


def test_hand_written_rmsnorm_lets_channels_prune_but_other_means_pin() -> None:
    class Means(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)
            self.c = nn.Linear(4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)  # a norm statistic
            g = self.c(x)
            return self.b(h) + g.mean(-1, keepdim=True)  # a plain reduction over channels

    torch.manual_seed(0)
    model, x = Means(), torch.randn(2, 4)
    sn = fxrazor.convert(model, x)
    assert _units(sn) == {"a": 8}
    sn.set_choices({"a": 5})
    check = check_subnet(model, sn, x)
    assert check.frozen_error < 1e-6 and check.oracle_error is None  # statistics change
    # by hand: the frozen model normalises over the 5 kept channels
    a = model.a
    h = torch.nn.functional.linear(x, a.weight[:5], a.bias[:5])
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    expected = torch.nn.functional.linear(h, model.b.weight[:, :5], model.b.bias) \
        + model.c(x).mean(-1, keepdim=True)
    torch.testing.assert_close(check.frozen_output, expected)


class Resample(nn.Module):
    """Every interpolation mode of a 4D input, each an aten.upsample_*.vec call in export."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        F = torch.nn.functional
        y = self.conv(x)
        y = (F.interpolate(y, size=(12, 12), mode="bicubic", antialias=True)
             + F.interpolate(y, scale_factor=1.5, mode="bilinear", align_corners=True)
             + F.interpolate(y, size=(12, 12), mode="nearest")
             + F.interpolate(y, size=(12, 12), mode="bicubic"))
        return self.head(y)


def test_exported_interpolations_are_f_interpolate_and_script() -> None:
    torch.manual_seed(0)
    model, x = Resample().eval(), torch.randn(2, 3, 8, 8)
    sn = fxrazor.convert(model, x, capture="export")
    calls = [n.target for n in sn.graph_module.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.nn.functional.interpolate) == 4
    assert not any("upsample" in str(t) for t in calls)
    assert [u.name for u in sn.units] == ["conv"]  # interpolation follows the channels
    assert check_full_width(model, sn, x).error < 1e-6
    sn.set_choices({"conv": 3})
    check = check_subnet(model, sn, x)
    assert check.frozen_error < 1e-5 and check.oracle_error < 1e-5
    frozen = check.frozen
    torch.testing.assert_close(torch.jit.script(frozen)(x), frozen(x))


class Untraceable(nn.Module):
    """A submodule fx cannot trace (a Python int of a traced size)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[1])
        return self.fc(x) * n


class WithUntraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(4, 8), Untraceable(), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.mid(self.inp(x))))


def test_auto_keeps_fx_where_it_traces_and_export_sees_through_opaque_submodules() -> None:
    torch.manual_seed(0)
    model, x = WithUntraceable().eval(), torch.randn(3, 4)
    auto = fxrazor.convert(model, x)  # fx traces it, keeping 'mid' opaque (pinned)
    assert auto.units == [] and "mid" in auto.analysis.opaque
    sn = fxrazor.convert(model, x, capture="export")
    assert sorted(u.name for u in sn.units) == ["inp", "mid.fc"]
    assert sn.analysis.opaque == {}
    assert check_full_width(model, sn, x).error < 1e-6
    sn.set_choices({"inp": 5, "mid.fc": 3})
    check = check_subnet(model, sn, x)
    assert check.frozen_error < 1e-5 and check.oracle_error < 1e-5
