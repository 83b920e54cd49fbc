"""The command line's MODEL argument: build a model (random weights, eval mode, seeded)
and example inputs for it.

Forms:

* ``torchvision:NAME`` (or a bare ``NAME``): every classification, segmentation and video
  model of the coverage zoo (:func:`fxrazor.verify.zoo.model_specs`, which knows the
  keyword arguments some need), at the input size of its torchvision weights;
* ``timm:NAME``: ``timm.create_model(NAME, pretrained=False)`` at its ``input_size``;
* ``hf:PATH``: a Hugging Face ``config.json`` (or a folder holding one), built with random
  weights (the class named by ``architectures``, else ``AutoModel``), fed ``input_ids`` of
  ``--seq-len`` tokens (or ``pixel_values``), converted with whole heads
  (``split_dims="outer"``);
* ``package.module:factory``: ``factory()`` returns a model or ``(model, example_inputs)``.

``--input-shape`` replaces the default input's shape, ``--batch`` its first dim.

Example:
    >>> source_of("resnet50"), source_of("timm:resnet18"), source_of("my.pkg:build")
    ('torchvision', 'timm', 'factory')
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fxrazor.cli.usage import UsageError, missing_extra

__all__ = ["LoadedModel", "SOURCES", "source_of", "load_model", "describe_inputs"]

SOURCES = ("torchvision", "timm", "hf")
_VIDEO_FRAMES = 16  # torchvision's video models are trained on 16-frame clips


@dataclass
class LoadedModel:
    """A model to convert, its example inputs and what the report says about them.

    Attributes:
        spec: the MODEL argument as given.
        model: the model, in eval mode.
        inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        convert_options: extra ``fxrazor.convert`` options the source needs.
        batch: the inputs' batch size (first dim of the first tensor).
        input_label: one sample's input, e.g. ``"3x224x224"``.
    """

    spec: str
    model: nn.Module
    inputs: Any
    convert_options: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    input_label: str = ""


def source_of(spec: str) -> str:
    """``"torchvision"``, ``"timm"``, ``"hf"`` or ``"factory"``: where MODEL comes from."""
    prefix, colon, _ = spec.partition(":")
    if not colon:
        return "torchvision"
    return prefix if prefix in SOURCES else "factory"


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _shaped(shape: tuple[int, ...], batch: int | None) -> tuple[int, ...]:
    return shape if batch is None else (batch, *shape[1:])


def _weights_size(torchvision: Any, name: str) -> int | None:
    """The crop (or resize) size of the model's default torchvision weights."""
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None
    transforms = weights.transforms()
    size = getattr(transforms, "crop_size", None) or getattr(transforms, "resize_size", None)
    return int(size[0]) if size else None


def _torchvision(name: str, shape: tuple[int, ...] | None, batch: int | None) -> LoadedModel:
    try:
        import torchvision
    except ImportError as e:
        raise missing_extra(f"torchvision:{name}", "torchvision", "vision") from e
    from fxrazor.verify.zoo import model_specs

    specs = {s.name: s for s in model_specs()}
    if name not in specs:
        raise UsageError(f"unknown torchvision model {name!r} (the classification, segmentation "
                         f"and video models are known){_suggest(name, list(specs))}")
    spec = specs[name]
    model = spec.build()
    if shape is None:
        # ViTs built without weights take their own image_size, not the weights' crop
        size = getattr(model, "image_size", None)
        size = size if isinstance(size, int) else _weights_size(torchvision, name) or 224
        shape = (1, 3, _VIDEO_FRAMES, size, size) if spec.kind == "video" else (1, 3, size, size)
    return _tensor_model(f"torchvision:{name}", model, _shaped(shape, batch))


def _timm(name: str, shape: tuple[int, ...] | None, batch: int | None) -> LoadedModel:
    try:
        import timm
    except ImportError as e:
        raise missing_extra(f"timm:{name}", "timm", "timm") from e
    if not timm.is_model(name):
        raise UsageError(f"unknown timm model {name!r}"
                         f"{_suggest(name, timm.list_models(f'{name[:3]}*'))}")
    model = timm.create_model(name, pretrained=False).eval()
    if shape is None:
        config: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
        shape = (1, *config.get("input_size", (3, 224, 224)))
    return _tensor_model(f"timm:{name}", model, _shaped(shape, batch))


def _tensor_model(spec: str, model: nn.Module, shape: tuple[int, ...]) -> LoadedModel:
    x = torch.randn(shape)
    return LoadedModel(spec, model.eval(), x, {}, *describe_inputs(x))


def _hf_config(transformers: Any, where: str) -> Any:
    path = Path(where)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UsageError(f"hf:{where}: no such config file (give a config.json or a folder "
                         f"holding one)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"hf:{where}: cannot read {path} as JSON: {e}") from e
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if not isinstance(model_type, str):
        raise UsageError(f"hf:{where}: {path} has no \"model_type\" (e.g. \"bert\", \"llama\")")
    try:
        config_class = transformers.CONFIG_MAPPING[model_type]
    except KeyError as e:
        raise UsageError(f"hf:{where}: transformers {transformers.__version__} does not know "
                         f"model_type {model_type!r}") from e
    return config_class.from_dict(raw)


def _hf(where: str, shape: tuple[int, ...] | None, batch: int | None,
        seq_len: int) -> LoadedModel:
    try:
        import transformers
    except ImportError as e:
        raise missing_extra(f"hf:{where}", "transformers", "hf") from e
    config = _hf_config(transformers, where)
    if getattr(config, "use_cache", None):
        config.use_cache = False  # a cache in the outputs is state, not a result to compare
    arch = (getattr(config, "architectures", None) or [None])[0]
    if arch is None:
        model = transformers.AutoModel.from_config(config)
    elif isinstance(getattr(transformers, arch, None), type):
        model = getattr(transformers, arch)(config)
    else:
        raise UsageError(f"hf:{where}: transformers {transformers.__version__} has no "
                         f"architecture {arch!r}")
    main_input = getattr(model, "main_input_name", "input_ids")
    if main_input == "input_ids":
        shape = shape or (1, seq_len)
        value = torch.randint(0, int(getattr(config, "vocab_size", 2)), _shaped(shape, batch))
    elif main_input == "pixel_values":
        size = int(getattr(config, "image_size", 224))
        shape = shape or (1, int(getattr(config, "num_channels", 3)), size, size)
        value = torch.randn(_shaped(shape, batch))
    else:
        raise UsageError(f"hf:{where}: {type(model).__name__} takes {main_input!r}; the "
                         f"command line feeds input_ids or pixel_values")
    inputs = {main_input: value}
    return LoadedModel(f"hf:{where}", model.eval(), inputs, {"split_dims": "outer"},
                       *describe_inputs(inputs))


def _factory(spec: str, shape: tuple[int, ...] | None, batch: int | None) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):
            raise UsageError(f"unknown model {spec!r}: {module_name!r} is no source "
                             f"({', '.join(s + ':' for s in SOURCES)}) and no importable "
                             f"module") from e
        raise UsageError(f"importing {module_name} for {spec!r} failed: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{spec!r}: module {module_name} has no callable {attr!r}")
    built = factory()
    model, inputs = built if isinstance(built, tuple) and len(built) == 2 else (built, None)
    if not isinstance(model, nn.Module):
        raise UsageError(f"{spec!r} returned {type(built).__name__}; a factory returns a "
                         f"model or a (model, example_inputs) pair")
    if shape is not None or batch is not None:
        if shape is None:
            raise UsageError("--batch with a factory's model needs --input-shape too")
        inputs = torch.randn(_shaped(shape, batch))
    if inputs is None:
        raise UsageError(f"{spec!r} returned a model without example inputs: pass "
                         f"--input-shape (e.g. 1,3,224,224)")
    return LoadedModel(spec, model.eval(), inputs, {}, *describe_inputs(inputs))


def load_model(spec: str, *, input_shape: tuple[int, ...] | None = None,
               batch: int | None = None, seq_len: int = 16, seed: int = 0) -> LoadedModel:
    """Build the model MODEL names, with random weights seeded by ``seed``.

    Raises:
        UsageError: an unknown model or source, a missing optional package, a factory
            that returns no model.
    """
    torch.manual_seed(seed)
    source = source_of(spec)
    name = spec.partition(":")[2] if ":" in spec else spec
    if not name:
        raise UsageError(f"model {spec!r} names no model after its prefix")
    if source == "torchvision":
        return _torchvision(name, input_shape, batch)
    if source == "timm":
        return _timm(name, input_shape, batch)
    if source == "hf":
        return _hf(name, input_shape, batch, seq_len)
    return _factory(spec, input_shape, batch)


def describe_inputs(inputs: Any) -> tuple[int, str]:
    """``(batch, one sample's input)``: the first dim of the first tensor, and the other
    dims of every tensor (named for keyword inputs).

    Example:
        >>> describe_inputs(torch.zeros(2, 3, 8, 8))
        (2, '3x8x8')
        >>> describe_inputs({"input_ids": torch.zeros(1, 16, dtype=torch.long)})
        (1, 'input_ids 16')
    """
    named = inputs.items() if isinstance(inputs, Mapping) else enumerate(
        inputs if isinstance(inputs, (tuple, list)) else (inputs,))
    tensors = [(k, v) for k, v in named if isinstance(v, torch.Tensor) and v.dim() >= 1]
    if not tensors:
        return 1, "no tensor input"
    keyword = isinstance(inputs, Mapping)
    parts = [(f"{k} " if keyword else "") + ("x".join(map(str, v.shape[1:])) or "scalar")
             for k, v in tensors]
    return int(tensors[0][1].shape[0]), ", ".join(parts)
