"""Every op rule and module rule is exercised: one tiny model per rule key.

For each key of ``FUNCTION_RULES``, ``METHOD_RULES``, ``NAMED_FUNCTION_RULES`` and
``MODULE_RULES``, a model (``tests/helpers/rule_cases.py``) calls that op on a
convolution's output; the test checks that the op is in the model's torch.fx graph (so the
case calls what it names), that ``convert`` reports no unknown op and no opaque leaf, and
that the supernet at full width computes exactly what the model computes.
``test_every_rule_key_has_a_case`` fails for a rule added without a case (and for a case
whose rule was removed). Keys that symbolic tracing never records are listed with a call
that would name them, and ``test_untraceable_keys_are_never_recorded`` shows it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from rule_cases import (
    FUNCTION_CASES,
    METHOD_CASES,
    MODULE_CASES,
    NAMED_FUNCTION_CASES,
    NAMED_LAYERS,
    UNTRACEABLE_FUNCTIONS,
    UNTRACEABLE_METHODS,
    Probe,
    qualified,
    records,
)
from torch import fx

import fxrazor
from fxrazor.layers import LAYERS
from fxrazor.rules.functions import FUNCTION_RULES, METHOD_RULES, NAMED_FUNCTION_RULES
from fxrazor.verify.equivalence import check_full_width

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def _cases() -> list[Any]:
    tables = {"function": FUNCTION_CASES, "named": NAMED_FUNCTION_CASES,
              "method": METHOD_CASES, "module": MODULE_CASES}
    params = []
    for table, cases in tables.items():
        for key in cases:
            name = key if isinstance(key, str) else qualified(key)
            marks = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")] \
                if key == "cuda" else []
            params.append(pytest.param(table, key, id=f"{table}-{name}", marks=marks))
    return params


def test_every_rule_key_has_a_case() -> None:
    assert set(FUNCTION_CASES) | set(UNTRACEABLE_FUNCTIONS) == set(FUNCTION_RULES)
    assert set(NAMED_FUNCTION_CASES) == set(NAMED_FUNCTION_RULES)
    assert set(METHOD_CASES) | set(UNTRACEABLE_METHODS) == set(METHOD_RULES)
    assert set(MODULE_CASES) == set(LAYERS)


@pytest.mark.parametrize(("table", "key"), _cases())
def test_rule_knows_its_op_and_full_width_is_exact(table: str, key: Any) -> None:
    torch.manual_seed(0)
    if table == "module":
        build, call = MODULE_CASES[key]
        model = Probe(call, build()).eval()
    else:
        cases = {"function": FUNCTION_CASES, "named": NAMED_FUNCTION_CASES,
                 "method": METHOD_CASES}[table]
        model = Probe(cases[key], NAMED_LAYERS.get(key, lambda: None)()).eval()
    x = torch.randn(2, 3, 4, 4)
    graph = fx.symbolic_trace(model, concrete_args={"mask": None}).graph
    assert records(graph, table, key), f"the case does not call {key}"
    sn = fxrazor.convert(model, x)
    assert sn.analysis.unknown_ops == ()
    assert sn.analysis.opaque == {}
    full = check_full_width(model, sn, x)
    assert full.passed(rtol=1e-6), full


@pytest.mark.parametrize("key", list(UNTRACEABLE_FUNCTIONS), ids=qualified)
def test_untraceable_keys_are_never_recorded(key: Any) -> None:
    graph = fx.symbolic_trace(Probe(UNTRACEABLE_FUNCTIONS[key])).graph
    assert not records(graph, "function", key)


@pytest.mark.parametrize("name", UNTRACEABLE_METHODS)
def test_untraceable_method_names_are_never_recorded(name: str) -> None:
    method = getattr(torch.Tensor, name, None)
    if method is None:
        return  # no model can call it
    for call in (lambda m, y: getattr(y, name)(0.5), lambda m, y: method(y, 0.5)):
        try:
            graph = fx.symbolic_trace(Probe(call)).graph
        except TypeError as e:  # a C method that takes no proxy
            assert "Proxy" in str(e)
            continue
        assert not records(graph, "method", name)
