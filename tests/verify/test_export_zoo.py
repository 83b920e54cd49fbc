"""The export zoo on a handful of torchvision models (slow): a random subnet of each saves
as ONNX (run in ONNX Runtime) and .pt2 (reloaded) with the frozen model's outputs."""

from __future__ import annotations

import pytest

pytest.importorskip("torchvision")
pytest.importorskip("onnxruntime")

from fxrazor.verify.equivalence import within  # noqa: E402
from fxrazor.verify.export_zoo import check_export  # noqa: E402
from fxrazor.verify.zoo import model_specs  # noqa: E402

# three cheap ones (plain, depthwise with SE, grouped): CI time; docs/coverage-export.md has more
MODELS = ["resnet18", "mobilenet_v3_small", "regnet_x_400mf"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_random_subnet_exports_to_onnx_and_pt2(name: str) -> None:
    spec = next(s for s in model_specs() if s.name == name)
    r = check_export(spec)
    assert (r.onnx_failure, r.pt2_failure) == ("", "")
    assert within(r.onnx_error, r.output_scale), r.onnx_error
    assert within(r.pt2_error, r.output_scale), r.pt2_error


def test_a_cut_off_sweep_resumes_from_its_jsonl(tmp_path) -> None:
    # a row already in the JSON-lines file is reused, not rerun: main() would otherwise
    # start a child process and take a minute; the table is built from the stored row
    import json

    from fxrazor.verify.export_zoo import main

    rows = tmp_path / "rows.jsonl"
    stored = {"name": "resnet18", "params": 1_500_000, "onnx_error": 0.0, "pt2_error": 0.0,
              "output_scale": 1.0, "onnx_failure": "", "pt2_failure": "", "error": "",
              "seconds": 12.5}
    rows.write_text(json.dumps(stored) + "\n")
    out = tmp_path / "table.md"
    assert main(["--models", "resnet18", "--jsonl", str(rows), "--out", str(out)]) == 0
    table = out.read_text()
    assert "| resnet18" in table and "1.50M" in table and "12.5" in table
    assert "1/1 models export both ways." in table
    assert rows.read_text().count("resnet18") == 1  # nothing appended: it was not rerun


def test_a_resumed_sweep_retries_the_models_that_ran_out_of_time(tmp_path) -> None:
    import json

    from fxrazor.verify.export_zoo import _load_jsonl

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"name": "vgg11", "error": "over the time limit (300 s)"})
                    + "\n" + json.dumps({"name": "alexnet", "error": "exit 1: Killed"}) + "\n")
    assert list(_load_jsonl(str(rows))) == ["alexnet"]  # a real failure is kept as it is

