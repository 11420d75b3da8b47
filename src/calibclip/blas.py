"""BLAS threads for the numpy steps of a search (threadpoolctl), so they do not slow the next torch pass.

After a multi-threaded product OpenBLAS leaves its worker threads busy-waiting for a while; on a
machine whose cores torch's own threads also use, the next text-encoder pass then runs on what
is left (measured: 23 → 82 ms on 2 cores). Search products are matrix-vector or small
matrix-matrix products bound by memory bandwidth, so one BLAS thread costs them little and
wakes no spinning pool. ``benchmarks/blas_threads.py`` measures both sides.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

# Up to this many query rows a gallery product is bound by reading the gallery once, and runs
# on one BLAS thread; larger blocks (evaluation) are compute-bound and keep every thread.
SINGLE_THREAD_ROWS = 64


@functools.cache
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspects the loaded libraries once (milliseconds), reused after


def search_blas(rows: int = 1) -> Any:
    """Context manager for a product of ``rows`` query rows with the gallery.

    Up to ``SINGLE_THREAD_ROWS`` rows, numpy's BLAS runs on one thread inside it (restored on
    exit); larger products keep every thread. The limit is process-wide while it holds: callers
    running searches from several threads serialise them (as ``Index(shared=True)`` users must).
    """
    if rows > SINGLE_THREAD_ROWS:
        return contextlib.nullcontext()
    return _controller().limit(limits=1, user_api="blas")
