"""Export coverage over the torchvision zoo: a random subnet of every model as ONNX and .pt2.

``python -m fxrazor.verify.export_zoo --out docs/coverage-export.md`` builds each model of
:func:`fxrazor.verify.zoo.model_specs` (weights=None, BatchNorm statistics perturbed),
freezes a seeded random subnet, saves it with ``fxrazor.save`` as ONNX (the dynamo
exporter, run in ONNX Runtime) and as ``.pt2`` (reloaded with ``torch.export.load``), and
compares both with the frozen model at batch 1 and 2 (the batch dim is dynamic). Each model
runs in its own process under a time limit; a failure is a row with the exporter's reason.
Needs torchvision and ``fxrazor[onnx]``.

Example:
    >>> r = ExportResult("resnet18", onnx_error=0.0, pt2_error=0.0, output_scale=1.0)
    >>> _row(r)[1:3]
    ['yes', 'yes']
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fxrazor.verify.cli_help import runner_parser
from fxrazor.verify.equivalence import within
from fxrazor.verify.zoo import ModelSpec, _perturb_norms, _random_choices, model_specs

__all__ = ["ExportResult", "check_export", "markdown", "main"]

logger = logging.getLogger(__name__)

_TIMED_OUT = "over the time limit"


@dataclass
class ExportResult:
    """What one model's export measured: the largest output differences from the frozen
    model (NaN: not run), or the failure."""

    name: str
    params: int = 0
    onnx_error: float = float("nan")
    pt2_error: float = float("nan")
    output_scale: float = 0.0
    onnx_failure: str = ""
    pt2_failure: str = ""
    error: str = ""  # convert / freeze failed, or the time limit passed
    seconds: float = 0.0


def _leaves(out: Any) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _max_diff(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want, strict=False)):
        return float("inf")
    return max((float((g - w).abs().max()) for g, w in zip(got, want, strict=True)), default=0.0)


def _onnx_outputs(path: Path, xs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [[torch.from_numpy(o) for o in session.run(None, {name: x.numpy()})] for x in xs]


def check_export(spec: ModelSpec, seed: int = 0) -> ExportResult:
    """Freeze a seeded random subnet of one model; export, reload and compare it."""
    import fxrazor
    from fxrazor.errors import ExportFailedError

    result = ExportResult(spec.name)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = spec.build()
    _perturb_norms(model, seed)
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        sn = fxrazor.convert(model, x)
        sn.set_choices(_random_choices(sn))
        frozen = fxrazor.freeze(sn).eval()
        xs = [x, torch.randn(2, *x.shape[1:])]
        want = [_leaves(frozen(b)) for b in xs]
    result.params = sum(p.numel() for p in frozen.parameters())
    result.output_scale = max(float(w.abs().max()) for w in want[0])
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        try:
            path = fxrazor.save(frozen, Path(folder) / "net.onnx", example_inputs=x)
            got = _onnx_outputs(path, xs)
            result.onnx_error = max(_max_diff(g, w) for g, w in zip(got, want, strict=True))
        except ExportFailedError as e:
            result.onnx_failure = str(e)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime refused the file: a row
            result.onnx_failure = f"onnxruntime: {type(e).__name__}: {e}"
        try:
            path = fxrazor.save(frozen, Path(folder) / "net.pt2", example_inputs=x)
            program = torch.export.load(path).module()
            result.pt2_error = max(_max_diff(_leaves(program(b)), w)
                                   for b, w in zip(xs, want, strict=True))
        except ExportFailedError as e:
            result.pt2_failure = str(e)
    result.seconds = time.perf_counter() - start
    return result


def _verdict(error: float, failure: str, scale: float) -> str:
    if failure:
        return "NO: " + failure[:300].replace("|", "/").replace("\n", " ")
    if error != error:  # NaN: not run
        return "-"
    return "yes" if within(error, scale) else f"NO (differs by {error:.2g})"


def _row(r: ExportResult) -> list[Any]:
    if r.error:
        return [r.name, "-", "-", r.error[:300].replace("|", "/"), "-"]
    return [r.name, _verdict(r.onnx_error, r.onnx_failure, r.output_scale),
            _verdict(r.pt2_error, r.pt2_failure, r.output_scale), f"{r.params / 1e6:.2f}M",
            f"{r.seconds:.1f}"]


def markdown(results: Sequence[ExportResult]) -> str:
    """The export coverage table in markdown."""
    from tabulate import tabulate

    headers = ["model", "ONNX (ORT) == frozen", ".pt2 reloaded == frozen", "params", "s"]
    return tabulate([_row(r) for r in results], headers=headers, tablefmt="github")


def _run_isolated(spec: ModelSpec, timeout_s: float) -> ExportResult:
    """:func:`check_export` in a child process (its memory freed after, its time bounded)."""
    command = [sys.executable, "-m", "fxrazor.verify.export_zoo", "--child", spec.name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return ExportResult(spec.name, error=f"{_TIMED_OUT} ({timeout_s:.0f} s)")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])
        return ExportResult(spec.name, error=f"exit {done.returncode}: {tail}"[:300])
    return ExportResult(**json.loads(lines[-1]))


def _child(name: str) -> int:
    torch.set_num_threads(1)
    spec = next(s for s in model_specs() if s.name == name)
    try:
        result = check_export(spec)
    except Exception as e:  # noqa: BLE001 - convert or freeze failed: a row of the report
        result = ExportResult(name, error=f"{type(e).__name__}: {e}"[:300])
    print(json.dumps(asdict(result)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export zoo and write the markdown table."""
    parser = runner_parser("python -m fxrazor.verify.export_zoo", __doc__)
    parser.add_argument("--models", nargs="*", help="model names (default: all)")
    parser.add_argument("--kinds", nargs="*", default=["classification", "segmentation",
                                                       "video"])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per model")
    parser.add_argument("--out", default=None, help="markdown file (default: print it)")
    parser.add_argument("--jsonl", default=None,
                        help="append each model's result here and skip models already in it "
                             "(a long sweep resumes where it was cut off)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child)
    specs = [s for s in model_specs(args.kinds) if not args.models or s.name in args.models]
    done = _load_jsonl(args.jsonl)
    results: list[ExportResult] = []
    for spec in specs:
        if spec.name in done:
            results.append(done[spec.name])
            continue
        results.append(_run_isolated(spec, args.timeout))
        if args.jsonl is not None:
            with open(args.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(results[-1])) + "\n")
        logger.info("%s: %s", spec.name, _row(results[-1])[1:3])
        if args.out is not None:  # rewritten after each model: a cut-short run keeps its rows
            Path(args.out).write_text(_report(results, len(specs)))
    if args.out is None:
        print(_report(results, len(specs)))
    else:
        Path(args.out).write_text(_report(results, len(specs)))
        print(f"wrote {args.out}: {_ok(results)}/{len(results)} models export both ways")
    return 0


def _load_jsonl(path: str | None) -> dict[str, ExportResult]:
    """Results an earlier (cut-off) run appended to ``path``; the last row of a name wins.
    Rows cut off by the time limit are left out, so a rerun (with a longer ``--timeout``,
    or on a quieter machine) tries those models again."""
    if path is None or not Path(path).exists():
        return {}
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    found = {row["name"]: ExportResult(**row) for row in rows}
    return {name: r for name, r in found.items() if not r.error.startswith(_TIMED_OUT)}


def _ok(results: Sequence[ExportResult]) -> int:
    return sum(not r.error and not r.onnx_failure and not r.pt2_failure for r in results)


def _report(results: Sequence[ExportResult], planned: int) -> str:
    partial = "" if len(results) == planned else f" (run so far: {len(results)}/{planned})"
    return (f"# Export coverage of the torchvision zoo\n\nGenerated by `python -m "
            f"fxrazor.verify.export_zoo` with torch {torch.__version__}: a seeded random "
            "subnet of each model, frozen, saved by `fxrazor.save` as ONNX (dynamo exporter, "
            "run in ONNX Runtime) and `.pt2` (reloaded by `torch.export.load`), compared with "
            "the frozen model at batch 1 and 2 (tolerance 1e-4 of the output's scale).\n\n"
            + markdown(results) + f"\n\n{_ok(results)}/{len(results)} models export both "
            f"ways{partial}.\n")

if __name__ == "__main__":
    raise SystemExit(main())
