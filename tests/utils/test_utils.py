"""Tests for fxrazor.utils."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from fxrazor.errors import FxRazorError, IndexOverlapError, InvalidArgumentError
from fxrazor.utils import (
    IndexDict,
    add_prefix,
    find_latest_checkpoint,
    get_module_device,
    get_package_placeholder,
    get_placeholder,
    make_divisible,
    parse_values,
    set_requires_grad,
)

# ---------------------------------------------------------------- make_divisible


@pytest.mark.parametrize(
    ("value", "divisor", "min_value", "expected"),
    [
        (32, 8, None, 32),  # already a multiple
        (35, 8, None, 32),  # 35 -> nearest multiple 32; 32 >= 0.9 * 35
        (36, 8, None, 40),  # 36 is halfway: rounds up
        (10, 8, None, 16),  # nearest is 8, but 8 < 0.9 * 10, so one divisor is added
        (3, 8, None, 8),  # never below the divisor
        (3, 8, 16, 16),  # never below min_value
        (100, 1, None, 100),
        (67, 16, None, 64),  # 64 >= 60.3
    ],
)
def test_make_divisible(value, divisor, min_value, expected):
    assert make_divisible(value, divisor, min_value) == expected


def test_make_divisible_raises_min_value_to_the_divisor():
    # MMRazor: min_value < divisor is taken as the divisor. Before, (3, 8, 1) rounded 3
    # to 0, kept min_value 1, and the min_ratio step gave 1 + 8 = 9 (no multiple of 8).
    assert make_divisible(3, 8, 1) == 8
    assert make_divisible(3, 8, 0) == 8
    assert make_divisible(11, 4, 1) == 12  # 12 >= 0.9 * 11 after rounding half up
    assert make_divisible(1, 1, 1) == 1


def test_make_divisible_min_ratio():
    # 19 rounds to 16; 16 >= 0.8 * 19 but < 0.9 * 19
    assert make_divisible(19, 8, min_ratio=0.8) == 16
    assert make_divisible(19, 8, min_ratio=0.9) == 24


@pytest.mark.parametrize("divisor", [0, -8, 2.5, True])
def test_make_divisible_rejects_bad_divisor(divisor):
    with pytest.raises(InvalidArgumentError, match="divisor"):
        make_divisible(32, divisor)


# ---------------------------------------------------------------- parse_values


def test_parse_values_gives_one_list_per_triple():
    # MMRazor returns [_range_to_list(i) for i in candidate_lists]: one list per triple
    assert parse_values([(16, 48, 16), (3, 7, 2), [1, 1, 1]]) == [[16, 32, 48], [3, 5, 7], [1]]
    assert parse_values([(1, 4, 2)]) == [[1, 3]]  # max not reached exactly
    assert parse_values([]) == []


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([(1, 4)], "triple"),
        ([(1, 4, 1, 2)], "triple"),
        (["abc"], "triple"),
        ([5], "triple"),
        ([(1.0, 4, 1)], "ints"),
        ([(1, 4, 0)], "step"),
        ([(1, 4, -1)], "step"),
        ([(5, 4, 1)], "min 5 > max 4"),
    ],
)
def test_parse_values_rejects_bad_items(bad, match):
    with pytest.raises(InvalidArgumentError, match=match):
        parse_values(bad)


def test_parse_values_error_names_item_position():
    with pytest.raises(FxRazorError, match="item 1"):
        parse_values([(1, 2, 1), (3, 2, 1)])


# ---------------------------------------------------------------- add_prefix / grads / device


def test_add_prefix_leaves_input_untouched():
    inputs = {"loss": 1.0, "acc": 2}
    assert add_prefix(inputs, "teacher") == {"teacher.loss": 1.0, "teacher.acc": 2}
    assert inputs == {"loss": 1.0, "acc": 2}
    assert add_prefix({}, "x") == {}


def test_set_requires_grad_single_and_list():
    a, b = nn.Linear(2, 2), nn.Conv2d(1, 1, 1)
    set_requires_grad(a)
    assert not any(p.requires_grad for p in a.parameters())
    assert all(p.requires_grad for p in b.parameters())
    set_requires_grad([a, b], False)
    assert not any(p.requires_grad for p in b.parameters())
    set_requires_grad([a, b], True)
    assert all(p.requires_grad for p in [*a.parameters(), *b.parameters()])


def test_set_requires_grad_skips_none_entries():
    # MMRazor skips None networks (an optional teacher or discriminator that is absent)
    a = nn.Linear(2, 2)
    set_requires_grad([None, a], False)
    assert not any(p.requires_grad for p in a.parameters())


def test_set_requires_grad_rejects_non_module():
    with pytest.raises(InvalidArgumentError, match="nn.Module"):
        set_requires_grad([nn.Linear(1, 1), "not a module"])


def test_get_module_device_cases():
    assert get_module_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert get_module_device(nn.ReLU()) == torch.device("cpu")
    bn = nn.BatchNorm2d(2, affine=False)  # buffers only
    bn.to("meta")
    assert get_module_device(bn) == torch.device("meta")
    lin = nn.Linear(2, 2).to("meta")
    assert get_module_device(lin) == torch.device("meta")


def test_get_module_device_rejects_mixed_devices():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).to("meta"))
    with pytest.raises(InvalidArgumentError, match="several devices"):
        get_module_device(model)


# ---------------------------------------------------------------- find_latest_checkpoint


def _touch(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_bytes(b"")
    return path


def test_find_latest_checkpoint_by_number(tmp_path):
    for name in ["iter_9.pth", "iter_100.pth", "iter_20.pth", "notes.pth", "iter_500.txt"]:
        _touch(tmp_path, name)
    # numeric, not lexicographic: 100 > 20 > 9; the .txt file has another suffix
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "iter_100.pth")
    assert find_latest_checkpoint(str(tmp_path), suffix="txt") == str(tmp_path / "iter_500.txt")


def test_find_latest_checkpoint_epochs_and_none(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    _touch(tmp_path, "epoch_3.pth")
    _touch(tmp_path, "best_epoch_12.pth")
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "best_epoch_12.pth")
    assert find_latest_checkpoint(tmp_path / "missing_dir") is None


def test_find_latest_checkpoint_prefers_latest_file(tmp_path):
    # MMRazor returns path/latest.{suffix} when it exists (before: ignored, no number)
    _touch(tmp_path, "epoch_30.pth")
    _touch(tmp_path, "latest.pth")
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "latest.pth")
    assert find_latest_checkpoint(tmp_path, suffix="ckpt") is None


def test_find_latest_checkpoint_pointer_file(tmp_path, monkeypatch):
    _touch(tmp_path, "epoch_9.pth")
    chosen = _touch(tmp_path, "epoch_2.pth")
    (tmp_path / "last_checkpoint").write_text(str(chosen) + "\n")
    assert find_latest_checkpoint(tmp_path) == str(chosen)
    # a relative name is read relative to the directory, not the current directory
    (tmp_path / "last_checkpoint").write_text("epoch_2.pth")
    monkeypatch.chdir("/")
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "epoch_2.pth")


def test_find_latest_checkpoint_dangling_pointer_falls_back(tmp_path):
    _touch(tmp_path, "epoch_9.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "gone.pth"))
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "epoch_9.pth")


# ---------------------------------------------------------------- placeholders


@pytest.mark.parametrize("factory", [get_placeholder, get_package_placeholder])
def test_placeholder_raises_import_error_on_use(factory):
    placeholder = factory("missing_pkg")
    with pytest.raises(ImportError, match=r"pip install missing_pkg"):
        placeholder()
    with pytest.raises(ImportError, match="missing_pkg"):
        placeholder(1, key=2)
    with pytest.raises(ImportError, match="missing_pkg"):
        _ = placeholder.some_attribute


def test_placeholder_can_be_subclassed_but_not_instantiated():
    Base = get_placeholder("missing_pkg")

    class Child(Base):  # defining the class must work so modules still import
        pass

    with pytest.raises(ImportError, match="missing_pkg"):
        Child()


def test_placeholder_keeps_dunder_lookups_normal():
    placeholder = get_placeholder("missing_pkg")
    # tools (inspect, doctest) probe dunders and expect AttributeError
    assert getattr(placeholder, "__wrapped__", None) is None
    assert isinstance(placeholder.__name__, str)


# ---------------------------------------------------------------- IndexDict


def test_index_dict_sorts_by_start():
    d = IndexDict()
    d[(10, 12)] = "c"
    d[(0, 4)] = "a"
    d[(4, 10)] = "b"
    assert list(d) == [(0, 4), (4, 10), (10, 12)]
    assert list(d.values()) == ["a", "b", "c"]


def test_index_dict_replacing_a_key_keeps_order():
    d = IndexDict({(5, 6): 1, (0, 2): 2})
    d[(0, 2)] = 3
    assert list(d.items()) == [((0, 2), 3), ((5, 6), 1)]


@pytest.mark.parametrize("new", [(1, 3), (-5, 1), (1, 2), (0, 10), (0, 1)])
def test_index_dict_overlap_names_both_ranges(new):
    d = IndexDict()
    d[(0, 2)] = "x"
    with pytest.raises(IndexOverlapError) as info:
        d[new] = "y"
    assert str(new) in str(info.value) and "(0, 2)" in str(info.value)
    assert list(d) == [(0, 2)]  # the failed insert left no trace


def test_index_dict_contains_means_overlaps():
    # MMRazor: `index in d` is True when the range overlaps a key (before: exact keys only)
    d = IndexDict({(2, 4): "a", (6, 9): "b"})
    assert (2, 4) in d and (3, 5) in d and (0, 3) in d and (0, 10) in d and (7, 8) in d
    assert (4, 6) not in d and (0, 2) not in d and (9, 12) not in d
    with pytest.raises(InvalidArgumentError):
        "a" in d  # noqa: B015
    d[(2, 4)] = "c"  # an existing key is still replaced, not refused
    assert d[(2, 4)] == "c"


def test_index_dict_adjacent_ranges_do_not_overlap():
    d = IndexDict({(0, 2): 0, (2, 4): 1})
    d.update({(4, 5): 2})
    assert list(d) == [(0, 2), (2, 4), (4, 5)]


def test_index_dict_validates_through_every_entry_point():
    with pytest.raises(IndexOverlapError):
        IndexDict({(0, 3): 0, (2, 4): 1})
    d = IndexDict({(0, 3): 0})
    with pytest.raises(IndexOverlapError):
        d.update({(1, 2): 1})
    with pytest.raises(IndexOverlapError):
        d.setdefault((2, 5), 1)
    assert d.setdefault((3, 5), 7) == 7
    assert list(d) == [(0, 3), (3, 5)]


@pytest.mark.parametrize(
    "key", [(2, 2), (3, 1), (0,), (0, 1, 2), [0, 1], "ab", (0.0, 1), (True, 2)]
)
def test_index_dict_rejects_bad_keys(key):
    d = IndexDict()
    with pytest.raises(InvalidArgumentError):
        d[key] = 0


def test_index_dict_copy_and_pickle_keep_type():
    d = IndexDict({(2, 3): "b", (0, 1): "a"})
    for clone in (d.copy(), pickle.loads(pickle.dumps(d))):
        assert type(clone) is IndexDict
        assert list(clone.items()) == [((0, 1), "a"), ((2, 3), "b")]
