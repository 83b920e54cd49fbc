"""Coverage over the torchvision zoo: convert, prune, freeze and check every model.

``python -m fxrazor.zoo --out docs/coverage.md`` runs each model (weights=None), prunes every
unit to half width, freezes, and records: traced or not, units, pinned groups and why,
params before/after, frozen == supernet, the zero-invariance oracle (CNNs), TorchScript,
and convert time. Needs torchvision; tqdm gives a progress bar when installed.

Example:
    >>> spec = next(s for s in model_specs() if s.name == "resnet18")
    >>> spec.kind, spec.input_shape
    ('classification', (1, 3, 64, 64))
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fxrazor.supernet import Supernet
from fxrazor.verify.cli_help import runner_parser
from fxrazor.verify.equivalence import check_full_width, check_subnet, within

__all__ = ["ModelSpec", "ZooResult", "model_specs", "check_model", "half_width", "main"]

logger = logging.getLogger(__name__)

_SEGMENTATION = ["fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                 "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
_VIDEO = {"r3d_18": (1, 3, 4, 32, 32), "mc3_18": (1, 3, 4, 32, 32),
          "r2plus1d_18": (1, 3, 4, 32, 32), "s3d": (1, 3, 16, 224, 224),
          "mvit_v1_b": (1, 3, 16, 224, 224), "mvit_v2_s": (1, 3, 16, 224, 224),
          "swin3d_t": (1, 3, 4, 64, 64)}
_LARGE_INPUT = {"inception_v3": 96}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    input_shape: tuple[int, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(self.name, weights=None, **self.kwargs).eval()


@dataclass
class ZooResult:
    """What one model run measured (numbers, not verdicts; tests and tables judge them)."""

    name: str
    kind: str
    error: str = ""
    units: int = 0
    pinned: int = 0
    reasons: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    full_width_error: float = float("nan")
    frozen_error: float = float("nan")
    oracle_error: float | None = None  # None where the oracle does not apply
    output_scale: float = 0.0
    scripted: bool = False
    convert_s: float = 0.0


def model_specs(kinds: Iterable[str] = ("classification", "segmentation", "video")
                ) -> list[ModelSpec]:
    """Every torchvision model of the given kinds with an input that suits it."""
    import torchvision

    specs: list[ModelSpec] = []
    kinds = set(kinds)
    if "classification" in kinds:
        for name in torchvision.models.list_models(module=torchvision.models):
            size = 224 if name.startswith(("vit", "swin", "maxvit")) else _LARGE_INPUT.get(name, 64)
            kwargs = {"aux_logits": False, "init_weights": True} \
                if name in ("googlenet", "inception_v3") else {}
            specs.append(ModelSpec(name, "classification", (1, 3, size, size), kwargs))
    if "segmentation" in kinds:
        specs += [ModelSpec(n, "segmentation", (1, 3, 64, 64), {"weights_backbone": None})
                  for n in _SEGMENTATION]
    if "video" in kinds:
        specs += [ModelSpec(n, "video", shape) for n, shape in _VIDEO.items()]
    return specs


def _main_output(out: Any) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


def half_width(supernet: Supernet) -> dict[str, int]:
    """Every mutable unit at half its channels (at least one)."""
    return {u.name: max(1, u.num_channels // 2) for u in supernet.units}


def _random_choices(supernet: Supernet) -> dict[str, Any]:
    """A random choice per unit, with at least one unit below full width."""
    chosen = supernet.sample_choices()
    if supernet.units and all(chosen[u.name] == u.max_choice for u in supernet.units):
        first = supernet.units[0]
        chosen[first.name] = max(1, first.num_channels // 2)
    return chosen


def _perturb_norms(model: nn.Module, seed: int) -> None:
    """Give BatchNorms non-trivial statistics so that outputs are not near zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None  # tracked together with running_mean
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


def check_model(spec: ModelSpec, seed: int = 0, choices: str = "half",
                script: bool = True) -> ZooResult:
    """Convert, prune (``"half"`` or ``"random"``), freeze and measure one model."""
    import fxrazor

    result = ZooResult(spec.name, spec.kind)
    torch.manual_seed(seed)
    random.seed(seed)
    model = spec.build()
    _perturb_norms(model, seed)
    x = torch.randn(spec.input_shape)
    with torch.no_grad():
        start = time.perf_counter()
        sn = fxrazor.convert(model, x)
        result.convert_s = time.perf_counter() - start
        result.units, result.pinned = len(sn.units), len(sn.analysis.pinned)
        result.reasons = sorted({r for g in sn.analysis.pinned for r in g.reasons})
        result.opaque = sorted(sn.analysis.opaque)
        result.full_width_error = check_full_width(model, sn, x).error
        sn.set_choices(half_width(sn) if choices == "half" else _random_choices(sn))
        check = check_subnet(model, sn, x)
        result.output_scale = check.output_scale
        result.frozen_error = check.frozen_error
        result.oracle_error = check.oracle_error
        result.params_before = sum(p.numel() for p in model.parameters())
        result.params_after = sum(p.numel() for p in check.frozen.parameters())
        if script:
            frozen_out = _main_output(check.frozen_output)
            scripted = torch.jit.script(copy.deepcopy(check.frozen))
            result.scripted = torch.allclose(_main_output(scripted(x)), frozen_out,
                                             rtol=1e-4, atol=1e-5 * max(1.0, result.output_scale))
    return result


def _row(r: ZooResult) -> list[Any]:
    if r.error:
        return [r.name, r.kind, "no", "-", "-", r.error, "-", "-", "-", "-", "-"]
    equal = within(r.frozen_error, r.output_scale)
    oracle = "n/a" if r.oracle_error is None else \
        ("yes" if within(r.oracle_error, r.output_scale) else "NO")
    why = "; ".join(r.reasons[:3]) + (" …" if len(r.reasons) > 3 else "")
    return [r.name, r.kind, "yes" + (f" ({len(r.opaque)} opaque)" if r.opaque else ""),
            r.units, r.pinned, why, f"{r.params_before / 1e6:.2f}M → {r.params_after / 1e6:.2f}M",
            "yes" if equal else "NO", oracle, "yes" if r.scripted else "NO",
            f"{r.convert_s:.2f}"]


def markdown(results: Sequence[ZooResult]) -> str:
    """The coverage table in markdown."""
    from tabulate import tabulate

    headers = ["model", "kind", "traced", "units", "pinned groups", "pinned because",
               "params at 0.5", "frozen == supernet", "zero oracle", "scripted", "convert s"]
    return tabulate([_row(r) for r in results], headers=headers, tablefmt="github")


def _progress(items: list[ModelSpec]) -> Iterable[ModelSpec]:
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, unit="model")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the zoo and write the markdown table."""
    parser = runner_parser("python -m fxrazor.zoo", __doc__)
    parser.add_argument("--models", nargs="*", help="model names (default: all)")
    parser.add_argument("--kinds", nargs="*", default=["classification", "segmentation",
                                                       "video"])
    parser.add_argument("--out", default=None,
                        help="markdown file to write (default: docs/coverage.md for a full "
                             "run; a run of chosen --models prints its table instead, so that "
                             "it never replaces the full table by a partial one)")
    args = parser.parse_args(argv)
    specs = [s for s in model_specs(args.kinds) if not args.models or s.name in args.models]
    results = []
    for spec in _progress(specs):
        try:
            results.append(check_model(spec))
        except Exception as e:  # noqa: BLE001 - a failing model is a row of the report
            logger.exception("model %s failed", spec.name)
            results.append(ZooResult(spec.name, spec.kind, error=f"{type(e).__name__}: {e}"[:200]))
    text = "# Coverage of the torchvision zoo\n\n" + _header() + markdown(results) + "\n"
    out = args.out or (None if args.models else "docs/coverage.md")
    ran = f"{sum(not r.error for r in results)}/{len(results)} models ran"
    if out is None:
        print(text + ran)
        return 0
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}: {ran}")
    return 0


def _header() -> str:
    return (f"Generated by `python -m fxrazor.zoo` with torch {torch.__version__}. Each model is "
            "built with weights=None (BatchNorm statistics perturbed so outputs are not near "
            "zero), converted with the default sequential units, every unit set to half its "
            "channels, and frozen. *frozen == supernet* and *zero oracle* compare outputs with "
            "a tolerance of 1e-4 relative to the output's scale; the oracle is *n/a* where a "
            "LayerNorm/GroupNorm normalises pruned channels (pruning then changes statistics, "
            "by design).\n\nThe other tables: Hugging Face transformers in "
            "[coverage-hf.md](coverage-hf.md) (`python -m fxrazor.verify.hf_zoo`), one model "
            "of every timm family in [coverage-timm.md](coverage-timm.md) "
            "(`python -m fxrazor.verify.timm_zoo`).\n\n")


if __name__ == "__main__":
    raise SystemExit(main())
