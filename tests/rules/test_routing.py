"""Routing rules: ids of channels picked by top-k, carried, counted, or pinned."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor.errors import InvalidChoiceError
from fxrazor.trace import routing
from fxrazor.trace.aten_ops import to_torch_call
from fxrazor.verify.equivalence import check_full_width, check_subnet


class _Routed(nn.Module):
    """A router over 6 channels picks 2 per row; each channel is scaled by its count."""

    def __init__(self, how: str = "count") -> None:
        super().__init__()
        self.how = how
        self.gate = nn.Linear(5, 6)
        self.out = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.gate(x)
        ids = torch.topk(torch.softmax(logits, -1), 2, dim=-1)[1].reshape(-1)
        if self.how == "count":
            counts = routing.expert_counts(ids.float(), 6)
            return self.out(logits * torch.cumsum(counts, 0))
        return self.out(logits * (ids == 5).float().sum())  # compares an id with 5


def test_counted_ids_keep_the_router_prunable_and_exact() -> None:
    torch.manual_seed(0)
    model, x = _Routed().eval(), torch.randn(4, 5)
    sn = fxrazor.convert(model, x)
    assert [(u.name, u.num_channels, u.min_kept) for u in sn.units] == [("gate", 6, 2)]
    assert check_full_width(model, sn, x).passed(rtol=1e-6)
    sn.set_choices({"gate": 3})
    result = check_subnet(model, sn, x)
    assert result.passed(rtol=1e-5) and result.oracle_error is None, result  # normalised
    frozen = fxrazor.freeze(sn)
    assert "expert_counts" in frozen.code and ", 3)" in frozen.code
    with pytest.raises(InvalidChoiceError, match="picks 2 of them"):
        sn.set_choices({"gate": 1})


def test_ids_used_by_an_op_without_a_rule_pin_the_channels() -> None:
    model, x = _Routed("compare").eval(), torch.randn(4, 5)
    sn = fxrazor.convert(model, x)
    assert sn.units == []
    reasons = [r for g in sn.analysis.pinned for r in g.reasons]
    assert any("uses ids of these positions" in r for r in reasons), reasons


def test_softmax_pins_its_dim_unless_only_top_k_reads_it() -> None:
    class Mixing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.softmax(self.a(x), -1))

    sn = fxrazor.convert(Mixing(), torch.randn(3, 4))
    assert sn.units == []


def test_histc_of_ids_is_written_as_expert_counts() -> None:
    x = object()
    assert to_torch_call(torch.ops.aten.histc.default, (x, 8, 0, 7), {})[1:3] == \
        (routing.expert_counts, (x, 8))
    op, target, args, kwargs = to_torch_call(torch.ops.aten.histc.default, (x, 10, -1, 1), {})
    assert (target, kwargs) == (torch.histc, {"bins": 10, "min": -1, "max": 1})
    ids = torch.tensor([0.0, 3.0, 3.0, 1.0])
    assert torch.equal(routing.expert_counts(ids, 4), torch.histc(ids, 4, 0, 3))
