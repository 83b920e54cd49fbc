"""The command line prunes a torchvision model and reports a correct, smaller subnet: the
first form (``prune --model NAME``) still works, the README's Quickstart command runs as
written, and pruning needs no optional package but torchvision."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import cli_output
import pytest
import torch

pytest.importorskip("torchvision")

from fxrazor.cli import main  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"
# every optional package but torchvision (the Quickstart installs the vision extra only)
_NOT_IN_VISION = ("timm", "transformers", "onnx", "onnxscript", "onnxruntime", "tqdm",
                  "sklearn", "safetensors")


def test_the_first_form_still_works(capsys, tmp_path) -> None:
    saved = tmp_path / "frozen.pt"
    code = main(["prune", "--model", "resnet18", "--ratio", "0.5", "--input-size", "64",
                 "--batch", "1", "--repeats", "1", "--save", str(saved), "-q"])
    out = capsys.readouterr().out
    assert code == 0
    assert "layer1.0.conv1" in out and "model output" in out
    line, error, scale = cli_output.exactness(out)
    assert line.startswith("frozen == supernet") and error <= 1e-4 * max(1.0, scale)
    before, after = cli_output.params(out)
    assert after < before
    assert "saved torchscript" in out and isinstance(torch.jit.load(str(saved)),
                                                     torch.jit.ScriptModule)


def test_pruning_needs_only_the_vision_extra(capsys, monkeypatch, tmp_path) -> None:
    for name in _NOT_IN_VISION:
        monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    code = main(["prune", "torchvision:resnet18", "--ratio", "0.5", "--input-shape",
                 "1,3,32,32", "--repeats", "1", "--out", str(tmp_path / "m.pt2")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "reloaded file == frozen" in captured.out
    assert "fxrazor: convert done in" in captured.err  # progress without tqdm


def _quickstart_command() -> list[str]:
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first = re.findall(r"```bash\n(.*?)\n```", quickstart, re.S)[0]
    command = shlex.split(first.split("&&")[-1])
    assert command[0] == "fxrazor"
    return command[1:]


@pytest.mark.slow
def test_the_readme_quickstart_command_runs(capsys) -> None:
    argv = _quickstart_command()
    assert argv[:2] == ["prune", "torchvision:resnet50"]
    code = main([*argv, "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    label, (before, after), _ = cli_output.flops(out)
    assert label == "batch 1, input 3x224x224"
    assert before == pytest.approx(8.18, rel=0.01) and after < before / 2
    assert cli_output.speed_up(out) > 0


def test_the_readme_quickstart_is_the_new_form() -> None:
    argv = _quickstart_command()
    assert argv[:2] == ["prune", "torchvision:resnet50"] and "--ratio" in argv
