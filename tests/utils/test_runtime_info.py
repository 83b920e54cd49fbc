"""RuntimeInfo: the process-wide training-progress store that replaces mmengine's MessageHub."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from fxrazor.errors import FxRazorError, InvalidArgumentError
from fxrazor.utils.runtime_info import RuntimeInfo


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    RuntimeInfo.reset()
    yield
    RuntimeInfo.reset()


def test_values_set_are_read_back_by_mmrazors_names() -> None:
    RuntimeInfo.set_info(epoch=2, max_epochs=3, iter=9, max_iters=10, work_dir="runs/a")
    assert (RuntimeInfo.epoch(), RuntimeInfo.max_epochs()) == (2, 3)
    assert (RuntimeInfo.iter(), RuntimeInfo.max_iters()) == (9, 10)
    assert RuntimeInfo.get_info("work_dir") == "runs/a"
    # ceil(10 / 3) = 4 iterations an epoch; iteration 9 is the second (index 1) of epoch 2
    assert RuntimeInfo.iter_pre_epoch() == 4
    assert RuntimeInfo.iter_by_epoch() == 1
    assert RuntimeInfo.info() == {"epoch": 2, "max_epochs": 3, "iter": 9, "max_iters": 10,
                                  "work_dir": "runs/a"}


def test_info_is_a_copy_and_later_writes_update() -> None:
    RuntimeInfo.set_info(epoch=0)
    snapshot = RuntimeInfo.info()
    snapshot["epoch"] = 99
    RuntimeInfo.set_info(epoch=1)
    assert RuntimeInfo.epoch() == 1


def test_a_key_never_set_names_itself_and_how_to_set_it() -> None:
    with pytest.raises(FxRazorError, match=r"no 'max_epochs'.*set_info\(max_epochs=...\)"):
        RuntimeInfo.max_epochs()
    RuntimeInfo.set_info(max_iters=10)
    with pytest.raises(InvalidArgumentError, match="no 'max_epochs'"):
        RuntimeInfo.iter_pre_epoch()


@pytest.mark.parametrize(("key", "value"), [
    ("epoch", -1), ("iter", -3), ("max_epochs", 0), ("max_iters", 0), ("epoch", 1.5),
    ("epoch", True), ("max_iters", "10"),
])
def test_bad_counters_are_refused_and_nothing_is_half_written(key: str, value: object) -> None:
    RuntimeInfo.set_info(epoch=1, max_epochs=5)
    with pytest.raises(InvalidArgumentError, match=key):
        RuntimeInfo.set_info(**{"max_epochs": 7, key: value})
    assert RuntimeInfo.info() == {"epoch": 1, "max_epochs": 5}
    with pytest.raises(InvalidArgumentError, match=key):
        with RuntimeInfo.scope(**{key: value}):
            pass
    assert RuntimeInfo.info() == {"epoch": 1, "max_epochs": 5}


def test_scope_sets_for_the_block_and_restores_after_it_even_on_error() -> None:
    RuntimeInfo.set_info(epoch=1, max_epochs=5)
    with RuntimeInfo.scope(epoch=3, iter=7):
        assert RuntimeInfo.info() == {"epoch": 3, "max_epochs": 5, "iter": 7}
        RuntimeInfo.set_info(max_epochs=9)  # writes inside the block are undone too
    assert RuntimeInfo.info() == {"epoch": 1, "max_epochs": 5}
    with pytest.raises(ZeroDivisionError):
        with RuntimeInfo.scope(epoch=4):
            _ = 1 / 0
    assert RuntimeInfo.info() == {"epoch": 1, "max_epochs": 5}
    RuntimeInfo.reset()
    assert RuntimeInfo.info() == {}


def test_threads_see_each_write_whole() -> None:
    # each writer sets epoch and max_epochs together, always max_epochs == epoch + 1; a
    # reader that saw one without the other would find them apart
    stop = threading.Event()
    torn: list[dict[str, object]] = []

    def write(start: int) -> None:
        for i in range(start, start + 2000):
            RuntimeInfo.set_info(epoch=i, max_epochs=i + 1)

    def read() -> None:
        while not stop.is_set():
            info = RuntimeInfo.info()
            if info and info["max_epochs"] != info["epoch"] + 1:  # type: ignore[operator]
                torn.append(info)

    RuntimeInfo.set_info(epoch=0, max_epochs=1)
    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(k * 10000,)) for k in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert torn == []
