"""Tests for register_all_modules, setup_multi_processes and pop_rewriter_function_record."""

from __future__ import annotations

import os

import pytest
import torch

from fxrazor.errors import InvalidArgumentError
from fxrazor.utils import (
    pop_rewriter_function_record,
    register_all_modules,
    setup_multi_processes,
)
from fxrazor.utils import setup_env as setup_env_module


def test_register_all_modules_returns_the_live_tables():
    from fxrazor.api import UNIT_TYPES
    from fxrazor.layers import LAYERS
    from fxrazor.rules.functions import FUNCTION_RULES, METHOD_RULES

    tables = register_all_modules(init_default_scope=False)
    assert tables["unit_types"] is UNIT_TYPES and tables["layers"] is LAYERS
    assert tables["function_rules"] is FUNCTION_RULES
    assert tables["method_rules"] is METHOD_RULES
    assert set(tables) == {"unit_types", "layers", "function_rules", "method_rules",
                           "named_function_rules", "contraction_rules"}
    assert torch.nn.Conv2d in tables["layers"] and torch.cat in tables["function_rules"]


class _FakeMP:
    """Stands in for torch.multiprocessing so the test process keeps its start method."""

    def __init__(self, current):
        self.current, self.calls = current, []

    def get_all_start_methods(self):
        return ["fork", "spawn", "forkserver"]

    def get_start_method(self, allow_none=False):
        return self.current

    def set_start_method(self, method, force=False):
        self.calls.append((method, force))


@pytest.fixture
def fake_mp(monkeypatch):
    fake = _FakeMP("spawn")
    monkeypatch.setattr(setup_env_module, "mp", fake)
    monkeypatch.setattr(setup_env_module.platform, "system", lambda: "Linux")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    return fake


def test_setup_multi_processes_defaults_to_fork_and_one_thread_per_worker(fake_mp, caplog):
    setup_multi_processes({"data": {"workers_per_gpu": 4}})
    assert fake_mp.calls == [("fork", True)]  # MMRazor's default, forced
    assert "replaces 'spawn'" in caplog.text
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"


def test_setup_multi_processes_keeps_set_threads_and_single_workers(fake_mp, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    setup_multi_processes({"mp_start_method": "spawn", "data": {"workers_per_gpu": 2}})
    assert fake_mp.calls == [("spawn", True)]
    assert os.environ["OMP_NUM_THREADS"] == "8" and os.environ["MKL_NUM_THREADS"] == "1"
    monkeypatch.delenv("MKL_NUM_THREADS")
    setup_multi_processes({"data": {"workers_per_gpu": 1}})
    assert "MKL_NUM_THREADS" not in os.environ
    with pytest.raises(InvalidArgumentError, match="mp_start_method"):
        setup_multi_processes({"mp_start_method": "thread"})


def test_pop_rewriter_function_record_removes_and_restores():
    from fxrazor.rules.functions import FUNCTION_RULES

    table = dict(FUNCTION_RULES)
    cat_rule = table[torch.cat]
    backup = pop_rewriter_function_record(table, [torch.cat, "not a record"])
    assert backup == {torch.cat: cat_rule}
    assert torch.cat not in table and len(table) == len(FUNCTION_RULES) - 1
    table.update(backup)
    assert table == FUNCTION_RULES

    class Options:
        function_rules = {"f": 1}

    assert pop_rewriter_function_record(Options(), ["f"]) == {"f": 1}
    with pytest.raises(InvalidArgumentError, match="table of rules"):
        pop_rewriter_function_record(object(), ["f"])
