"""Random DAG networks for fuzzing fxrazor's compiler, described by JSON-able specs.

A *spec* is a plain dict: ``seed``, ``in_channels``, ``nodes`` and ``heads``. Node ``k``
reads 1-3 earlier *ports* ``[node, port]`` (node 0 is the input image) and produces one
or more ports, each a feature map ``(N, C, 8, 8)``. :func:`build_network` turns a spec
into ``(model, example_input, has_channel_norm)``; the same spec always gives the same
weights and input, so a failing case printed as JSON can be replayed exactly::

    model, x, has_norm = build_network(json.loads(SPEC))

:func:`random_spec` draws a spec from any :class:`Chooser` (hypothesis data in the tests,
``random.Random`` in ``benchmarks/fuzz.py``); :func:`random_networks` is the hypothesis
strategy. The checks themselves live in ``test_fuzz.py`` (``check_network``). Patterns
that expose known library bugs are switched off by the ``ENABLE_*`` flags below.

Example:
    >>> import random
    >>> spec = random_spec(RandomChooser(random.Random(0)))
    >>> model, x, has_norm = build_network(spec)
    >>> model.spec == spec and x.shape[1] == spec["in_channels"]
    True
"""

from __future__ import annotations

import random
from typing import Any, Protocol

import torch
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "ENABLED_OPS", "MAX_NODES", "Chooser", "RandomChooser", "HypothesisChooser",
    "random_spec", "network_specs", "random_networks", "build_network", "FuzzNet",
    "port_channels",
]

# One flag per pattern, so that a pattern that exposes a library bug can be switched off
# (with the reason next to it) while the rest of the fuzzer keeps running in CI.
ENABLE_CONV = True
ENABLE_ADD = True
ENABLE_CAT = True
ENABLE_SPLIT = True
ENABLE_ONE_CHANNEL_PARTS = True
ENABLE_SE = True
ENABLE_SHUFFLE = True
ENABLE_SPLIT_AFTER_SHUFFLE = True
ENABLE_LINEAR = True
ENABLE_GROUP_NORM = True
ENABLE_SHARED = True
ENABLE_UNKNOWN = True

ENABLED_OPS: list[str] = [op for op, on in [
    ("conv", ENABLE_CONV), ("add", ENABLE_ADD), ("cat", ENABLE_CAT), ("split", ENABLE_SPLIT),
    ("se", ENABLE_SE), ("shuffle", ENABLE_SHUFFLE), ("linear", ENABLE_LINEAR),
    ("gn", ENABLE_GROUP_NORM), ("shared", ENABLE_SHARED), ("unknown", ENABLE_UNKNOWN),
] if on]
MAX_NODES = 10
MAX_CHANNELS = 12  # for tensors a layer creates; concatenations may reach MAX_CAT
MAX_CAT = 16
SIZE = 8
BATCH = 2
ACTS = {"relu": nn.ReLU, "gelu": nn.GELU, "hardswish": nn.Hardswish, "silu": nn.SiLU}
UNKNOWN_FNS = ("cumsum", "flip", "autograd", "wrapped")


def roll_channels(x: Tensor) -> Tensor:
    """A Python function kept as one opaque graph call (fx.wrap); it mixes channels."""
    return torch.roll(x, 1, 1) + x


torch.fx.wrap("roll_channels")


class _ReverseCumsum(torch.autograd.Function):
    """A custom autograd op; convert keeps it as one call (its channels pinned)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return torch.flip(torch.cumsum(torch.flip(x, [1]), 1), [1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.cumsum(grad, 1)


# ---------------------------------------------------------------------------- channel bookkeeping
def _divisors(c: int, among: tuple[int, ...]) -> list[int]:
    return [g for g in among if c % g == 0]


def _conv_outputs(node: dict, c: int) -> list[int]:
    g, out = node["groups"], node["out"]
    if node["k"] not in (1, 3) or c % g or out % g or g < 1:
        raise ValueError(f"bad conv {node} for {c} input channels")
    return [out]


def _split_outputs(node: dict, c: int) -> list[int]:
    kind = node["kind"]
    if kind == "split":
        sizes = node["sizes"]
    elif kind == "chunk":
        sizes = [(c + 1) // 2, c // 2]
    else:
        sizes = [node["at"], c - node["at"]]
    if sum(sizes) != c or min(sizes) < 1:
        raise ValueError(f"bad split {node} for {c} channels")
    return list(sizes)


def _node_outputs(node: dict, cs: list[int]) -> list[int]:
    """Channels of each output port of ``node`` given its inputs' channels (validated)."""
    op, c = node["op"], cs[0]
    arity = {"add": 2, "shared": 2, "cat": len(cs)}.get(op, 1)
    if len(cs) != arity or not 1 <= len(cs) <= 3:
        raise ValueError(f"{op} node {node} has {len(cs)} inputs")
    if op == "conv":
        return _conv_outputs(node, c)
    if op == "add":
        if node["proj"] != (cs[0] != cs[1]):
            raise ValueError(f"add {node}: a projection is needed iff channels differ {cs}")
        return [c]
    if op == "cat":
        return [sum(cs)]
    if op == "split":
        return _split_outputs(node, c)
    if op in ("se", "unknown"):
        return [c]
    if op in ("shuffle", "gn") and c % node["groups"]:
        raise ValueError(f"{op} {node}: groups do not divide {c}")
    if op in ("shuffle", "gn"):
        return [c]
    if op == "linear":
        return [node["out"]]
    if op == "shared":
        if cs[0] != cs[1]:
            raise ValueError(f"shared conv {node} on unequal channels {cs}")
        return [node["out"]] if node["combine"] else [node["out"], node["out"]]
    raise ValueError(f"unknown op {op!r}")


def port_channels(spec: dict) -> list[list[int]]:
    """Channels of every port, per node (index 0 is the input); raises on invalid specs."""
    ports = [[spec["in_channels"]]]
    for node in spec["nodes"]:
        ports.append(_node_outputs(node, [ports[i][p] for i, p in node["inputs"]]))
    return ports


# ---------------------------------------------------------------------------- the network
def _layers(node: dict, cs: list[int]) -> dict[str, nn.Module]:
    """The modules of one node, by name suffix (the forward finds them by these names)."""
    op, c = node["op"], cs[0]
    if op == "conv":
        layers: dict[str, nn.Module] = {"conv": nn.Conv2d(
            c, node["out"], node["k"], padding=node["k"] // 2, groups=node["groups"],
            bias=node["bias"])}
        if node["bn"]:
            layers["bn"] = nn.BatchNorm2d(node["out"])
        if node["act"]:
            layers["act"] = ACTS[node["act"]]()
        return layers
    if op == "add":
        return {"proj": nn.Conv2d(cs[1], c, 1)} if node["proj"] else {}
    if op == "se":
        return {"pool": nn.AdaptiveAvgPool2d(1), "reduce": nn.Conv2d(c, node["hidden"], 1),
                "relu": nn.ReLU(), "expand": nn.Conv2d(node["hidden"], c, 1)}
    if op == "linear":
        layers = {"fc": nn.Linear(c, node["out"])}
        if node["ln"]:
            layers["ln"] = nn.LayerNorm(node["out"])
        return layers
    if op == "gn":
        return {"gn": nn.GroupNorm(node["groups"], c)}
    if op == "shared":  # one conv, called on both inputs
        return {"conv": nn.Conv2d(c, node["out"], 1)}
    return {}


class FuzzNet(nn.Module):
    """Runs the nodes of a spec in order; the forward is plain Python over the spec."""

    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.spec = spec
        self.ports = ports = port_channels(spec)
        for k, node in enumerate(spec["nodes"]):
            cs = [ports[i][p] for i, p in node["inputs"]]
            for name, layer in _layers(node, cs).items():
                self.add_module(f"n{k}_{name}", layer)
        for j, head in enumerate(spec["heads"]):
            i, p = head["input"]
            feats = ports[i][p] * (SIZE * SIZE if head["kind"] == "flatten" else 1)
            self.add_module(f"h{j}_fc", nn.Linear(feats, head["out"]))

    # ---- forward, one method per op
    def forward(self, x):  # type: ignore[no-untyped-def]
        # No annotations: with postponed evaluation they are strings, which torch.fx copies
        # into the traced code as an unknown type name that torch.jit.script rejects.
        values: list[list[Any]] = [[x]]
        for k, node in enumerate(self.spec["nodes"]):
            ins = [values[i][p] for i, p in node["inputs"]]
            values.append(getattr(self, f"_run_{node['op']}")(k, node, ins))
        outs = []
        for j, head in enumerate(self.spec["heads"]):
            i, p = head["input"]
            y = values[i][p]
            if head["kind"] == "pool":
                y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            else:
                y = y.mean((2, 3)) if head["kind"] == "mean" else torch.flatten(y, 1)
            outs.append(getattr(self, f"h{j}_fc")(y))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run_conv(self, k: int, node: dict, ins: list) -> list:
        y = getattr(self, f"n{k}_conv")(ins[0])
        if node["bn"]:
            y = getattr(self, f"n{k}_bn")(y)
        return [getattr(self, f"n{k}_act")(y) if node["act"] else y]

    def _run_add(self, k: int, node: dict, ins: list) -> list:
        other = getattr(self, f"n{k}_proj")(ins[1]) if node["proj"] else ins[1]
        return [ins[0] + other]

    def _run_cat(self, k: int, node: dict, ins: list) -> list:
        return [torch.cat(ins, 1)]

    def _run_split(self, k: int, node: dict, ins: list) -> list:
        x = ins[0]
        # index the tuple: a traced value cannot be iterated with list()
        if node["kind"] == "split":
            parts = torch.split(x, node["sizes"], dim=1)
            return [parts[j] for j in range(len(node["sizes"]))]
        if node["kind"] == "chunk":
            parts = x.chunk(2, 1)
            return [parts[0], parts[1]]
        return [x[:, :node["at"]], x[:, node["at"]:]]

    def _run_se(self, k: int, node: dict, ins: list) -> list:
        s = getattr(self, f"n{k}_pool")(ins[0])
        s = getattr(self, f"n{k}_relu")(getattr(self, f"n{k}_reduce")(s))
        return [ins[0] * torch.sigmoid(getattr(self, f"n{k}_expand")(s))]

    def _run_shuffle(self, k: int, node: dict, ins: list) -> list:
        x, g = ins[0], node["groups"]
        if node["literal"]:  # sizes as int literals, which freeze must rewrite
            i, p = node["inputs"][0]
            n, c, h, w = BATCH, self.ports[i][p], SIZE, SIZE
        else:
            n, c, h, w = x.size()
        y = x.view(n, g, c // g, h, w).transpose(1, 2).contiguous()
        return [y.view(n, c, h, w)]

    def _run_linear(self, k: int, node: dict, ins: list) -> list:
        y = getattr(self, f"n{k}_fc")(ins[0].permute(0, 2, 3, 1))
        if node["ln"]:
            y = getattr(self, f"n{k}_ln")(y)
        return [y.permute(0, 3, 1, 2)]

    def _run_gn(self, k: int, node: dict, ins: list) -> list:
        return [getattr(self, f"n{k}_gn")(ins[0])]

    def _run_shared(self, k: int, node: dict, ins: list) -> list:
        conv = getattr(self, f"n{k}_conv")
        a, b = conv(ins[0]), conv(ins[1])
        return [a + b] if node["combine"] else [a, b]

    def _run_unknown(self, k: int, node: dict, ins: list) -> list:
        x, fn = ins[0], node["fn"]
        if fn == "cumsum":
            return [torch.cumsum(x, dim=1)]
        if fn == "flip":
            return [torch.flip(x, [1])]
        if fn == "autograd":
            return [_ReverseCumsum.apply(x)]
        return [roll_channels(x)]



# ---------------------------------------------------------------------------- drawing specs
class Chooser(Protocol):
    """Where random decisions come from: hypothesis data or a ``random.Random``."""

    def integer(self, lo: int, hi: int) -> int: ...

    def boolean(self) -> bool: ...


class RandomChooser:
    """Decisions from a ``random.Random`` (for the benchmark's fast, unshrunk runs)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def boolean(self) -> bool:
        return self.rng.random() < 0.5


class HypothesisChooser:
    """Decisions drawn from hypothesis data, so that failing specs shrink."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def boolean(self) -> bool:
        return self.draw(st.booleans())


Port = tuple[list[int], int]  # ([node, port], channels)


def _choose(ch: Chooser, items: list) -> Any:
    return items[ch.integer(0, len(items) - 1)]


def _pick(ch: Chooser, ports: list[Port], ok: Any = None) -> Port:
    """A port passing ``ok``; shrinks towards the most recent one (deep, short chains)."""
    cands = [p for p in ports if ok is None or ok(p[1])]
    return cands[len(cands) - 1 - ch.integer(0, len(cands) - 1)]


def _gen_conv(ch: Chooser, ports: list[Port]) -> dict:
    ref, c = _pick(ch, ports)
    modes = ["plain"] + ["depthwise"] * (c >= 2) + ["group"] * bool(_divisors(c, (2, 4)))
    mode = _choose(ch, modes)
    groups, out = 1, 0
    if mode == "plain":
        out = ch.integer(2, MAX_CHANNELS)
    elif mode == "depthwise":
        groups, out = c, c * ch.integer(1, max(1, MAX_CHANNELS // c))
    else:
        groups = _choose(ch, _divisors(c, (2, 4)))
        out = groups * ch.integer(1, MAX_CHANNELS // groups)
    return {"op": "conv", "inputs": [ref], "out": out, "k": _choose(ch, [1, 3]),
            "groups": groups, "bias": ch.boolean(), "bn": ch.boolean(),
            "act": _choose(ch, [None, *ACTS])}


def _gen_add(ch: Chooser, ports: list[Port]) -> dict:
    a, ca = _pick(ch, ports)
    b, cb = _pick(ch, ports, lambda c: c == ca) if ch.boolean() else _pick(ch, ports)
    return {"op": "add", "inputs": [a, b], "proj": ca != cb}


def _gen_cat(ch: Chooser, ports: list[Port]) -> dict:
    smallest = min(c for _, c in ports)
    first, total = _pick(ch, ports, lambda c: c + smallest <= MAX_CAT)
    refs = [first]
    for _ in range(ch.integer(2, 3) - 1):
        if total + smallest > MAX_CAT:
            break
        ref, c = _pick(ch, ports, lambda c, t=total: t + c <= MAX_CAT)
        refs.append(ref)
        total += c
    return {"op": "cat", "inputs": refs}


def _gen_split(ch: Chooser, ports: list[Port]) -> dict:
    least = 1 if ENABLE_ONE_CHANNEL_PARTS else 2  # channels of the smallest part
    ref, c = _pick(ch, ports, lambda c: c >= 2 * least)
    kind = _choose(ch, ["split", "chunk", "slice"])
    node: dict[str, Any] = {"op": "split", "inputs": [ref], "kind": kind}
    if kind == "slice":
        node["at"] = ch.integer(least, c - least)
    elif kind == "split":
        parts, left, sizes = ch.integer(2, min(3, c // least)), c, []
        for i in range(parts - 1):
            sizes.append(ch.integer(least, left - least * (parts - 1 - i)))
            left -= sizes[-1]
        node["sizes"] = [*sizes, left]
    return node


def _gen_se(ch: Chooser, ports: list[Port]) -> dict:
    ref, c = _pick(ch, ports)
    return {"op": "se", "inputs": [ref], "hidden": ch.integer(1, max(2, c // 2))}


def _gen_shuffle(ch: Chooser, ports: list[Port]) -> dict:
    ref, c = _pick(ch, ports, lambda c: bool(_divisors(c, (2, 3, 4))))
    return {"op": "shuffle", "inputs": [ref], "groups": _choose(ch, _divisors(c, (2, 3, 4))),
            "literal": ch.boolean()}


def _gen_linear(ch: Chooser, ports: list[Port]) -> dict:
    ref, _ = _pick(ch, ports)
    return {"op": "linear", "inputs": [ref], "out": ch.integer(2, MAX_CHANNELS),
            "ln": ch.boolean()}


def _gen_gn(ch: Chooser, ports: list[Port]) -> dict:
    ref, c = _pick(ch, ports)
    return {"op": "gn", "inputs": [ref], "groups": _choose(ch, sorted({1, c, *_divisors(c, (2, 4))}))}


def _gen_shared(ch: Chooser, ports: list[Port]) -> dict:
    a, ca = _pick(ch, ports)
    b, _ = _pick(ch, ports, lambda c: c == ca)
    return {"op": "shared", "inputs": [a, b], "out": ch.integer(2, MAX_CHANNELS),
            "combine": ch.boolean()}


def _gen_unknown(ch: Chooser, ports: list[Port]) -> dict:
    ref, _ = _pick(ch, ports)
    return {"op": "unknown", "inputs": [ref], "fn": _choose(ch, list(UNKNOWN_FNS))}


_GENERATORS = {"conv": _gen_conv, "add": _gen_add, "cat": _gen_cat, "split": _gen_split,
               "se": _gen_se, "shuffle": _gen_shuffle, "linear": _gen_linear, "gn": _gen_gn,
               "shared": _gen_shared, "unknown": _gen_unknown}
_FEASIBLE = {  # whether an op can take some existing port, by the ports' channel counts
    "cat": lambda cs: 2 * min(cs) <= MAX_CAT,
    "split": lambda cs: bool(cs) and max(cs) >= (2 if ENABLE_ONE_CHANNEL_PARTS else 4),
    "shuffle": lambda cs: any(_divisors(c, (2, 3, 4)) for c in cs),
}


def _is_shuffled(node: dict, cs: list[int], inputs_shuffled: list[bool]) -> bool:
    """Whether a node's outputs keep (or make) a shuffled channel order."""
    if node["op"] == "shuffle":
        return True
    keeps = node["op"] in ("add", "cat", "split", "se", "gn") or (
        node["op"] == "conv" and node["groups"] == cs[0])
    return keeps and any(inputs_shuffled)


def random_spec(ch: Chooser, max_nodes: int = MAX_NODES) -> dict:
    """Draw a valid network spec (see the module docstring) from ``ch``."""
    spec: dict[str, Any] = {"seed": ch.integer(0, 2**16), "in_channels": ch.integer(2, 6),
                            "nodes": [], "heads": []}
    ports: list[Port] = [([0, 0], spec["in_channels"])]
    shuffled: set[tuple] = set()  # ports whose channel order comes from a shuffle
    for k in range(1, ch.integer(1, max_nodes) + 1):
        splittable = [p for p in ports if ENABLE_SPLIT_AFTER_SHUFFLE
                      or tuple(p[0]) not in shuffled]
        ops = [op for op in ENABLED_OPS if _FEASIBLE.get(op, bool)(
            [c for _, c in (splittable if op == "split" else ports)])]
        op = _choose(ch, ops)
        node = _GENERATORS[op](ch, splittable if op == "split" else ports)
        channels = {tuple(ref): c for ref, c in ports}
        cs = [channels[tuple(ref)] for ref in node["inputs"]]
        outs = _node_outputs(node, cs)
        spec["nodes"].append(node)
        ports += [([k, p], c) for p, c in enumerate(outs)]
        if _is_shuffled(node, cs, [tuple(ref) in shuffled for ref in node["inputs"]]):
            shuffled.update((k, p) for p in range(len(outs)))
    heads = [ports[-1][0]] + ([_pick(ch, ports)[0]] if ch.boolean() else [])
    spec["heads"] = [{"input": ref, "kind": _choose(ch, ["pool", "mean", "flatten"]),
                      "out": ch.integer(1, 5)} for ref in heads]
    port_channels(spec)  # validate
    return spec


@st.composite
def network_specs(draw: Any, max_nodes: int = MAX_NODES) -> dict:
    """Hypothesis strategy of JSON-able network specs."""
    return random_spec(HypothesisChooser(draw), max_nodes)


def random_networks(max_nodes: int = MAX_NODES) -> st.SearchStrategy:
    """Hypothesis strategy of ``(model, example_input, has_channel_norm)``; ``model.spec``."""
    return network_specs(max_nodes).map(build_network)


# ---------------------------------------------------------------------------- building
def _randomize_norms(net: nn.Module) -> None:
    """Non-trivial norm statistics and affine parameters, so that they matter."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.3)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 2.0)


def build_network(spec: dict) -> tuple[FuzzNet, Tensor, bool]:
    """``(model in eval mode, example input, has_channel_norm)`` for a spec, reproducibly.

    ``has_channel_norm`` says whether a LayerNorm/GroupNorm normalises over channels:
    zeroing pruned channels there changes the statistics, so the zero oracle does not apply.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = FuzzNet(spec).eval()
        _randomize_norms(model)
        x = torch.randn(BATCH, spec["in_channels"], SIZE, SIZE)
    has_norm = any(n["op"] == "gn" or (n["op"] == "linear" and n["ln"]) for n in spec["nodes"])
    return model, x, has_norm
