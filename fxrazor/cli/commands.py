"""The four subcommands: ``inspect``, ``prune``, ``export`` and ``export-config``.

Each checks what it can before the model is built (criterion, config file, output format,
optional packages), so that a mistake costs no conversion; prints its report on stdout
and progress on stderr; returns the exit status.

Example:
    >>> from fxrazor.cli.parser import parse_args
    >>> output_format(parse_args(["export", "m:f", "--ratio", "0.5", "--out", "a.pt2"]))
    'pt2'
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from torch import nn

from fxrazor.api import convert, freeze
from fxrazor.cli.choose import (
    CRITERIA,
    apply_config,
    apply_flops_target,
    apply_ratio,
    check_criterion,
    choice_mode,
    rank_units,
    read_config,
)
from fxrazor.cli.models import LoadedModel, load_model
from fxrazor.cli.reload import reload_line
from fxrazor.cli.report import (
    Resources,
    Steps,
    check_exact,
    median_times,
    resources,
    size_line,
)
from fxrazor.cli.usage import UsageError, missing_extra
from fxrazor.errors import ExportFailedError
from fxrazor.export import save
from fxrazor.structures.subnet import export_fix_subnet, save_fix_subnet
from fxrazor.summary import summary
from fxrazor.supernet import Supernet

__all__ = ["COMMANDS", "inspect", "prune", "export", "export_config", "output_format"]

_SUFFIX_FORMATS = {".pt2": "pt2", ".onnx": "onnx"}
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def output_format(args: argparse.Namespace) -> str | None:
    """The format ``--out`` is written in (None without ``--out``); its packages checked."""
    if args.out is None:
        return None
    fmt = args.format or _SUFFIX_FORMATS.get(Path(args.out).suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of {args.out!r} from its suffix; pass "
                         f"--format pt2, onnx, torchscript or state_dict")
    if fmt == "onnx":
        for package in ("onnx", "onnxscript"):
            if importlib.util.find_spec(package) is None:
                raise missing_extra("--format onnx", package, "onnx")
    return fmt


def _build(args: argparse.Namespace, steps: Steps,
           mode: str = "ratio") -> tuple[LoadedModel, Supernet]:
    with steps.step("build", args.model):
        loaded = load_model(args.model, input_shape=args.input_shape, batch=args.batch,
                            seq_len=args.seq_len, seed=args.seed)
    # kept on the loaded model: a state_dict file is rebuilt with the same options
    loaded.convert_options = {"unit": args.unit, "unit_args": {"choice_mode": mode},
                              **loaded.convert_options}
    with steps.step("convert"):
        sn = convert(loaded.model, loaded.inputs, **loaded.convert_options)
    return loaded, sn


def _header(loaded: LoadedModel, sn: Supernet) -> str:
    return (f"model: {loaded.spec} ({type(loaded.model).__name__}), example input batch "
            f"{loaded.batch} x {loaded.input_label}, {len(sn.units)} prunable units")


def _early_checks(args: argparse.Namespace) -> dict[str, Any] | None:
    """Check the criterion; read the config (None without ``--config``)."""
    if args.criterion is not None:
        check_criterion(args.criterion)
    return read_config(args.config) if getattr(args, "config", None) else None


def _choose(args: argparse.Namespace, sn: Supernet, cfg: dict[str, Any] | None,
            steps: Steps) -> list[str]:
    """Set the subnet the arguments ask for; the report's lines on how it was chosen."""
    with steps.step("prune"):
        if args.target_flops is not None:
            name = args.criterion or "l1"
            apply_flops_target(sn, args.target_flops, args.criterion, steps.quiet)
            return [f"subnet: at most {args.target_flops:g} of the original FLOPs "
                    f"(one global threshold on normalised scores)",
                    f"criterion: {name} ({CRITERIA[name]})"]
        ranking = rank_units(sn, args.criterion)
        if cfg is not None:
            apply_config(sn, cfg, args.config)
            return [f"subnet: the config {args.config}", f"criterion: {ranking}"]
        apply_ratio(sn, args.ratio)
        return [f"subnet: every unit at ratio {args.ratio:g}", f"criterion: {ranking}"]


def _save(frozen: nn.Module, loaded: LoadedModel, path: str, fmt: str, steps: Steps) -> str:
    """Write ``frozen``; the report's line about it."""
    note = ""
    with steps.step("export", f"{fmt} to {path}"):
        try:
            save(frozen, path, format=fmt, example_inputs=loaded.inputs)
        except ExportFailedError:
            if fmt not in ("pt2", "onnx"):
                raise
            # a model captured by torch.export at batch 1 fixed its batch size in the graph;
            # export at the example's sizes instead (a second failure is reported as it is)
            save(frozen, path, format=fmt, example_inputs=loaded.inputs, dynamic_batch=False)
            note = f"; its batch dim is fixed at {loaded.batch} (it could not stay dynamic)"
    size = Path(path).stat().st_size / 1e6
    line = f"saved {fmt} to {path} ({size:.2f} MB){note}"
    if fmt == "state_dict":
        options = ", ".join(f"{k}={v!r}" for k, v in loaded.convert_options.items())
        line += f"; rebuild with fxrazor.load_subnet_state(model, inputs, {path!r}, {options})"
    with steps.step("reload", path):
        return line + "\n" + reload_line(path, fmt, frozen, loaded.inputs, loaded)


def inspect(args: argparse.Namespace) -> int:
    """Units, pinned channels and why, params and FLOPs per sample; ``--draw`` a picture."""
    steps = Steps(args.quiet)
    loaded, sn = _build(args, steps)
    print(_header(loaded, sn))
    print()
    print(summary(sn, flops=False))
    print()
    print(size_line(resources(sn), batch=loaded.batch, input_label=loaded.input_label))
    if args.draw:
        print(f"drew the units to {_draw(sn, args.draw, loaded.spec)}")
    return 0


def _draw(sn: Supernet, path: str, title: str) -> Path:
    """``fxrazor.draw(sn, path, title=...)``, imported on use (only ``--draw`` needs it)."""
    from fxrazor.drawing import draw

    return draw(sn, path, title=title)


def _pruned(args: argparse.Namespace, steps: Steps
            ) -> tuple[LoadedModel, Supernet, Resources, list[str], nn.Module]:
    """prune's and export's common start: the model converted, its size at full width, the
    subnet chosen as asked (and how, for the report), and frozen."""
    cfg = _early_checks(args)
    loaded, sn = _build(args, steps, choice_mode(cfg) if cfg else "ratio")
    before = resources(sn)
    how = _choose(args, sn, cfg, steps)
    with steps.step("freeze"):
        frozen = freeze(sn)
    return loaded, sn, before, how, frozen


def prune(args: argparse.Namespace) -> int:
    """Prune, freeze, check frozen == supernet, time both, and save if asked."""
    fmt = output_format(args)
    steps = Steps(args.quiet)
    loaded, sn, before, how, frozen = _pruned(args, steps)
    with steps.step("check", "frozen == supernet"):
        exact = check_exact(sn, frozen, loaded.inputs, args.seed)
    times = None
    if args.repeats:
        with steps.step("time", f"{args.repeats} alternating forwards each"):
            times = median_times(loaded.model, frozen, loaded.inputs, args.repeats)
    print(_header(loaded, sn))
    print("\n".join(how))
    print()
    print(summary(sn, flops=False))
    print()
    print(size_line(before, resources(sn, frozen), batch=loaded.batch,
                    input_label=loaded.input_label))
    print(exact.line())
    if times is not None:
        base, pruned = times
        print(f"forward (batch {loaded.batch}, input {loaded.input_label}, median of "
              f"{args.repeats}): original {base * 1e3:.1f} ms, pruned {pruned * 1e3:.1f} ms, "
              f"speed-up {base / pruned:.2f}x")
    print(f"time: {steps.line()}")
    if fmt is not None:
        print(_save(frozen, loaded, args.out, fmt, steps))
    if not exact.passed:
        print("fxrazor: the frozen model does not compute what the supernet computes: a bug "
              "in fxrazor, please report it with this command", file=sys.stderr)
        return 1
    return 0


def export(args: argparse.Namespace) -> int:
    """Prune as asked, freeze, and write the frozen model."""
    fmt = output_format(args)
    assert fmt is not None  # (--out is required)
    steps = Steps(args.quiet)
    loaded, sn, before, how, frozen = _pruned(args, steps)
    print(_header(loaded, sn))
    print("\n".join(how))
    print(size_line(before, resources(sn, frozen), batch=loaded.batch,
                    input_label=loaded.input_label))
    print(_save(frozen, loaded, args.out, fmt, steps))
    return 0


def export_config(args: argparse.Namespace) -> int:
    """Prune as asked and write the subnet config (YAML or JSON) that ``--config`` reads."""
    if Path(args.out).suffix.lower() not in _CONFIG_SUFFIXES:
        raise UsageError(f"a subnet config is written as .yaml, .yml or .json, not "
                         f"{args.out!r}")
    if args.criterion is not None:
        check_criterion(args.criterion)
    steps = Steps(args.quiet)
    loaded, sn = _build(args, steps)
    before = resources(sn)
    how = _choose(args, sn, None, steps)
    cfg, _ = export_fix_subnet(sn, export_subnet_mode="mutator")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_fix_subnet(cfg, args.out)
    print(_header(loaded, sn))
    print("\n".join(how))
    print()
    print(summary(sn, flops=False))
    print()
    print(size_line(before, resources(sn), batch=loaded.batch,
                    input_label=loaded.input_label))
    print(f"wrote the subnet config of {len(cfg)} units to {args.out}; use it with "
          f"fxrazor prune {loaded.spec} --config {args.out}")
    return 0


COMMANDS = {"inspect": inspect, "prune": prune, "export": export,
            "export-config": export_config}
