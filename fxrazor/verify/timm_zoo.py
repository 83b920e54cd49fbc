"""Coverage over timm: one model per family, converted, pruned, frozen and checked.

``python -m fxrazor.verify.timm_zoo --out docs/coverage-timm.md`` groups
``timm.list_models()`` by the module that defines each model (``timm.models.<family>``),
picks the smallest model of every family by parameter count (counted on the meta device,
so nothing is allocated), builds it with random weights at the smallest input it takes
(64 px, else with ``img_size=64``, else its own ``input_size``), and runs the same checks
as the torchvision table (:func:`fxrazor.verify.zoo.check_model`): traced, units, pinned
groups and why, params at 0.5, frozen == supernet, zero oracle where it applies,
TorchScript, convert time. Needs timm; tqdm gives a progress bar when installed.

Example:
    >>> spec = TimmSpec("resnet10t", "resnet", (1, 3, 64, 64))
    >>> spec.kind, spec.input_shape[-1]
    ('resnet', 64)
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fxrazor.verify.cli_help import runner_parser
from fxrazor.verify.zoo import ModelSpec, ZooResult, check_model, markdown

__all__ = ["TimmSpec", "KNOWN_CAUSES", "families", "smallest_model", "input_spec", "run_one",
           "failures", "main"]

logger = logging.getLogger(__name__)

SMALL_SIZE = 64


@dataclass(frozen=True)
class TimmSpec(ModelSpec):
    """A timm model (random weights) of one family (``kind``) at one input shape."""

    def build(self) -> nn.Module:
        import timm

        return timm.create_model(self.name, pretrained=False, **self.kwargs).eval()


def families() -> dict[str, list[str]]:
    """timm's model names grouped by the module that registers them."""
    import timm

    return {module: sorted(timm.list_models(module=module)) for module in timm.list_modules()}


def _param_count(name: str) -> int:
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def smallest_model(names: Iterable[str]) -> str | None:
    """The model with the fewest parameters (built on the meta device); None if none builds."""
    best: tuple[int, str] | None = None
    for name in names:
        try:
            count = _param_count(name)
        except Exception as e:  # noqa: BLE001 - a model that cannot build is skipped
            logger.info("cannot count %s: %s", name, e)
            continue
        if best is None or count < best[0]:
            best = (count, name)
    return None if best is None else best[1]


def _runs(name: str, kwargs: dict[str, Any], size: tuple[int, ...]) -> bool:
    import timm

    try:
        model = timm.create_model(name, pretrained=False, **kwargs).eval()
        with torch.no_grad():
            model(torch.randn(1, *size))
    except Exception as e:  # noqa: BLE001 - the next candidate input is tried
        logger.info("%s %s at %s: %s", name, kwargs, size, e)
        return False
    return True


def input_spec(name: str, family: str) -> TimmSpec:
    """The smallest input the model runs at: 64 px, 64 px with ``img_size=64``, or the
    model's own ``input_size``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    own = tuple(cfg.input_size) if cfg is not None and cfg.input_size else (3, 224, 224)
    small = (own[0], SMALL_SIZE, SMALL_SIZE)
    kwargs: dict[str, Any]
    for kwargs, size in (({}, small), ({"img_size": SMALL_SIZE}, small), ({}, own)):
        if _runs(name, kwargs, size):
            return TimmSpec(name, family, (1, *size), kwargs)
    return TimmSpec(name, family, (1, *own))


def _error(e: Exception) -> str:
    """One line: the error's type and message, file paths from the package on (a table
    names no machine's directories)."""
    text = re.sub(r'"[^"]*?(site-packages|dist-packages)/', '"', f"{type(e).__name__}: {e}")
    return " ".join(text.split())[:200]


def _check(spec: TimmSpec) -> tuple[ZooResult, str]:
    """The model's row and a note: a model whose frozen graph does not script still gets
    its other checks (run again without scripting), and the note says why."""
    try:
        return check_model(spec), ""
    except Exception as e:  # noqa: BLE001 - a failing model is a row of the report
        logger.info("model %s failed: %s", spec.name, e)
        first = _error(e)
    try:
        result = check_model(spec, script=False)
    except Exception as e:  # noqa: BLE001 - not a scripting failure: the row's error
        logger.info("model %s failed without scripting too: %s", spec.name, e)
        return ZooResult(spec.name, spec.kind, error=_error(e)), ""
    return result, f"not scriptable: {first}"


def run_one(family: str, names: Sequence[str]) -> list[tuple[ZooResult, str]]:
    """Check the smallest of ``names`` (or each of them, when there is one) with
    :func:`~fxrazor.verify.zoo.check_model`; a failure is the row's error or note."""
    torch.set_num_threads(1)  # the workers share the machine
    picked = list(names) if len(names) == 1 else [smallest_model(names)]
    results = []
    for name in picked:
        if name is None:
            results.append((ZooResult("-", family, error="no model of the family builds"), ""))
            continue
        try:
            spec = input_spec(name, family)
        except Exception as e:  # noqa: BLE001 - a failing model is a row of the report
            results.append((ZooResult(name, family, error=_error(e)), ""))
            continue
        results.append(_check(spec))
    return results


def _tasks(only: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(family, names) per run: all of a family's names (its smallest is checked), or one
    task per named model."""
    tasks = []
    for family, names in families().items():
        if only:
            tasks += [(family, [n]) for n in names if n in only]
        elif names:
            tasks.append((family, names))
    return tasks


def _run_all(tasks: list[tuple[str, list[str]]], jobs: int
             ) -> list[tuple[ZooResult, str]]:
    """Each family in a fresh worker process (a crash or a leak stays with its model)."""
    results: dict[int, list[tuple[ZooResult, str]]] = {}
    context = multiprocessing.get_context("spawn")
    # one family per worker where Python can say so (3.11+)
    fresh: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, **fresh) as pool:
        futures = {pool.submit(run_one, f, n): i for i, (f, n) in enumerate(tasks)}
        done = concurrent.futures.as_completed(futures)
        for future in _progress(done, len(tasks)):
            i = futures[future]
            try:
                results[i] = future.result()
            except concurrent.futures.process.BrokenProcessPool as e:
                family, names = tasks[i]
                results[i] = [(ZooResult(names[0] if len(names) == 1 else "-", family,
                                         error=f"worker died: {e}"), "")]
    return [r for i in range(len(tasks)) for r in results[i]]


def _progress(items: Iterable[Any], total: int) -> Iterable[Any]:
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, total=total, unit="model")


# Failure messages of general causes, and what they are (the table lists each model's).
KNOWN_CAUSES = (
    (r"Unknown type name|cannot statically infer",
     "TorchScript cannot compile the model's own Python code that the frozen graph calls"),
    (r"control flow",
     "torch.fx cannot trace control flow on traced values in the model's own forward"),
)


def _passed(r: ZooResult) -> bool:
    from fxrazor.verify.equivalence import within

    return (not r.error and r.units >= 1 and within(r.frozen_error, r.output_scale)
            and within(r.full_width_error, r.output_scale) and r.scripted
            and (r.oracle_error is None or within(r.oracle_error, r.output_scale)))


def _what_failed(r: ZooResult, note: str) -> str:
    from fxrazor.verify.equivalence import within

    if r.error:
        return r.error
    failed = [what for what, bad in (
        ("no prunable unit", r.units < 1),
        ("full width differs from the model", not within(r.full_width_error, r.output_scale)),
        ("frozen differs from the supernet", not within(r.frozen_error, r.output_scale)),
        ("zero oracle differs", r.oracle_error is not None
         and not within(r.oracle_error, r.output_scale)),
        (note or "the scripted model differs", not r.scripted)) if bad]
    if r.units < 1 and r.reasons:
        failed[0] += f" (pinned: {'; '.join(r.reasons[:2])})"
    return "; ".join(failed)


def _cause(text: str) -> str:
    import re

    return next((why for pattern, why in KNOWN_CAUSES if re.search(pattern, text)), "")


def failures(rows: Sequence[tuple[ZooResult, str]]) -> str:
    """The models that do not pass every check, with what failed and its known cause."""
    lines = []
    for r, note in rows:
        if not _passed(r):
            what = _what_failed(r, note)
            cause = _cause(what)
            lines.append(f"- **{r.name}** ({r.kind}): {what}" + (f". *{cause}*" if cause else ""))
    return "\n".join(lines) if lines else "None."


def _header(results: Sequence[ZooResult]) -> str:
    import timm

    good = sum(_passed(r) for r in results)
    return (f"Generated by `python -m fxrazor.verify.timm_zoo` with torch {torch.__version__} "
            f"and timm {timm.__version__}: the smallest model (by parameter count) of every "
            "module of `timm.models`, with random weights (BatchNorm statistics perturbed), "
            f"at {SMALL_SIZE} px where it runs (else with `img_size={SMALL_SIZE}`, else at "
            "its own input size), every unit at half its channels, then frozen. The checks "
            "and tolerances are those of docs/coverage.md (full width == model is checked "
            "too, not shown); the zero oracle is *n/a* where a norm normalises over pruned "
            "positions.\n\n"
            f"**{good}/{len(results)} families' models pass every check with at least one "
            f"unit ({100 * good / max(1, len(results)):.0f}%).** The others are listed "
            "below the table with what failed.\n\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the timm families and write the markdown table."""
    parser = runner_parser("python -m fxrazor.verify.timm_zoo", __doc__)
    parser.add_argument("--models", nargs="*", help="timm model names (default: the "
                                                    "smallest of every family)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--out", default=None, help="markdown file to write (default: print)")
    args = parser.parse_args(argv)
    rows = _run_all(_tasks(args.models or ()), args.jobs)
    results = [r for r, _ in rows]
    text = ("# Coverage of timm\n\n" + _header(results) + markdown(results)
            + "\n\n## Models that do not pass every check\n\n" + failures(rows) + "\n")
    ran = f"{sum(not r.error for r in results)}/{len(results)} models ran"
    if args.out is None:
        print(text + ran)
        return 0
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}: {ran}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
