"""The cores this process may use, and one shared pool of worker threads to spread numpy work over them.

Numpy releases the GIL in its products, selections and gathers, so Python threads each running a
one-BLAS-thread step use every core without a BLAS thread pool; that pool is what spins after a
product and slows the next torch pass (``calibclip.blas``). Work given to the pool must not
depend on which worker runs it, so results are the same on any number of cores.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Most worker threads the shared pool starts (numpy steps on a bigger machine are memory-bound
# well before this many cores).
MAX_WORKERS = 8
_PREFIX = "calibclip-worker"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; a container's or taskset's limit), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix=_PREFIX)


def pool_workers() -> int:
    """Threads :func:`parallel_map` uses here, the calling one included: the usable cores, at most ``MAX_WORKERS``."""
    return max(1, min(MAX_WORKERS, usable_cores()))


def parallel_map(fn: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
    """``[fn(x) for x in items]`` spread over the calling thread and ``pool_workers() - 1`` shared workers.

    Results come in order; the first error is raised once every thread has stopped taking items.
    The caller works too rather than waiting: one thread handoff fewer, which is most of the cost
    of splitting a sub-millisecond product. On one usable core, or for one item, it all runs here.
    """
    items = list(items)
    workers = min(pool_workers(), len(items))
    if workers <= 1 or threading.current_thread().name.startswith(_PREFIX):
        return [fn(x) for x in items]  # (from a worker: its helpers could wait behind it in the pool)
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    order = iter(range(len(items)))
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                i = None if errors else next(order, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller below
                with lock:
                    errors.append(exc)
                return

    helpers = [_pool(pool_workers() - 1).submit(drain) for _ in range(workers - 1)]
    drain()
    for h in helpers:
        h.result()
    if errors:
        raise errors[0]
    return results


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch intra-op threads for the calling thread only, restored on exit.

    A worker thread calling torch starts its own OpenMP team of ``torch.get_num_threads()``
    threads; from ``parallel_map`` workers that would be cores × cores threads. The OpenMP
    setting is per thread, so the caller's own threads (and the main thread's) are unchanged.
    """
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
