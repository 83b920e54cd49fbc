"""fxrazor.save: every format reloads in a fresh process without fxrazor (batch 1 and 3)
and gives the frozen model's outputs; the state_dict form rebuilds; failures are clear
and leave no file."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import ExportFailedError, InvalidArgumentError, SubnetConfigError

HAS_ORT = all(importlib.util.find_spec(p) for p in ("onnx", "onnxscript", "onnxruntime"))
FORMATS = ["pt2", "torchscript"] + (["onnx"] if HAS_ORT else [])
SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".ts"}

# Runs in a fresh interpreter: fxrazor cannot be imported there (sys.modules blocks it).
RELOAD = textwrap.dedent("""
    import sys
    sys.modules["fxrazor"] = None
    import torch
    torch.set_num_threads(1)
    jobs, inputs, out = sys.argv[1], sys.argv[2], sys.argv[3]
    xs = torch.load(inputs)
    results = {}
    for line in open(jobs).read().split():
        fmt, path = line.split("=", 1)
        if fmt == "pt2":
            run = torch.export.load(path).module()
        elif fmt == "torchscript":
            run = torch.jit.load(path)
        else:
            import onnxruntime as ort
            opts = ort.SessionOptions(); opts.intra_op_num_threads = 1
            session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            run = lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])
        with torch.no_grad():
            results[fmt] = [run(x) for x in xs]
    assert not any(m == "fxrazor" or m.startswith("fxrazor.") for m in sys.modules if
                   sys.modules[m] is not None)
    torch.save(results, out)
""")


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 12, 3, stride=2), nn.BatchNorm2d(12), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=10)


MODELS = {"small_cnn": (small_cnn, 12), "resnet18": (resnet18, 32)}


def _perturb(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _frozen(name: str) -> tuple[nn.Module, torch.Tensor, torch.fx.GraphModule]:
    make, size = MODELS[name]
    torch.manual_seed(0)
    model = _perturb(make())
    x = torch.randn(1, 3, size, size)
    sn = fxrazor.convert(model, x)
    sn.set_choices(sn.sample_choices())
    return model, x, fxrazor.freeze(sn).eval()


@pytest.fixture(scope="module", params=list(MODELS))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every format of one model saved, reloaded in one fresh process at batch 1 and 3."""
    torch.set_num_threads(1)
    model, x, frozen = _frozen(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    paths = {fmt: fxrazor.save(frozen, folder / f"net{SUFFIX[fmt]}", fmt, example_inputs=x)
             for fmt in FORMATS}
    xs = [torch.randn(b, *x.shape[1:]) for b in (1, 3)]
    torch.save(xs, folder / "inputs.pt")
    (folder / "jobs.txt").write_text("\n".join(f"{f}={p}" for f, p in paths.items()))
    (folder / "reload.py").write_text(RELOAD)
    done = subprocess.run([sys.executable, str(folder / "reload.py"), str(folder / "jobs.txt"),
                           str(folder / "inputs.pt"), str(folder / "out.pt")],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with torch.no_grad():
        expected = [frozen(b) for b in xs]
    return {"model": model, "x": x, "frozen": frozen, "folder": folder, "xs": xs,
            "expected": expected, "reloaded": torch.load(folder / "out.pt")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_reloaded_without_fxrazor_equals_frozen(saved: dict, fmt: str) -> None:
    got = saved["reloaded"][fmt]
    assert [g.shape[0] for g in got] == [1, 3]  # one file, two batch sizes
    tol = {"rtol": 1e-4, "atol": 1e-4} if fmt == "onnx" else {"rtol": 1e-5, "atol": 1e-6}
    for g, e in zip(got, saved["expected"], strict=True):
        torch.testing.assert_close(g, e, **tol)


def test_state_dict_rebuilds_the_frozen_subnet(saved: dict) -> None:
    path = fxrazor.save(saved["frozen"], saved["folder"] / "net.pt", format="state_dict")
    rebuilt = fxrazor.load_subnet_state(saved["model"], saved["x"], path).eval()
    assert rebuilt.state_dict().keys() == saved["frozen"].state_dict().keys()
    with torch.no_grad():
        for x, e in zip(saved["xs"], saved["expected"], strict=True):
            assert torch.equal(rebuilt(x), e)


def test_torch_compile_equals_eager(saved: dict) -> None:
    # aot_eager traces forward and backward graphs too: kept to the small model for time
    backend = "aot_eager" if saved["model"].__class__ is nn.Sequential else "eager"
    compiled = torch.compile(saved["frozen"], backend=backend, dynamic=True)
    with torch.no_grad():
        for x, e in zip(saved["xs"], saved["expected"], strict=True):
            torch.testing.assert_close(compiled(x), e)


def test_save_takes_a_supernet_and_keyword_inputs(tmp_path: Path) -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x).relu() * scale)

    inputs = {"x": torch.randn(1, 4), "scale": torch.rand(1, 1)}
    sn = fxrazor.convert(TwoInputs(), inputs)
    sn.set_choices({"a": 5})
    path = fxrazor.save(sn, tmp_path / "net.pt2", example_inputs=inputs)  # format by suffix
    program = torch.export.load(path).module()
    batch = {"x": torch.randn(3, 4), "scale": torch.rand(3, 1)}
    torch.testing.assert_close(program(**batch), fxrazor.freeze(sn)(**batch))


def test_training_flags_are_put_back(tmp_path: Path) -> None:
    _, x, frozen = _frozen("small_cnn")
    frozen.train()
    frozen.get_submodule("1").eval()
    fxrazor.save(frozen, tmp_path / "net.pt2", example_inputs=x)
    assert frozen.training and not frozen.get_submodule("1").training


class DataDependent(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:  # varargs: TorchScript refuses
        return xs[0] * 2 if xs[0].sum() > 0 else xs[0]  # a branch on data: export refuses


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_failing_exporter_names_itself_and_leaves_nothing(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"net{SUFFIX[fmt]}"
    with pytest.raises(ExportFailedError, match=rf"save\(format='{fmt}'\) failed: .+ raised"):
        fxrazor.save(DataDependent(), path, fmt, example_inputs=torch.randn(2, 3))
    assert list(tmp_path.iterdir()) == []


def test_a_fixed_batch_asks_for_dynamic_batch_false(tmp_path: Path) -> None:
    class FixedBatch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, -1).sum(1)

    x = torch.randn(2, 3)
    with pytest.raises(ExportFailedError, match="dynamic_batch=False"):
        fxrazor.save(FixedBatch(), tmp_path / "net.pt2", example_inputs=x)
    assert list(tmp_path.iterdir()) == []
    path = fxrazor.save(FixedBatch(), tmp_path / "net.pt2", example_inputs=x, dynamic_batch=False)
    torch.testing.assert_close(torch.export.load(path).module()(x), x.sum(1))


def test_bad_arguments_are_refused_before_writing(tmp_path: Path) -> None:
    net = nn.Linear(3, 2)
    with pytest.raises(InvalidArgumentError, match="format must be one of"):
        fxrazor.save(net, tmp_path / "net.bin", "tflite", example_inputs=torch.randn(1, 3))
    with pytest.raises(InvalidArgumentError, match="from its suffix"):
        fxrazor.save(net, tmp_path / "net.bin", example_inputs=torch.randn(1, 3))
    with pytest.raises(InvalidArgumentError, match="needs example_inputs"):
        fxrazor.save(net, tmp_path / "net.pt2")
    with pytest.raises(InvalidArgumentError, match="no subnet config"):
        fxrazor.save(net, tmp_path / "net.pt", "state_dict")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_packages_name_the_extra(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ExportFailedError, match=r"fxrazor\[onnx\]"):
        fxrazor.save(nn.Linear(3, 2), tmp_path / "net.onnx", example_inputs=torch.randn(1, 3))
    assert list(tmp_path.iterdir()) == []


def test_state_dict_of_another_model_is_refused(tmp_path: Path) -> None:
    _, x, frozen = _frozen("small_cnn")
    path = fxrazor.save(frozen, tmp_path / "net.pt", format="state_dict")
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(SubnetConfigError):
        fxrazor.load_subnet_state(other, x, path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SubnetConfigError, match="cannot read"):
        fxrazor.load_subnet_state(other, x, tmp_path / "junk.pt")
