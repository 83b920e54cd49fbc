"""Mixture-of-experts models (tiny Mixtral, Qwen2-MoE): whole experts, expert width.

The oracle for dropping experts is the routing formula by hand: a model whose router
gives the dropped experts a logit of minus infinity (never chosen, no share of the
softmax) computes what the frozen subnet without them computes.
"""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

import fxrazor  # noqa: E402
from fxrazor.errors import InvalidChoiceError  # noqa: E402
from fxrazor.mutables.channel_unit import MutableChannelUnit  # noqa: E402
from fxrazor.mutables.mutable_channel import SimpleMutableChannel  # noqa: E402
from fxrazor.verify.hf_zoo import hf_specs  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

GATE0 = "model.layers.0.mlp.gate"


def _mixtral() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    spec = next(s for s in hf_specs() if s.name == "mixtral")
    torch.manual_seed(0)
    return spec.build().eval(), spec.example()


def _route_without(router: torch.nn.Module, dropped: list[int]) -> None:
    """Mixtral's router by hand, with the dropped experts' logits at minus infinity."""
    def forward(hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = F.linear(hidden.reshape(-1, router.weight.shape[1]), router.weight)
        logits[:, dropped] = float("-inf")
        top, index = torch.topk(logits.float().softmax(-1), router.top_k, dim=-1)
        return logits, top / top.sum(-1, keepdim=True), index
    router.forward = forward


@pytest.fixture(scope="module")
def mixtral():
    model, example = _mixtral()
    return model, example, fxrazor.convert(model, example, split_dims="outer")


def test_router_experts_are_a_unit_that_keeps_its_top_k(mixtral) -> None:
    model, _, sn = mixtral
    widths = {u.name: (u.num_channels, u.min_kept) for u in sn.units}
    assert widths[GATE0] == (4, 2)  # 4 experts, 2 chosen per token
    assert widths["model.layers.0.mlp.experts.gate_up_proj"] == (96, 1)  # expert width
    assert "topk" in sn.unit(GATE0).min_kept_reason


class _MaskUnit(MutableChannelUnit):
    """A unit whose choice is any mask (which experts, not only how many)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__(num_channels, mutable_channel=SimpleMutableChannel(num_channels))


def test_dropping_experts_is_routing_among_the_others(mixtral) -> None:
    model, example, _ = mixtral
    sn = fxrazor.convert(model, example, split_dims="outer", unit=_MaskUnit)
    sn.set_choices({GATE0: torch.tensor([True, False, True, False])})
    frozen = fxrazor.freeze(sn)
    layer = frozen.get_submodule("model.layers.0.mlp")
    original = model.get_submodule("model.layers.0.mlp")
    assert torch.equal(layer.gate.weight, original.gate.weight[[0, 2]])
    assert torch.equal(layer.experts.gate_up_proj, original.experts.gate_up_proj[[0, 2]])
    assert torch.equal(layer.experts.down_proj, original.experts.down_proj[[0, 2]])
    oracle = copy.deepcopy(model)
    _route_without(oracle.get_submodule("model.layers.0.mlp.gate"), [1, 3])
    with torch.no_grad():
        want = oracle(**example).logits
        got = frozen(**example)
        got = got["logits"] if isinstance(got, dict) else got[0]
        full = model(**example).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - full).abs().max() > 1e-3  # the oracle is not the full model


def test_too_few_experts_are_refused_and_never_sampled(mixtral) -> None:
    _, _, sn = mixtral
    before = sn.choices()
    with pytest.raises(InvalidChoiceError, match="at least 2"):
        sn.set_choices({GATE0: 1, "model.embed_tokens": 32})
    assert sn.choices() == before  # nothing half-applied
    assert sn.sample_choices("min")[GATE0] == 2
    assert all(sn.sample_choices()[GATE0] >= 2 for _ in range(30))


def test_pruned_experts_round_trip_through_from_pretrained(mixtral) -> None:
    import transformers

    import fxrazor.hf

    model, example, sn = mixtral
    sn.set_choices({u.name: 2 if u.num_channels == 4 else u.num_channels // 2
                    for u in sn.units})
    try:
        frozen = fxrazor.freeze(sn)
        with tempfile.TemporaryDirectory() as directory:
            fxrazor.hf.save_pretrained(sn, directory)
            loaded = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    finally:
        sn.set_choices(sn.sample_choices("max"))
    assert loaded.config.num_local_experts == 2
    with torch.no_grad():
        got = frozen(**example)
        got = got["logits"] if isinstance(got, dict) else got[0]
        torch.testing.assert_close(loaded(**example).logits, got)


@pytest.mark.slow
def test_qwen2_moe_drops_experts_and_shrinks_the_shared_expert() -> None:
    spec = next(s for s in hf_specs() if s.name == "qwen2-moe")
    torch.manual_seed(0)
    model = spec.build().eval()
    sn = fxrazor.convert(model, spec.example(), split_dims="outer")
    assert sn.unit(GATE0).num_channels == 4 and sn.unit(GATE0).min_kept == 2
    sn.set_choices({GATE0: 3, "model.layers.0.mlp.shared_expert.gate_proj": 20})
    frozen = fxrazor.freeze(sn)
    example = spec.example(batch=3, length=5)
    with torch.no_grad():
        torch.testing.assert_close(frozen(**example)["logits"], sn(**example)["logits"])
    assert frozen.get_submodule("model.layers.0.mlp.experts").gate_up_proj.shape[0] == 3
