"""The shared worker threads: results in order, the caller working too, errors raised, torch threads restored."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from calibclip import cores


def test_parallel_map_in_order_on_several_threads(monkeypatch):
    monkeypatch.setattr(cores, "pool_workers", lambda: 3)
    seen: list[str] = []

    def work(x: int) -> int:
        time.sleep(0.01)  # long enough that every thread takes some items
        seen.append(threading.current_thread().name)
        return x * x

    assert cores.parallel_map(work, range(12)) == [x * x for x in range(12)]
    assert threading.current_thread().name in seen  # the caller works instead of waiting
    assert any(name.startswith("calibclip-worker") for name in seen)
    assert cores.parallel_map(work, []) == []


def test_parallel_map_raises_the_error_and_stops_taking_items(monkeypatch):
    monkeypatch.setattr(cores, "pool_workers", lambda: 2)
    done: list[int] = []

    def work(x: int) -> int:
        if x == 1:
            raise ValueError("item 1")
        time.sleep(0.01)
        done.append(x)
        return x

    with pytest.raises(ValueError, match="item 1"):
        cores.parallel_map(work, range(40))
    assert len(done) < 39  # the other thread stopped after the error, not after every item


def test_torch_threads_only_for_the_block():
    before = torch.get_num_threads()
    with cores.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_parallel_map_nested_in_a_worker_runs_there(monkeypatch):
    """A parallel_map inside a worker runs in that worker (its helpers would queue behind it: deadlock)."""
    monkeypatch.setattr(cores, "pool_workers", lambda: 2)

    def inner(x: int) -> list[int]:
        return cores.parallel_map(lambda y: x * 10 + y, range(4))

    assert cores.parallel_map(inner, range(6)) == [[x * 10 + y for y in range(4)] for x in range(6)]
