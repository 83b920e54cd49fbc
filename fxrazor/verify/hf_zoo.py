"""Coverage over Hugging Face transformers: tiny random models through the export front-end.

``python -m fxrazor.verify.hf_zoo --out docs/coverage-hf.md`` builds each architecture from
a tiny config (random weights, no hub), converts it (``split_dims="outer"``: whole attention
heads / KV groups), checks full width == original, sets every unit to half its channels,
freezes, and records: units, pinned groups and why, params before/after, frozen ==
supernet, whether ``torch.export`` takes the frozen model, frozen == supernet at another
batch size and length, and convert time. Needs transformers; tqdm gives a progress bar.

Example:
    >>> [s.name for s in hf_specs()][:3]
    ['bert', 'distilbert', 'roberta']
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fxrazor.verify.cli_help import runner_parser
from fxrazor.verify.equivalence import check_full_width, check_subnet, output_error, within

__all__ = ["HFSpec", "HFResult", "hf_specs", "check_hf_model", "main"]

logger = logging.getLogger(__name__)

_VOCAB, _HIDDEN, _FFN, _HEADS, _KV = 128, 64, 96, 4, 2


@dataclass(frozen=True)
class HFSpec:
    """One architecture: its name, a builder of a tiny random model, its input kind."""

    name: str
    build: Callable[[], nn.Module]
    inputs: str = "text"  # "text": input_ids; "image": pixel_values

    def example(self, batch: int = 2, length: int = 7) -> dict[str, torch.Tensor]:
        """Example keyword inputs (``length`` tokens, or a 32×32 image)."""
        if self.inputs == "image":
            return {"pixel_values": torch.randn(batch, 3, 32, 32)}
        return {"input_ids": torch.randint(0, _VOCAB, (batch, length))}


def _decoder(config_name: str, model_name: str, **extra: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, config_name)(
            vocab_size=_VOCAB, hidden_size=_HIDDEN, intermediate_size=_FFN,
            num_attention_heads=_HEADS, num_key_value_heads=_KV, num_hidden_layers=2,
            use_cache=False, **extra)
        return getattr(transformers, model_name)(config)
    return build


def _model(config_name: str, model_name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, config_name)(**kwargs)
        return getattr(transformers, model_name)(config)
    return build


def hf_specs() -> list[HFSpec]:
    """The architectures of the table (those the installed transformers lacks fail there)."""
    enc = dict(vocab_size=_VOCAB, hidden_size=_HIDDEN, intermediate_size=_FFN,
               num_attention_heads=_HEADS, num_hidden_layers=2)
    return [
        HFSpec("bert", _model("BertConfig", "BertForSequenceClassification", **enc)),
        HFSpec("distilbert", _model("DistilBertConfig", "DistilBertForSequenceClassification",
                                    vocab_size=_VOCAB, dim=_HIDDEN, hidden_dim=_FFN,
                                    n_heads=_HEADS, n_layers=2)),
        HFSpec("roberta", _model("RobertaConfig", "RobertaForSequenceClassification", **enc)),
        HFSpec("gpt2", _model("GPT2Config", "GPT2LMHeadModel", vocab_size=_VOCAB,
                              n_embd=_HIDDEN, n_head=_HEADS, n_layer=2, use_cache=False)),
        HFSpec("llama", _decoder("LlamaConfig", "LlamaForCausalLM")),
        HFSpec("mistral", _decoder("MistralConfig", "MistralForCausalLM")),
        HFSpec("qwen2", _decoder("Qwen2Config", "Qwen2ForCausalLM")),
        HFSpec("qwen3", _decoder("Qwen3Config", "Qwen3ForCausalLM", head_dim=16)),
        HFSpec("gemma3", _decoder("Gemma3TextConfig", "Gemma3ForCausalLM", head_dim=16)),
        HFSpec("t5-encoder", _model("T5Config", "T5EncoderModel", vocab_size=_VOCAB,
                                    d_model=_HIDDEN, d_kv=16, d_ff=_FFN, num_layers=2,
                                    num_heads=_HEADS)),
        HFSpec("vit", _model("ViTConfig", "ViTForImageClassification", image_size=32,
                             patch_size=8, **{k: v for k, v in enc.items()
                                              if k != "vocab_size"}), inputs="image"),
        HFSpec("qwen2-moe", _decoder("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                                     moe_intermediate_size=32, num_experts=4,
                                     num_experts_per_tok=2,
                                     shared_expert_intermediate_size=48)),
        HFSpec("mixtral", _decoder("MixtralConfig", "MixtralForCausalLM", num_local_experts=4,
                                   num_experts_per_tok=2)),
    ]


@dataclass
class HFResult:
    """What :func:`check_hf_model` measured for one architecture."""

    name: str
    model_class: str = ""
    units: int = 0
    pinned: int = 0
    reasons: list[str] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    full_width_error: float = float("nan")
    frozen_error: float = float("nan")
    other_size_error: float = float("nan")
    output_scale: float = 1.0
    exported: bool = False
    convert_s: float = 0.0
    error: str = ""

    def passed(self) -> bool:
        """Every check holds and the model has at least one unit."""
        return not self.error and self.units > 0 and self.exported and \
            self.params_after < self.params_before and all(
                within(e, self.output_scale) for e in
                (self.full_width_error, self.frozen_error, self.other_size_error))


def _half(sn: Any) -> dict[str, int]:
    return {u.name: max(1, u.num_channels // 2) for u in sn.units}


def check_hf_model(spec: HFSpec, seed: int = 0) -> HFResult:
    """Convert, prune every unit to half, freeze and check one architecture."""
    import fxrazor

    torch.manual_seed(seed)
    model = spec.build().eval()
    result = HFResult(spec.name, type(model).__name__)
    inputs = spec.example()
    with torch.no_grad():
        start = time.perf_counter()
        sn = fxrazor.convert(model, inputs, split_dims="outer")
        result.convert_s = time.perf_counter() - start
        result.units, result.pinned = len(sn.units), len(sn.analysis.pinned)
        result.reasons = sorted({r for g in sn.analysis.pinned for r in g.reasons})
        result.full_width_error = check_full_width(model, sn, inputs).error
        sn.set_choices(_half(sn))
        check = check_subnet(model, sn, inputs)
        result.output_scale, result.frozen_error = check.output_scale, check.frozen_error
        result.params_before = sum(p.numel() for p in model.parameters())
        result.params_after = sum(p.numel() for p in check.frozen.parameters())
        other = spec.example(batch=3, length=11)
        result.other_size_error = output_error(check.frozen(**other), sn(**other))
    try:
        torch.export.export(check.frozen, (), inputs, strict=False)
        result.exported = True
    except Exception as e:  # noqa: BLE001 - a failed export is a column of the report
        logger.warning("torch.export of the frozen %s failed: %s", spec.name, e)
    return result


def _row(r: HFResult) -> list[Any]:
    if r.error:
        return [r.name, r.model_class or "-", "-", "-", r.error, "-", "-", "-", "-", "-", "-"]
    yes = lambda ok: "yes" if ok else "NO"  # noqa: E731
    why = "; ".join(r.reasons[:3]) + (" …" if len(r.reasons) > 3 else "")
    return [r.name, r.model_class, r.units, r.pinned, why,
            f"{r.params_before / 1e3:.1f}k → {r.params_after / 1e3:.1f}k",
            yes(within(r.full_width_error, r.output_scale)),
            yes(within(r.frozen_error, r.output_scale)),
            yes(within(r.other_size_error, r.output_scale)), yes(r.exported),
            f"{r.convert_s:.2f}"]


def markdown(results: Sequence[HFResult]) -> str:
    """The coverage table in markdown."""
    from tabulate import tabulate

    headers = ["model", "class", "units", "pinned groups", "pinned because", "params at 0.5",
               "full width == original", "frozen == supernet", "other batch/length",
               "torch.export", "convert s"]
    return tabulate([_row(r) for r in results], headers=headers, tablefmt="github")


def _progress(items: list[HFSpec]) -> Iterable[HFSpec]:
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, unit="model")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the table and write it as markdown."""
    parser = runner_parser("python -m fxrazor.verify.hf_zoo", __doc__)
    parser.add_argument("--models", nargs="*", help="names (default: all)")
    parser.add_argument("--out", default=None, help="markdown file (default: print)")
    args = parser.parse_args(argv)
    import transformers

    results = []
    for spec in _progress([s for s in hf_specs() if not args.models or s.name in args.models]):
        try:
            results.append(check_hf_model(spec))
        except Exception as e:  # noqa: BLE001 - a failing model is a row of the report
            logger.exception("model %s failed", spec.name)
            results.append(HFResult(spec.name, error=f"{type(e).__name__}: {e}"[:200]))
    text = (f"# Coverage of Hugging Face transformers\n\nGenerated by `python -m "
            f"fxrazor.verify.hf_zoo --out docs/coverage-hf.md` with torch {torch.__version__} "
            f"and transformers {transformers.__version__}. Each model is built from a tiny "
            f"config (2 layers, hidden 64, 4 heads, 2 KV heads, random weights), converted "
            f"through the export front-end with `split_dims=\"outer\"` (whole heads / KV "
            f"groups), every unit set to half its channels, and frozen. Checks compare "
            f"outputs within 1e-4 of their scale; *other batch/length* runs the frozen and "
            f"the supernet on a batch of 3 × 11 tokens (the example was 2 × 7).\n\n"
            + markdown(results) + "\n")
    ran = f"{sum(r.passed() for r in results)}/{len(results)} models pass every check"
    if args.out is None:
        print(text + ran)
        return 0
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}: {ran}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
