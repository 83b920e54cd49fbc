"""Every subcommand (inspect, export-config, prune --config, export) on each model source:
a user factory, torchvision's resnet50 and fcn_resnet50, a timm model and a Hugging Face
config. The config written by export-config must give prune the same widths; the
exported files must load back and compute what the model rebuilt from the state_dict
export computes (fxrazor.load_subnet_state, an independent path to the same subnet).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import cli_output
import pytest
import torch
import yaml

import fxrazor
from fxrazor.cli import main
from fxrazor.cli.models import load_model
from fxrazor.cli.reload import tensor_leaves
from fxrazor.cli.report import call

SMALL = ["--input-shape", "1,3,64,64"]
_SLOW = pytest.mark.slow


def _models(slow: tuple[str, ...]) -> list[Any]:
    """The model sources, those named in ``slow`` (and fcn, timm, hf) in the slow run."""
    models = [("factory", "cli_factory:build", []), ("resnet50", "torchvision:resnet50", SMALL),
              ("fcn_resnet50", "torchvision:fcn_resnet50", SMALL),
              ("timm-resnet18", "timm:resnet18", SMALL), ("hf-llama", "hf", [])]
    always_slow = ("fcn_resnet50", "timm-resnet18", "hf-llama")
    return [pytest.param((spec, extra), id=name,
                         marks=[_SLOW] if name in slow + always_slow else [])
            for name, spec, extra in models]


MODELS = _models(())
EXPORT_MODELS = _models(("resnet50",))  # export + reload + rebuild: ~30 s on resnet50
_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32,
          "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
          "num_hidden_layers": 2, "vocab_size": 100}


def _run(*argv: str) -> tuple[int, str]:
    """main() in this process, its stdout kept (stderr's progress goes where it goes)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--quiet"])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def configured(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A model and the subnet config export-config wrote for it at half the FLOPs."""
    spec, extra = request.param
    folder = tmp_path_factory.mktemp(spec.replace(":", "_"))
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    if spec == "hf":
        pytest.importorskip("transformers")
        (folder / "config.json").write_text(json.dumps(_LLAMA))
        spec = f"hf:{folder}"
    config = folder / "subnet.yaml"
    code, out = _run("export-config", spec, *extra, "--target-flops", "0.5",
                     "--out", str(config))
    assert code == 0, out
    return {"spec": spec, "extra": extra, "config": config, "out": out, "folder": folder}


@pytest.mark.parametrize("configured", MODELS, indirect=True)
def test_export_config_writes_every_unit_under_the_flops_target(configured) -> None:
    written = yaml.safe_load(configured["config"].read_text())
    table = cli_output.widths(configured["out"])
    assert set(written) == set(table) and table
    assert all(entry["init_args"]["choice_mode"] == "ratio" for entry in written.values())
    _, per_sample, _ = cli_output.flops(configured["out"])
    assert 0.3 * per_sample[0] < per_sample[1] <= 0.5 * per_sample[0] * 1.001
    assert "at most 0.5 of the original FLOPs" in configured["out"]


@pytest.mark.parametrize("configured", MODELS, indirect=True)
def test_inspect_lists_units_pins_and_sizes(configured, capsys) -> None:
    code = main(["inspect", configured["spec"], *configured["extra"], "-q"])
    out = capsys.readouterr().out
    assert code == 0
    table = cli_output.widths(out)
    assert table and all(width == channels for channels, width in table.values())
    assert "Pinned channels" in out and "model output" in out
    label, values, macs = cli_output.flops(out)
    assert "input " in label and values[0] > 0
    assert macs[0] == pytest.approx(values[0] / 2, rel=1e-3)
    assert cli_output.params(out)[0] > 0


@pytest.mark.parametrize("configured", MODELS, indirect=True)
def test_prune_with_the_config_keeps_its_widths_and_equals_the_supernet(configured,
                                                                        capsys) -> None:
    code = main(["prune", configured["spec"], *configured["extra"], "--config",
                 str(configured["config"]), "--repeats", "1", "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert cli_output.widths(out) == cli_output.widths(configured["out"])
    before, after = cli_output.params(out)
    assert after < before
    line, error, scale = cli_output.exactness(out)
    assert line.startswith("frozen == supernet") and scale > 0 and error <= 1e-4 * max(1, scale)
    assert cli_output.speed_up(out) > 0
    assert "criterion: l1" in out


def _reference(configured: dict[str, Any], path: Path) -> tuple[Any, Any]:
    """The frozen subnet rebuilt from a state_dict export, and the model as the command
    line builds it (same seed: same weights and inputs)."""
    shape = tuple(int(d) for d in configured["extra"][1].split(",")) \
        if configured["extra"] else None
    loaded = load_model(configured["spec"], input_shape=shape)
    options: dict[str, Any] = {"unit": "l1", "unit_args": {"choice_mode": "ratio"},
                               **loaded.convert_options}
    return fxrazor.load_subnet_state(loaded.model, loaded.inputs, path, **options), loaded


def _close(got: Any, want: Any) -> None:
    pairs = list(zip(tensor_leaves(got), tensor_leaves(want), strict=True))
    assert pairs
    for g, w in pairs:
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("configured", EXPORT_MODELS, indirect=True)
def test_export_writes_files_that_load_back(configured) -> None:
    folder, config = configured["folder"], str(configured["config"])
    state = folder / "subnet.state"
    program = folder / "subnet.pt2"
    for path, fmt in ((state, "state_dict"), (program, "pt2")):
        code, out = _run("export", configured["spec"], *configured["extra"], "--config", config,
                         "--format", fmt, "--out", str(path))
        assert code == 0 and path.is_file()
        assert "reloaded file == frozen" in out
    frozen, loaded = _reference(configured, state)
    assert _count(frozen) < _count(loaded.model)
    _close(call(torch.export.load(str(program)).module(), loaded.inputs),
           call(frozen, loaded.inputs))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("model", [
    pytest.param("cli_factory:build", id="factory"),
    pytest.param("torchvision:resnet50", id="resnet50", marks=pytest.mark.slow),
])
def test_export_onnx_runs_in_onnxruntime_like_the_frozen_model(model, tmp_path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    extra = [] if model.startswith("cli_factory") else SMALL
    path, state = tmp_path / "m.onnx", tmp_path / "m.state"
    for out_path in (path, state):
        code, _ = _run("export", model, *extra, "--ratio", "0.5", "--out", str(out_path),
                       "--format", "onnx" if out_path == path else "state_dict")
        assert code == 0
    frozen, loaded = _reference({"spec": model, "extra": extra}, state)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: loaded.inputs.numpy()})
    _close([torch.from_numpy(g) for g in got], call(frozen, loaded.inputs))
