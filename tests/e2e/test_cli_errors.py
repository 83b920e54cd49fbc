"""A user's mistake is one line on stderr and exit status 2, never a traceback; a bug in
the code (here: a factory that raises) keeps its traceback. One test runs the installed
``fxrazor`` script and ``python -m fxrazor`` as a user would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fxrazor.cli import main
from fxrazor.cli.usage import one_line

ROOT = Path(__file__).resolve().parents[2]


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("argv", "says"), [
    (["prune", "torchvision:not_a_model"], "unknown torchvision model 'not_a_model'"),
    (["prune", "not_a_model"], "unknown torchvision model"),
    (["inspect", "torchvision:resnt50"], "did you mean resnet50"),
    (["prune", "torchvision:resnet18", "--ratio", "1.5"], "--ratio: 1.5 is not in (0, 1]"),
    (["prune", "torchvision:resnet18", "--ratio", "half"], "'half' is not a number"),
    (["prune", "torchvision:resnet18", "--target-flops", "0"], "0 is not in (0, 1]"),
    (["inspect", "nosuchsource:resnet18"], "'nosuchsource' is no source"),
    (["inspect", "torchvision:"], "names no model"),
    (["prune", "torchvision:resnet18", "--config", "missing.yaml"], "no such subnet config"),
    (["export", "torchvision:resnet18", "--ratio", "0.5", "--out", "m.bin", "--format",
      "tflite"], "invalid choice: 'tflite'"),
    (["export", "torchvision:resnet18", "--ratio", "0.5", "--out", "m.bin"],
     "cannot tell the format"),
    (["export", "torchvision:resnet18", "--out", "m.pt2"], "one of the arguments"),
    (["export-config", "torchvision:resnet18", "--ratio", "0.5", "--out", "c.txt"],
     ".yaml, .yml or .json"),
    (["prune", "torchvision:resnet18", "--criterion", "activation"], "needs calibration data"),
    (["prune", "torchvision:resnet18", "--criterion", "magic"], "invalid choice: 'magic'"),
    (["prune", "torchvision:resnet18", "--input-shape", "1,3,x"], "not a shape"),
    (["prune", "resnet18", "--model", "resnet18"], "MODEL or --model"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "required: COMMAND"),
    (["inspect"], "required: MODEL"),
    (["inspect", "cli_factory:model_only"], "pass --input-shape"),
    (["inspect", "cli_factory:not_a_model"], "returns a model or a (model, example_inputs)"),
    (["inspect", "cli_factory:nothing_here"], "has no callable 'nothing_here'"),
    (["inspect", "hf:/no/such/dir"], "no such config file"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, argv, says) -> None:
    assert says in _error_line(capsys, argv)


@pytest.mark.parametrize(("argv", "says"), [
    # the units of a one-shot supernet take their candidates only
    (["prune", "cli_factory:build", "--unit", "one_shot", "--ratio", "0.3"],
     "0.3 is not a candidate"),
    (["prune", "cli_factory:build", "--target-flops", "0.001"], "below the smallest subnet"),
    (["prune", "cli_factory:build", "--unit", "sequential", "--criterion", "l2"],
     "use --unit l1"),
])
def test_library_errors_after_the_conversion_are_one_line(capsys, argv, says) -> None:
    assert says in _error_line(capsys, [*argv, "--quiet"])


@pytest.mark.parametrize(("text", "says"), [
    ("a: [1, 2", "is not valid .yaml"),
    ("- just\n- a list\n", "it must hold a dict"),
    ("no_such_unit: 0.5\n", "unknown units ['no_such_unit']"),
])
def test_a_bad_config_file_is_one_line(capsys, tmp_path, text, says) -> None:
    config = tmp_path / "subnet.yaml"
    config.write_text(text)
    line = _error_line(capsys, ["prune", "cli_factory:build", "--config", str(config), "-q"])
    assert says in line


@pytest.mark.parametrize(("blocked", "argv", "extra"), [
    ("torchvision", ["inspect", "torchvision:resnet18"], "vision"),
    ("timm", ["inspect", "timm:resnet18"], "timm"),
    ("transformers", ["inspect", "hf:config.json"], "hf"),
    ("onnxscript", ["export", "cli_factory:build", "--ratio", "0.5", "--out", "m.onnx"], "onnx"),
])
def test_a_missing_extra_names_it(capsys, monkeypatch, blocked, argv, extra) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # `import blocked` raises ImportError
    line = _error_line(capsys, argv)
    assert f"pip install 'fxrazor[{extra}]'" in line and blocked in line


def test_a_bug_keeps_its_traceback(capsys) -> None:
    with pytest.raises(RuntimeError, match="a bug in the user's factory"):
        main(["inspect", "cli_factory:broken", "-q"])


def test_one_line_folds_torch_noise_away() -> None:
    message = ("shapes do not match\nWhile executing %add : [num_users=1] = call_function\n"
               "Original traceback:\nNone\nUse tlparse to see full graph. (https://x)\n")
    assert one_line(message) == ("shapes do not match While executing %add : [num_users=1] "
                                 "= call_function")
    assert len(one_line("x" * 5000)) <= 600


def _commands() -> list[object]:
    """``python -m fxrazor`` and the installed script (where pip put one), each with one
    mistake (every run imports torch: seconds on a busy machine)."""
    commands = [pytest.param([sys.executable, "-m", "fxrazor", "prune", "torchvision:nope"],
                             id="python-m-fxrazor")]
    script = shutil.which("fxrazor", path=str(Path(sys.executable).parent))
    if script is not None:
        commands.append(pytest.param([script, "prune", "resnet18", "--ratio", "1.5"],
                                     id="fxrazor-script"))
    return commands


@pytest.mark.parametrize("command", _commands())
def test_the_installed_command_prints_one_line_and_exits_2(command) -> None:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("fxrazor")
