"""The latency table: its interpolation against hand-computed values (timings injected, so
the numbers are exact), JSON, errors, and its use by ResourceEstimator and the searches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fxrazor
from fxrazor import latency_timing
from fxrazor.errors import FxRazorError, InvalidArgumentError, UnsupportedModelError
from fxrazor.latency import LatencyTable, LayerLatency
from fxrazor.resource_estimator import ResourceEstimator
from fxrazor.search import Constraints, evolution_search


def fake_timer(module: nn.Module, args: tuple) -> float:
    """A linear layer takes (in * out)^2 microseconds (not bilinear, so the grid's
    interpolation shows); a whole model 1 ms more than its linear layers."""
    if isinstance(module, nn.Linear):
        return (module.in_features * module.out_features) ** 2 * 1e-6
    return 1.0 + sum(fake_timer(m, ()) for m in module.modules() if isinstance(m, nn.Linear))


def two_linear() -> fxrazor.Supernet:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    return fxrazor.convert(model, torch.randn(2, 16))


def test_full_width_and_grid_values() -> None:
    sn = two_linear()
    table = LatencyTable.measure(sn, grid=(0, 0.5, 1), timer=fake_timer)
    assert table.layers["_0"].points == [[1, 16, 32]]  # its input is pinned: one axis
    assert table.layers["_0"].ms == pytest.approx([256e-6, 65536e-6, 262144e-6])
    # full width: 1 + (16*32)^2e-6 + (32*4)^2e-6, as the whole model was timed
    assert table.measured_ms[1] == pytest.approx(1.278528)
    assert table.predict(sn) == pytest.approx(1.278528)
    assert table.residual_ms == pytest.approx((1.0, 1.0))


def test_predict_interpolates_between_grid_points() -> None:
    sn = two_linear()
    table = LatencyTable.measure(sn, grid=(0, 0.5, 1), timer=fake_timer)
    # width 24, halfway between grid points 16 and 32 of both layers:
    # layer 0: (65536 + 262144) / 2 = 163840 us e-6; layer 2: (4096 + 16384) / 2 = 10240
    assert table.predict(sn, {"0": 24}) == pytest.approx(1.0 + 0.16384 + 0.01024)
    assert sn.choices() == {"0": 32}  # predicting applies nothing


def test_bilinear_corner_weights() -> None:
    def f(i: int, o: int) -> float:
        return (i * o) ** 2 * 1e-6

    layer = LayerLatency("Linear", [["in"], ["out"]], [[8, 16], [1, 8]],
                         [f(8, 1), f(8, 8), f(16, 1), f(16, 8)], numel=8, out_axis=1)
    # out at 3/7 of [1, 8] then in halfway: (1792 + 7168) / 2 (see the corners above)
    assert layer.at([12, 4]) == pytest.approx(4480e-6)
    assert layer.at([16, 8]) == pytest.approx(f(16, 8))
    assert layer.volume([12, 4]) == pytest.approx(4.0)


def test_monotone_when_a_unit_narrows() -> None:
    def stepped(module: nn.Module, args: tuple) -> float:
        if isinstance(module, nn.Linear):  # kernels work in blocks of 8 channels
            return math.ceil(module.in_features / 8) * math.ceil(module.out_features / 8)
        return 5.0 + sum(stepped(m, ()) for m in module.modules() if isinstance(m, nn.Linear))

    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 40), nn.ReLU(),
                          nn.Linear(40, 3))
    sn = fxrazor.convert(model, torch.randn(2, 8))
    table = LatencyTable.measure(sn, timer=stepped)
    widths = range(40, 0, -1)
    predicted = table.predict_many(sn, [{"0": 24, "2": w} for w in widths])
    assert all(a >= b for a, b in zip(predicted, predicted[1:], strict=False))
    assert predicted[0] > predicted[-1]
    assert table.predict(sn, {"0": 12, "2": 40}) < table.predict(sn, {"0": 24, "2": 40})


def test_json_round_trip(tmp_path) -> None:
    sn = two_linear()
    table = LatencyTable.measure(sn, grid=(0, 0.5, 1), timer=fake_timer)
    table.save(tmp_path / "table.json")
    again = LatencyTable.load(tmp_path / "table.json")
    assert again.to_dict() == table.to_dict()
    assert again.machine["torch"] == torch.__version__ and again.machine["backend"] == "torch"
    candidates = [{"0": w} for w in (1, 7, 24, 32)]
    assert again.predict_many(sn, candidates) == table.predict_many(sn, candidates)


def test_bad_input_is_refused_clearly(monkeypatch) -> None:
    sn = two_linear()
    with pytest.raises(InvalidArgumentError, match="unknown latency backend 'tensorrt'"):
        LatencyTable.measure(sn, backend="tensorrt")
    real = latency_timing.importlib.util.find_spec
    monkeypatch.setattr(latency_timing.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(FxRazorError, match="pip install onnxruntime"):
        LatencyTable.measure(sn, backend="onnxruntime")
    with pytest.raises(UnsupportedModelError, match="Supernet"):
        LatencyTable.measure(nn.Linear(2, 2), timer=fake_timer)  # type: ignore[arg-type]
    other = fxrazor.convert(nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)),
                            torch.randn(2, 16))
    table = LatencyTable.measure(sn, grid=(0, 1), timer=fake_timer)
    with pytest.raises(InvalidArgumentError, match="does not fit the supernet"):
        table.predict(other)
    with pytest.raises(InvalidArgumentError, match="not a latency table"):
        LatencyTable.from_dict({"layers": {}})


@pytest.mark.skipif(not latency_timing.importlib.util.find_spec("onnxruntime"),
                    reason="onnxruntime is not installed")
def test_onnxruntime_times_a_layer() -> None:
    ms = latency_timing.OrtTimer(repeats=1, warmup=0)(nn.Linear(4, 4), (torch.randn(1, 4),))
    assert 0 < ms < 1000


def test_resource_estimator_gives_the_tables_latency() -> None:
    sn = two_linear()
    table = LatencyTable.measure(sn, grid=(0, 0.5, 1), timer=fake_timer)
    sn.set_choices({"0": 24})
    result = ResourceEstimator(units=None).estimate(sn, latency_cfg={"table": table})
    assert result["latency"] == pytest.approx(1.17408)
    # FLOPs at width 24: 2 * 2 rows * (16*24 + 24*4)
    assert result["flops"] == 2 * 2 * (16 * 24 + 24 * 4)
    assert ResourceEstimator().estimate(sn)["latency"] is None
    with pytest.raises(InvalidArgumentError, match="latency unit"):
        ResourceEstimator(latency_cfg={"table": table, "unit": "h"}).estimate(sn)


def test_search_under_a_latency_constraint() -> None:
    sn = two_linear()
    table = LatencyTable.measure(sn, grid=(0, 0.5, 1), timer=fake_timer)
    estimator = table.estimator(sn)
    # between grid points 16 and 32: 1.069632 + (w - 16) * 0.013056 ms
    check = Constraints({"latency": 1.2}, estimator)
    assert check.feasible({"0": 25}) and not check.feasible({"0": 26})
    assert set(estimator({"0": 25})) == {"flops", "params", "latency"}
    best = evolution_search(sn, lambda c: c["0"], {"latency": 1.2, "params": 10_000},
                            estimator=estimator, population_size=8, max_generations=4,
                            num_mutation=6, num_crossover=6, top_k=3)
    assert best.subnets and all(c["0"] <= 25 for c in best.subnets)
    assert sn.choices() == {"0": 32}
