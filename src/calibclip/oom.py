"""Out-of-memory fallback for batched inference: halve the batch and retry instead of dying.

Indexing and evaluation run fixed-size batches through a model; on a GPU that is shared, or with a
larger model than the batch size was chosen for, one batch can run out of device memory. ``Halving``
then frees the allocator cache, retries the same inputs in halves, prints one line of notice, and
keeps the smaller size for the batches that follow (so the notice is not repeated every batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

log = logging.getLogger("calibclip")
T = TypeVar("T")


def is_oom(exc: BaseException) -> bool:
    """True for a CUDA (or other accelerator) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_cache() -> None:
    """Give cached blocks back to the device so the smaller retry can use them."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def concat(parts: list[Any]) -> Any:
    """Join per-chunk results along the first axis: tensors, arrays, or dicts of them."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    raise TypeError(f"cannot join chunk results of type {type(first).__name__}")


class Halving:
    """Run ``fn`` over a batch; on out-of-memory split it in halves (down to one item) and remember the size.

    ``notify`` receives the one-line notice (default: the ``calibclip`` logger's warning).
    """

    def __init__(self, what: str = "batch", notify: Callable[[str], None] | None = None) -> None:
        self.what = what
        self.limit: int | None = None  # largest chunk known to fit; None until an OOM happened
        self.notify = notify or log.warning

    def __call__(self, fn: Callable[[Sequence[Any]], T], batch: Sequence[Any]) -> T:
        n = len(batch)
        size = min(n, self.limit or n)
        parts, start = [], 0
        while start < n:
            stop = min(n, start + size)
            try:
                parts.append(fn(batch[start:stop]))
                start = stop
                continue
            except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(exc) or size <= 1:
                    raise
            # outside the except block: the failed attempt's frames (and tensors) are released first
            free_cache()
            size = max(1, size // 2)
            self.limit = size
            self.notify(f"warning: out of device memory on a {self.what} of {stop - start}; "
                        f"retrying with {size} (lower --batch-size to avoid this)")
        return concat(parts)
