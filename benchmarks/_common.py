"""Helpers shared by the benchmark scripts: the machine line and paired, repeated ratio timing.

Every script measures its baseline in the same process, alternating baseline and candidate so
that load from other processes hits both, and prints min / median / max of the per-round ratio.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # PYTHONPATH=… wins, so another checkout can be measured ("before")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def machine() -> str:
    """One line naming the CPU, the cores this process may use and the load, for the printed result."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {cores} usable cores, load {load:.2f}, Python {platform.python_version()}"


def unit(rng, n: int, d: int):
    """(n, d) float32 random rows of unit length drawn from ``rng`` (a numpy Generator)."""
    import numpy as np  # here, so the scripts that need no numpy do not load it

    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def seconds(fn: Callable[[], object], inner: int = 1) -> float:
    """Wall seconds of ``inner`` calls of ``fn``, divided by ``inner``."""
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def paired(base: Callable[[], object], cand: Callable[[], object], repeats: int = 3, inner: int = 1,
           warmup: bool = True) -> tuple[list[float], list[float]]:
    """Per-round seconds of ``base`` and ``cand``, alternated (order flipped every round)."""
    if warmup:
        base(), cand()
    tb, tc = [], []
    for r in range(repeats):
        order = ((base, tb), (cand, tc)) if r % 2 == 0 else ((cand, tc), (base, tb))
        for fn, acc in order:
            acc.append(seconds(fn, inner))
    return tb, tc


def spread(values: list[float]) -> str:
    """'min / median / max' of a list, 2 decimals."""
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def ratio_line(name: str, tb: list[float], tc: list[float], target: str = "", unit_ms: bool = True) -> str:
    """One result line: medians of both sides and min/median/max of the per-round ratio cand/base."""
    ratios = [c / b for b, c in zip(tb, tc)]
    scale, unit = (1e3, "ms") if unit_ms else (1.0, "s")
    line = (f"{name:34s} base {statistics.median(tb) * scale:9.2f} {unit}  ours {statistics.median(tc) * scale:9.2f} "
            f"{unit}  ratio min/med/max {spread(ratios)}x")
    return line + (f"  (target {target})" if target else "")
