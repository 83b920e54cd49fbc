"""Write a pruned Hugging Face model as a directory that ``from_pretrained`` loads.

The frozen subnet of a Hugging Face model keeps the model's own parameter names, with
pruned shapes. To load it back with ``AutoModelFor*.from_pretrained``, the config must
give those shapes: the new sizes are read from the units' kept widths, each unit being
the config size whose value is its channel count (an MLP unit of 96 channels is
``intermediate_size``; an attention unit of whole heads, ``split_dims="outer"``, is
``num_attention_heads``, or ``num_key_value_heads`` where its channels are KV groups,
each carrying ``num_attention_heads // num_key_value_heads`` query heads; a router's
unit of whole experts is ``num_experts``). The head size
is kept (written as ``head_dim`` where the model would derive another one from
``hidden_size / num_attention_heads``). A unit that fits more than one size is settled by
the shapes: every parameter of the model built (on the meta device) from the new config
must have the frozen tensor's shape.

A config holds one size for every layer; a subnet whose layers keep different widths
is refused with a :class:`~fxrazor.errors.PretrainedExportError` naming the layers (give
them one width with :func:`set_layer_widths`, or search them as one choice with
:func:`tie_layer_groups`). Neither the model nor the supernet is changed. Needs
``transformers`` (``pip install fxrazor[hf]``) only for a config given alone.

Example (a stand-in for a ``PreTrainedModel``: a config of sizes, built from it):
    >>> import torch, fxrazor
    >>> from torch import nn
    >>> class Config:
    ...     architectures = None
    ...     def __init__(self): self.hidden_size, self.intermediate_size = 4, 8
    ...     def to_dict(self): return dict(vars(self))
    >>> class TinyMLP(nn.Module):
    ...     def __init__(self, config):
    ...         super().__init__()
    ...         self.config, self.up = config, nn.Linear(4, config.intermediate_size)
    ...         self.down = nn.Linear(config.intermediate_size, 4)
    ...     def forward(self, x): return self.down(self.up(x).relu())
    ...     def save_pretrained(self, directory): ...
    >>> model = TinyMLP(Config())
    >>> sn = fxrazor.convert(model, torch.randn(1, 4)); sn.set_choices({"up": 3})
    >>> pruned_config(sn, model).intermediate_size, model.config.intermediate_size
    (3, 8)
    >>> to_pretrained(sn, model).up
    Linear(in_features=4, out_features=3, bias=True)
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from fxrazor.api import SOURCE_KEY, freeze
from fxrazor.errors import PretrainedExportError, UnsupportedModelError
from fxrazor.layer_groups import group_by_layer, layer_groups, set_layer_widths, tie_layer_groups
from fxrazor.supernet import Supernet

__all__ = ["save_pretrained", "to_pretrained", "pruned_config", "SIZE_ATTRS", "layer_groups",
           "set_layer_widths", "tie_layer_groups"]

logger = logging.getLogger(__name__)

# Config sizes a unit may be, besides the head counts (read through the config's
# attribute_map, so GPT-2's n_embd answers to hidden_size).
SIZE_ATTRS: tuple[str, ...] = tuple(
    "hidden_size intermediate_size ffn_dim encoder_ffn_dim decoder_ffn_dim d_ff n_inner "
    "moe_intermediate_size shared_expert_intermediate_size num_experts num_local_experts".split())
_HEADS, _KV = "num_attention_heads", "num_key_value_heads"
_MAX_TRIES = 64  # readings of ambiguous unit groups tried against the shapes


def _int_attr(config: Any, name: str) -> int | None:
    value = getattr(config, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _source(model: Any, verb: str) -> tuple[type[nn.Module], Any]:
    """``(model class, config)`` of the original model or of a config that names it."""
    if isinstance(model, nn.Module) and hasattr(model, "config") \
            and callable(getattr(model, "save_pretrained", None)):
        return type(model), model.config
    if not isinstance(model, nn.Module) and callable(getattr(model, "to_dict", None)) \
            and hasattr(model, "architectures"):
        names = list(model.architectures or [])
        if not names:
            raise UnsupportedModelError(
                f"{verb}: the config has no architectures (it was not saved from a model), "
                f"so the model class is unknown; pass the original model instead")
        import transformers  # only here: a model given directly needs nothing from it

        cls = getattr(transformers, names[0], None)
        if cls is None:
            raise UnsupportedModelError(f"{verb}: transformers has no class {names[0]!r} "
                                        f"(config.architectures); pass the original model")
        return cls, model
    raise UnsupportedModelError(
        f"{verb} needs the original Hugging Face model (a PreTrainedModel, with .config) or "
        f"its config (with .architectures), got {type(model).__name__}")


# ---- reading the units as config sizes ----------------------------------------------------
def _readings(config: Any, channels: int, kept: int) -> dict[str, dict[str, int]]:
    """``{reading: {config attribute: new value}}``: the config sizes a unit of
    ``channels`` channels (``kept`` kept) may stand for, most specific first."""
    out: dict[str, dict[str, int]] = {}
    heads, kv = _int_attr(config, _HEADS), _int_attr(config, _KV)
    if heads and kv and kv != heads and channels == kv and heads % kv == 0:
        out[_KV] = {_KV: kept, _HEADS: kept * (heads // kv)}  # whole KV groups
    if heads and channels == heads:
        out[_HEADS] = {_HEADS: kept, **({_KV: kept} if kv == heads else {})}
    for name in SIZE_ATTRS:
        if _int_attr(config, name) == channels:
            out[name] = {name: kept}
    return out


def _where(names: list[str], layers: Mapping[str, tuple[str, str]]) -> str:
    """Name units by layer: ``layers ['0', '3'] of model.layers.*.mlp.up`` (``layers``:
    ``{unit: (pattern, layer index)}``)."""
    by_pattern: dict[str, list[str]] = {}
    for name in names:
        pattern, index = layers.get(name, (name, ""))
        by_pattern.setdefault(pattern, []).append(index)
    return "; ".join(p if indices == [""] else f"layers {sorted(indices, key=_index_key)} of {p}"
                     for p, indices in by_pattern.items())


def _index_key(index: str) -> tuple[int, ...]:
    return tuple(int(i) for i in index.split(".") if i.isdigit())


def _unit_groups(supernet: Supernet, config: Any
                 ) -> tuple[list[tuple[str, list[Any]]], dict[str, tuple[str, str]]]:
    """``(pattern, units)`` of every layer group with a pruned unit: the whole group, as
    its unpruned layers keep the config's size, which the pruned ones must then equal; and
    ``{unit: (pattern, layer index)}`` of every unit."""
    units = [u for u in supernet.every_unit() if u.num_channels > 1]
    pruned = {u.name for u in units if u.activated_channels < u.num_channels}
    by_name = {u.name: u for u in units}
    groups: list[tuple[str, list[Any]]] = []
    layers: dict[str, tuple[str, str]] = {}
    for pattern, members in group_by_layer(list(by_name)).items():
        layers.update({name: (pattern, index) for index, name in members.items()})
        if pruned & set(members.values()):
            groups.append((pattern, [by_name[n] for n in members.values()]))
    for pattern, group in groups:
        first = group[0]
        if not _readings(config, first.num_channels, first.activated_channels):
            raise PretrainedExportError(
                f"unit {first.name!r} ({first.num_channels} channels, {first.activated_channels}"
                f" kept) is no size of the config ({_sizes(config)}), so its pruned width "
                f"cannot be written; keep {pattern!r} at full width "
                f"(set_choices({{{first.name!r}: {first.num_channels}}}))")
    return groups, layers


def _sizes(config: Any) -> str:
    names = (*SIZE_ATTRS, _HEADS, _KV, "head_dim")
    return ", ".join(f"{n}={_int_attr(config, n)}" for n in names if _int_attr(config, n))


def _combine(groups: list[tuple[str, list[Any]]], labels: tuple[str, ...], config: Any,
             layers: Mapping[str, tuple[str, str]]) -> tuple[dict[str, int], str]:
    """The new sizes when each group is read as its label, or ``({}, why)`` on a conflict."""
    values: dict[str, dict[int, list[str]]] = {}
    for (_, units), label in zip(groups, labels, strict=True):
        for unit in units:
            reading = _readings(config, unit.num_channels, unit.activated_channels).get(label)
            if reading is None:
                return {}, f"unit {unit.name!r} has {unit.num_channels} channels, not {label}"
            for attr, value in reading.items():
                values.setdefault(attr, {}).setdefault(value, []).append(unit.name)
    differ = [f"{attr} differs across layers ("
              + "; ".join(f"{v} at {_where(n, layers)}" for v, n in sorted(by_value.items()))
              + ")" for attr, by_value in values.items() if len(by_value) > 1]
    if differ:
        return {}, (", and ".join(differ) + ", but the config holds one size for every layer: "
                    "give the layers one width (fxrazor.hf.set_layer_widths(sn, {group: "
                    "width}), groups from fxrazor.hf.layer_groups(sn)) or search them as one "
                    "choice (fxrazor.hf.tie_layer_groups(sn))")
    return {a: next(iter(v)) for a, v in values.items()}, ""


def _new_config(config: Any, sizes: Mapping[str, int]) -> Any:
    new = copy.deepcopy(config)
    heads = _int_attr(config, _HEADS)
    head_dim = _int_attr(config, "head_dim")
    hidden = _int_attr(config, "hidden_size")
    if head_dim is None and heads and hidden:
        head_dim = hidden // heads  # the head size the model derived; it is kept
    for attr, value in sizes.items():
        setattr(new, attr, value)
    new_heads, new_hidden = _int_attr(new, _HEADS), _int_attr(new, "hidden_size")
    if head_dim and new_heads and new_hidden and _int_attr(new, "head_dim") is None \
            and new_hidden // new_heads != head_dim:
        new.head_dim = head_dim  # models that read config.head_dim keep their head size
    return new


def _shapes(cls: type[nn.Module], config: Any) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = cls(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _params(frozen: fx.GraphModule) -> dict[str, torch.Tensor]:
    return dict(frozen.named_parameters(remove_duplicate=False))


def _check_layout(cls: type[nn.Module], config: Any, frozen: fx.GraphModule) -> None:
    """The frozen module must hold the model's own parameters by their own names."""
    names, params = set(_shapes(cls, config)), _params(frozen)
    state = frozen.state_dict()
    missing = sorted(n for n in names if n not in state and n not in params)
    extra = sorted(set(params) - names)
    if missing or extra:
        raise UnsupportedModelError(
            f"the frozen subnet's parameters are not {cls.__name__}'s: missing {missing[:6]}, "
            f"unknown {extra[:6]}; was the supernet converted from this model (by "
            f"fxrazor.convert, whose frozen graph keeps the module paths)?")


def _mismatches(expected: dict[str, tuple[int, ...]], frozen: fx.GraphModule) -> list[str]:
    state = frozen.state_dict()
    return [f"{k}: config gives {list(s)}, subnet has {list(state[k].shape)}"
            for k, s in expected.items() if k in state and tuple(state[k].shape) != s]


def _solve(supernet: Supernet, cls: type[nn.Module], config: Any, frozen: fx.GraphModule
           ) -> Any:
    _check_layout(cls, config, frozen)
    groups, layers = _unit_groups(supernet, config)
    options = [tuple(_readings(config, u[0].num_channels, u[0].activated_channels))
               for _, u in groups]
    tries = list(itertools.islice(itertools.product(*options), _MAX_TRIES))
    why: list[str] = []
    conflicts = False
    for labels in tries:
        sizes, conflict = _combine(groups, labels, config, layers)
        if conflict:
            why.append(conflict)
            conflicts = True
            continue
        new = _new_config(config, sizes)
        wrong = _mismatches(_shapes(cls, new), frozen)
        if not wrong:
            logger.info("pruned config of %s: %s", cls.__name__, sizes)
            return new
        why.append(f"reading {dict(zip([p for p, _ in groups], labels, strict=True))} as "
                   f"{sizes} gives other shapes: {wrong[:4]}"
                   + (f" (+{len(wrong) - 4} more)" if len(wrong) > 4 else "")
                   + (f" ({cls.__name__} ignores head_dim: it derives the head size from "
                      f"hidden_size / num_attention_heads, so prune hidden_size in proportion "
                      f"to the heads or keep every head)"
                      if _HEADS in sizes and _int_attr(config, "head_dim") is None
                      and _int_attr(new, "head_dim") is not None else ""))
    raise PretrainedExportError(
        f"the subnet's widths cannot be written as a {type(config).__name__} "
        f"({_sizes(config)}): " + " | ".join(dict.fromkeys(why))
        + ("" if conflicts else
           ". Every pruned unit must be one config size (the same in every layer); prune "
           "attention by whole heads (convert(..., split_dims='outer')) and keep the units "
           "that are no size of the config at full width"))


def pruned_config(supernet: Supernet, model: Any, frozen: fx.GraphModule | None = None) -> Any:
    """The config of ``model`` (a Hugging Face model, or its config) with the sizes of the
    supernet's current subnet (see the module doc); ``model``'s own config is untouched.

    Args:
        supernet: the supernet converted from ``model``, at the chosen widths.
        model: the original model, or its config (whose ``architectures`` names the class);
            by default the class and config that ``convert`` recorded from the model.
        frozen: ``fxrazor.freeze(supernet)`` when already made (else it is made here).

    Raises:
        PretrainedExportError: the widths differ across layers, or are no config size.
        UnsupportedModelError: ``model`` is no Hugging Face model or config, or the
            frozen subnet does not hold its parameters.
    """
    cls, config = _source(model, "pruned_config")
    frozen = freeze(supernet) if frozen is None else frozen
    return _solve(supernet, cls, config, frozen)


# ---- the model and its files ---------------------------------------------------------------
def _check_ties(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Weights the model ties (lm_head and the embedding) must be equal in the subnet."""
    owners: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(p), []).append(name)
    for names in owners.values():
        present = [n for n in names if n in params]
        for first, other in zip(present, present[1:], strict=False):
            a, b = params[first], params[other]
            if a.shape != b.shape or not torch.equal(a, b):
                raise PretrainedExportError(
                    f"{first} and {other} are tied in the model but differ in the subnet; "
                    f"prune them alike (one unit) or untie them in the config first")


def _example_kwargs(supernet: Supernet, frozen: fx.GraphModule) -> dict[str, Any] | None:
    names = [str(n.target) for n in frozen.graph.nodes if n.op == "placeholder"]
    args = tuple(supernet.example_args)
    return dict(zip(names, args, strict=True)) if len(names) == len(args) else None


def _compare(frozen_out: Any, model_out: Any, atol: float) -> list[str]:
    """Names of the outputs that differ (the frozen one's keys, or its first tensor)."""
    if isinstance(frozen_out, torch.Tensor):  # a ModelOutput's first field, or the tensor
        pairs = [("output", frozen_out,
                  model_out if isinstance(model_out, torch.Tensor) else model_out[0])]
    elif isinstance(frozen_out, Mapping):
        pairs = [(k, v, model_out[k]) for k, v in frozen_out.items()
                 if isinstance(v, torch.Tensor) and k in model_out]
    else:
        return []
    return [k for k, a, b in pairs
            if a.shape != b.shape or not torch.allclose(a, b, atol=atol, rtol=1e-4)]


def to_pretrained(supernet: Supernet, model: Any = None, *, check: bool = True,
                  atol: float = 1e-4) -> nn.Module:
    """A new model of ``model``'s class with the pruned config and the subnet's weights
    (in eval mode, in the subnet's dtype). ``check`` runs it and the frozen subnet on the
    supernet's example inputs and raises :class:`~fxrazor.errors.PretrainedExportError`
    where their outputs differ beyond ``atol``. Builds the model once at full precision
    on the CPU (its random initialisation is then overwritten) and holds it with the frozen
    subnet: twice the pruned model's memory for the moment.
    """
    return _build(supernet, model, check, atol, "to_pretrained")


def _recorded(supernet: Supernet, verb: str) -> tuple[type[nn.Module], Any]:
    if SOURCE_KEY not in supernet.graph_module.meta:  # recorded by fxrazor.convert
        raise UnsupportedModelError(f"{verb}: no model with a config was converted; pass the original model as `model`")
    return supernet.graph_module.meta[SOURCE_KEY]


def _build(supernet: Supernet, model: Any, check: bool, atol: float, verb: str) -> nn.Module:
    cls, config = _recorded(supernet, verb) if model is None else _source(model, verb)
    frozen = freeze(supernet)
    new_config = _solve(supernet, cls, config, frozen)
    params = _params(frozen)
    dtypes = {p.dtype for p in params.values() if p.is_floating_point()}
    pruned = cls(new_config)
    if len(dtypes) == 1:
        pruned.to(dtypes.pop())
    _check_ties(pruned, params)
    state = frozen.state_dict()
    own = pruned.state_dict()
    pruned.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    pruned.eval()
    inputs = _example_kwargs(supernet, frozen) if check else None
    if inputs is not None:
        with torch.no_grad():
            frozen.eval()
            wrong = _compare(frozen(**inputs), pruned(**inputs), atol)
        if wrong:
            raise PretrainedExportError(
                f"the {cls.__name__} built from the pruned config computes other {wrong} than "
                f"the frozen subnet on the example inputs: the config's sizes do not mean what "
                f"the units pruned (e.g. head dims pruned, split_dims='largest'); prune whole "
                f"heads (split_dims='outer')")
    return pruned


def save_pretrained(supernet: Supernet, directory: str | Path, model: Any = None, *,
                    check: bool = True, **save_kwargs: Any) -> nn.Module:
    """Write the supernet's current subnet to ``directory`` as ``model``'s class with a
    pruned config and safetensors weights: ``type(model).from_pretrained(directory)`` (or
    the matching ``AutoModelFor*``) loads it, computing what ``fxrazor.freeze(supernet)``
    computes.

    Args:
        supernet: a supernet converted from ``model`` (e.g. with ``split_dims="outer"``,
            so attention prunes whole heads or KV groups), at the chosen widths.
        directory: where to write ``config.json`` and ``model.safetensors``.
        model: the original model, or its config (whose ``architectures`` names the class);
            by default the class and config that ``convert`` recorded from the model.
        check: compare the new model's outputs with the frozen subnet's first
            (see :func:`to_pretrained`).
        save_kwargs: passed on to the model's ``save_pretrained``.

    Returns:
        The pruned model that was written.

    Raises:
        PretrainedExportError: the widths differ across layers (the message names them),
            are no size of the config, or tied weights were pruned apart.
        UnsupportedModelError: ``model`` is not a Hugging Face model or config, or the
            subnet does not hold its parameters by their names.
    """
    pruned = _build(supernet, model, check, 1e-4, "save_pretrained")
    pruned.save_pretrained(str(directory), **save_kwargs)  # type: ignore[operator]
    logger.info("saved the pruned %s to %s", type(pruned).__name__, directory)
    return pruned
