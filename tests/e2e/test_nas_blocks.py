"""Op search and channel search together: NAS op mutables inside converted models.

A SPOS-style CNN of one-shot choice blocks and a DARTS-style cell of differentiable ops and
a route. Oracles: full width == the original model, frozen == supernet for every op and
width choice, the zero-invariance oracle, and unit membership written out by hand."""

from __future__ import annotations

import copy
import pickle
import random

import pytest
import torch
from oracles import count_params
from torch import nn

import fxrazor
from fxrazor.errors import FxRazorError, InvalidChoiceError
from fxrazor.mutables.diff_mutable import DiffChoiceRoute, DiffMutableOP, OneHotMutableOP
from fxrazor.mutables.mutable_module import OneShotMutableOP
from fxrazor.verify.oracle import zero_pruned_channels

__all__: list[str] = []

CANDIDATES = ("conv3x3", "conv5x5", "dwsep", "mix", "skip")


# ---- the search spaces -------------------------------------------------------------------------
class ChannelMix(nn.Module):
    """An MLP over channels at each pixel, with literal view sizes (``self.c``) that must
    follow the pruned width of the block's input."""

    def __init__(self, c: int, inner: int, side: int) -> None:
        super().__init__()
        self.c, self.side = c, side
        self.fc1 = nn.Linear(c, inner)
        self.fc2 = nn.Linear(inner, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = x.reshape(b, self.c, self.side * self.side).transpose(1, 2)
        y = self.fc2(torch.relu(self.fc1(y)))
        return y.transpose(1, 2).reshape(b, self.c, self.side, self.side)


def _widths(sn: fxrazor.Supernet, mode: str = "random") -> dict:
    """Sampled widths of the free channel units only: the test sets the op and value
    mutables itself (``sn.sample_choices`` would draw those too)."""
    names = {u.name for u in sn.units}
    return {k: v for k, v in sn.sample_choices(mode).items() if k in names}


def spos_candidates(c: int, out: int, inner: int, side: int) -> dict[str, nn.Module]:
    """conv3x3, conv5x5 with an inner width, depthwise-separable and (when ``c == out``)
    a channel MLP and a skip."""
    cands: dict[str, nn.Module] = {
        "conv3x3": nn.Sequential(nn.Conv2d(c, out, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(out), nn.ReLU()),
        "conv5x5": nn.Sequential(nn.Conv2d(c, inner, 5, padding=2), nn.BatchNorm2d(inner),
                                 nn.ReLU(), nn.Conv2d(inner, out, 1)),
        "dwsep": nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU(),
                               nn.Conv2d(c, inner, 1), nn.ReLU(), nn.Conv2d(inner, out, 1)),
    }
    if c == out:
        cands["mix"] = ChannelMix(c, inner, side)
        cands["skip"] = nn.Identity()
    return cands


class SPOSNet(nn.Module):
    """stem conv+BN+ReLU, two width-keeping choice blocks, one that widens, a head."""

    def __init__(self, c: int = 8, wide: int = 12, side: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.blocks = nn.ModuleList([
            OneShotMutableOP(spos_candidates(c, c, 10, side)),
            OneShotMutableOP(spos_candidates(c, c, 6, side)),
            OneShotMutableOP(spos_candidates(c, wide, 10, side)),
        ])
        self.head = nn.Linear(wide, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


def _darts_ops(c: int) -> dict[str, nn.Module]:
    return {
        "sep3": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, groups=c),
                              nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)),
        "conv3": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)),
        "pool": nn.AvgPool2d(3, 1, 1),
        "skip": nn.Identity(),
    }


class DartsNet(nn.Module):
    """A stem, one DARTS cell (two preprocessing convs, a node mixing two DiffMutableOPs, a
    node routed from three inputs) and a classifier over the concatenated nodes.
    ``one_hot`` makes the second edge a OneHotMutableOP."""

    def __init__(self, c: int = 6, one_hot: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c))
        self.pre0 = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * c, c, 1), nn.BatchNorm2d(c))
        self.pre1 = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * c, c, 1), nn.BatchNorm2d(c))
        self.edge0 = DiffMutableOP(_darts_ops(c))
        self.edge1 = (OneHotMutableOP if one_hot else DiffMutableOP)(_darts_ops(c))
        self.route = DiffChoiceRoute({
            "from0": nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)),
            "from1": nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.ReLU(), nn.Conv2d(2 * c, c, 1)),
            "from2": nn.Identity(),
        }, with_arch_param=True)
        self.classifier = nn.Conv2d(2 * c, 4, 1)
        self.alphas = nn.ParameterList([nn.Parameter(torch.randn(4)),
                                        nn.Parameter(torch.randn(4)),
                                        nn.Parameter(torch.randn(3))])
        for op, alpha in zip((self.edge0, self.edge1, self.route), self.alphas, strict=True):
            op.set_forward_args(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        s0, s1 = self.pre0(s), self.pre1(s)
        n2 = self.edge0(s0) + self.edge1(s1)
        n3 = self.route([s0, s1, n2])
        return self.classifier(torch.cat([n2, n3], dim=1))


def _spos() -> tuple[SPOSNet, torch.Tensor, fxrazor.Supernet]:
    torch.manual_seed(0)
    model, x = SPOSNet().eval(), torch.randn(2, 3, 16, 16)
    return model, x, fxrazor.convert(model, x)


def _ops(sn: fxrazor.Supernet) -> list[OneShotMutableOP]:
    return [sn.graph_module.get_submodule(f"blocks.{i}") for i in range(3)]


def _members(sn: fxrazor.Supernet, name: str) -> set[tuple[str, str]]:
    return {(m.target, m.role) for m in sn.unit_members(name)}


def _unit_of(sn: fxrazor.Supernet, target: str, role: str) -> str:
    return next(u.name for u in sn.units if (target, role) in _members(sn, u.name))


def _no_fxrazor_types(module: nn.Module) -> bool:
    return not any(type(m).__module__.startswith("fxrazor") for m in module.modules())


# ---- SPOS ---------------------------------------------------------------------------------------
def test_spos_units_span_the_choice_blocks() -> None:
    _, _, sn = _spos()
    stem = _members(sn, _unit_of(sn, "stem.0", "out"))
    # the stem's channels: every candidate of the two width-keeping blocks reads and
    # writes them, and the first layer of every candidate of the widening block reads them
    for b in (0, 1, 2):
        assert {(f"blocks.{b}._candidates.conv3x3.0", "in"),
                (f"blocks.{b}._candidates.conv5x5.0", "in"),
                (f"blocks.{b}._candidates.dwsep.0", "in")} <= stem
    for b in (0, 1):
        assert {(f"blocks.{b}._candidates.conv3x3.0", "out"),
                (f"blocks.{b}._candidates.conv5x5.3", "out"),
                (f"blocks.{b}._candidates.dwsep.4", "out"),
                (f"blocks.{b}._candidates.mix.fc1", "in"),
                (f"blocks.{b}._candidates.mix.fc2", "out")} <= stem
    assert ("blocks.2._candidates.conv3x3.0", "out") not in stem
    # the widening block's outputs meet in the head's input
    wide = _members(sn, _unit_of(sn, "head", "in"))
    assert wide == {("blocks.2._candidates.conv3x3.0", "out"),
                    ("blocks.2._candidates.conv3x3.1", "channels"),
                    ("blocks.2._candidates.conv5x5.3", "out"),
                    ("blocks.2._candidates.dwsep.4", "out"), ("head", "in")}
    # inner widths are each their own unit
    assert _members(sn, "blocks.1._candidates.conv5x5.0") == {
        ("blocks.1._candidates.conv5x5.0", "out"), ("blocks.1._candidates.conv5x5.1", "channels"),
        ("blocks.1._candidates.conv5x5.3", "in")}
    assert len(sn.units) == 2 + 2 * 3 + 2  # stem, wide, 3 inner widths x 2 blocks, 2 in the last
    assert not sn.analysis.pinned or all("model" in r or "input" in r
                                         for g in sn.analysis.pinned for r in g.reasons)


def test_spos_full_width_equals_the_model_for_every_candidate() -> None:
    model, x, sn = _spos()
    with torch.no_grad():
        for name in CANDIDATES:
            for op, original in zip(_ops(sn), model.blocks, strict=True):
                if name in op.choices:
                    op.current_choice = original.current_choice = name
            torch.testing.assert_close(sn(x), model(x), rtol=0, atol=0)


def test_spos_runs_one_candidate_per_forward() -> None:
    _, x, sn = _spos()
    ran: list[str] = []
    for op in _ops(sn):
        for name, cand in op.candidates.items():
            cand.register_forward_hook(lambda *_, n=name: ran.append(n))
    for op, name in zip(_ops(sn), ("dwsep", "skip", "conv5x5"), strict=True):
        op.current_choice = name
    sn(x)
    assert ran == ["dwsep", "skip", "conv5x5"]


@pytest.mark.parametrize("rounds", [pytest.param(15, id="fast"),
                                    pytest.param(200, id="200", marks=pytest.mark.slow)])
def test_spos_frozen_equals_supernet_for_random_ops_and_widths(rounds: int) -> None:
    _, x, sn = _spos()
    random.seed(0)
    total = count_params(sn)
    biggest: dict[tuple[str, ...], int] = {}  # params at full width, per op choice
    with torch.no_grad():
        for _ in range(rounds):
            ops = tuple(random.choice(op.choices) for op in _ops(sn))
            for op, name in zip(_ops(sn), ops, strict=True):
                op.current_choice = name
            if ops not in biggest:
                sn.set_choices(_widths(sn, "max"))
                biggest[ops] = count_params(fxrazor.freeze(sn))
            choices = _widths(sn)
            sn.set_choices(choices)
            frozen = fxrazor.freeze(sn)
            torch.testing.assert_close(frozen(x), sn(x), rtol=1e-5, atol=1e-5)
            assert _no_fxrazor_types(frozen)
            params = count_params(frozen)
            assert params < total
            assert params < biggest[ops] or choices == _widths(sn, "max")


def test_spos_frozen_passes_the_zero_oracle() -> None:
    model, x, sn = _spos()
    random.seed(1)
    for _ in range(5):
        for op, original in zip(_ops(sn), model.blocks, strict=True):
            op.current_choice = original.current_choice = random.choice(op.choices)
        sn.set_choices(_widths(sn))
        with torch.no_grad():
            torch.testing.assert_close(zero_pruned_channels(model, sn)(x), fxrazor.freeze(sn)(x),
                                       rtol=1e-4, atol=1e-5)


def test_spos_freeze_inlines_the_chosen_graph_and_needs_a_choice() -> None:
    _, x, sn = _spos()
    ops = _ops(sn)
    ops[0].current_choice, ops[1].current_choice, ops[2].current_choice = \
        "conv3x3", "skip", "mix" if "mix" in ops[2].choices else "dwsep"
    sn.set_choices({sn.units[0].name: 5})
    frozen = fxrazor.freeze(sn)
    assert isinstance(frozen.get_submodule("blocks.0"), nn.Sequential) or \
        isinstance(frozen.get_submodule("blocks.0"), torch.fx.GraphModule)
    assert frozen.get_submodule("stem.0").out_channels == 5
    ops[1].current_choice = None  # runs every candidate: no single subnet
    with pytest.raises(InvalidChoiceError, match="'blocks.1' has no current choice"):
        fxrazor.freeze(sn)


def test_spos_supernet_copies_pickles_and_keeps_state_keys() -> None:
    model, x, sn = _spos()
    keys = set(sn.graph_module.state_dict())
    assert keys == set(model.state_dict())  # the model's own names
    _ops(sn)[0].current_choice = "conv5x5"
    sn.set_choices(_widths(sn, "min"))
    expected = sn(x)
    for other in (copy.deepcopy(sn), pickle.loads(pickle.dumps(sn))):
        torch.testing.assert_close(other(x), expected)
        other.set_choices(_widths(other, "max"))
        other.graph_module.get_submodule("blocks.0").current_choice = "conv3x3"
        torch.testing.assert_close(other(x), model(x))
    with sn.full_width():  # the graph at full width, whatever the units' choices
        _ops(sn)[0].current_choice = "conv3x3"
        torch.testing.assert_close(sn.graph_module(x), model(x))


def test_spos_bad_op_choice_names_the_candidates_and_changes_nothing() -> None:
    _, x, sn = _spos()
    op = _ops(sn)[1]
    op.current_choice = "dwsep"
    before = sn(x)
    with pytest.raises(FxRazorError, match="conv7x7") as err:
        op.current_choice = "conv7x7"
    assert isinstance(err.value, InvalidChoiceError) and "conv3x3" in str(err.value)
    assert op.current_choice == "dwsep"
    torch.testing.assert_close(sn(x), before, rtol=0, atol=0)


def test_spos_op_choices_and_widths_round_trip_through_subnet_configs() -> None:
    from fxrazor.structures.subnet.fix_subnet import export_fix_subnet, load_fix_subnet

    _, x, sn = _spos()
    for op, name in zip(_ops(sn), ("mix", "conv5x5", "dwsep"), strict=True):
        op.current_choice = name
    sn.set_choices(_widths(sn, "min"))
    fix_subnet, static = export_fix_subnet(sn)  # op choices and widths in one config
    assert static is None
    assert {k: v["chosen"] for k, v in fix_subnet.items() if k.startswith("graph_module.blocks")
            } == {"graph_module.blocks.0": "mix", "graph_module.blocks.1": "conv5x5",
                  "graph_module.blocks.2": "dwsep"}
    _, _, fresh = _spos()
    load_fix_subnet(fresh, fix_subnet)
    assert [op.choices for op in _ops(fresh)] == [["mix"], ["conv5x5"], ["dwsep"]]
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), sn(x), rtol=0, atol=0)
        torch.testing.assert_close(fxrazor.freeze(fresh)(x), sn(x), rtol=1e-5, atol=1e-5)


def test_a_leaf_op_type_stays_a_leaf() -> None:
    model, x = SPOSNet().eval(), torch.randn(1, 3, 16, 16)
    sn = fxrazor.convert(model, x, leaf_modules=[OneShotMutableOP])
    assert {u.name for u in sn.units} == set()  # every channel meets an opaque block
    torch.testing.assert_close(sn(x), model(x))


# ---- DARTS --------------------------------------------------------------------------------------
def _darts(one_hot: bool = False) -> tuple[DartsNet, torch.Tensor, fxrazor.Supernet]:
    torch.manual_seed(0)
    model, x = DartsNet(one_hot=one_hot).eval(), torch.randn(2, 3, 8, 8)
    sn = fxrazor.convert(model, x)
    # the supernet's own arch params start from the alphas bound in the model
    for name, alpha in zip(("edge0", "edge1", "route"), model.alphas, strict=True):
        assert torch.equal(sn.arch_params()[name], alpha)
    return model, x, sn


def test_darts_units_span_the_mixed_ops_and_the_route() -> None:
    _, _, sn = _darts()
    cell = _members(sn, _unit_of(sn, "pre0.1", "out"))
    for edge in ("edge0", "edge1"):
        assert {(f"{edge}._candidates.sep3.1", "in"), (f"{edge}._candidates.conv3.1", "in"),
                (f"{edge}._candidates.conv3.1", "out"), (f"{edge}._candidates.sep3.3", "channels")
                } <= cell
    assert {("pre1.1", "out"), ("route._edges.from0.1", "in"), ("route._edges.from0.1", "out"),
            ("route._edges.from1.0", "in"), ("route._edges.from1.2", "out"),
            ("classifier", "in")} <= cell
    assert _members(sn, "route._edges.from1.0") == {("route._edges.from1.0", "out"),
                                                     ("route._edges.from1.2", "in")}
    assert isinstance(sn.graph_module.get_submodule("edge0"), DiffMutableOP)
    assert isinstance(sn.graph_module.get_submodule("route"), DiffChoiceRoute)


@pytest.mark.parametrize("one_hot", [False, True])
def test_darts_full_width_equals_the_model(one_hot: bool) -> None:
    model, x, sn = _darts(one_hot)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        # a OneHotMutableOP draws its candidate from the probabilities on every forward
        torch.manual_seed(3)
        ours = sn(x)
        torch.manual_seed(3)
        return ours, model(x)

    with torch.no_grad():
        torch.testing.assert_close(*both(), rtol=0, atol=0)
        # the supernet owns its arch params: moved alike, the outputs stay equal
        model.alphas[2].add_(1.0)
        sn.arch_params()["route"].add_(1.0)
        torch.testing.assert_close(*both(), rtol=0, atol=0)
    sn.set_choices(_widths(sn, "min"))
    sn(x).square().sum().backward()  # and trains them, at any width
    trained = [sn.arch_params()[k] for k in ("edge0", "route")] + \
        ([] if one_hot else [sn.arch_params()["edge1"]])  # one-hot: the searcher reads
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in trained)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("one_hot", [False, True])
def test_darts_frozen_choice_equals_the_supernet_with_that_choice_fixed(one_hot: bool) -> None:
    _, x, sn = _darts(one_hot)
    random.seed(2)
    picks = [("conv3", "skip", ["from0", "from2"]), (["sep3", "pool"], "conv3", ["from1"]),
             ("pool", ["skip", "sep3", "conv3"], ["from2", "from1", "from0"])]
    with torch.no_grad():
        for e0, e1, route in picks:
            gm = sn.graph_module
            gm.edge0.current_choice, gm.edge1.current_choice = e0, e1
            gm.route.current_choice = route
            sn.set_choices(_widths(sn))
            frozen = fxrazor.freeze(sn)
            assert _no_fxrazor_types(frozen)
            fixed = copy.deepcopy(sn)
            for name, chosen in (("edge0", e0), ("edge1", e1), ("route", route)):
                fixed.graph_module.get_submodule(name).fix_chosen(chosen)
            torch.testing.assert_close(frozen(x), fixed(x), rtol=1e-5, atol=1e-5)
            assert count_params(frozen) < count_params(sn)
    scripted = torch.jit.script(frozen)  # the frozen route takes a list: annotated
    torch.testing.assert_close(scripted(x), frozen(x))


def test_darts_bad_route_choice_is_refused() -> None:
    _, x, sn = _darts()
    before = sn.graph_module.route.current_choice
    with pytest.raises(InvalidChoiceError, match="from9"):
        sn.graph_module.route.current_choice = ["from0", "from9"]
    assert sn.graph_module.route.current_choice == before
