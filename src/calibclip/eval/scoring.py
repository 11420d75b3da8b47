"""Lazy similarity sources for the metrics: rows computed on demand, never the whole matrix at once."""

from __future__ import annotations

from typing import Any

import numpy as np


class FeatureSims:
    """Rows of q @ gᵀ for L2-normalised features (cosine similarity), computed per chunk of queries."""

    def __init__(self, queries: np.ndarray, gallery: np.ndarray) -> None:
        self.q = np.ascontiguousarray(queries, dtype=np.float32)
        self.g = np.ascontiguousarray(gallery, dtype=np.float32)
        self.shape = (len(self.q), len(self.g))

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.q[start:stop] @ self.g.T


class CalibratedSims:
    """CalibCLIP ranking as a row source: the order ``discriminative_scores`` gives the whole gallery, per chunk.

    Its ranking (plain top-K candidates re-ranked by s0 + λ·cos(t̃, ṽ), the rest below in plain order)
    comes as scores whose descending order under the metrics' tie rule is exactly that ranking:
    ``calib.ranking_scores`` (one product per block, no sort of whole rows). The metrics read the
    ground truth's positions without score rows (``positions``). ``FullSortSims`` is the former,
    slow form of the same ranking, kept as the reference both are checked against.
    """

    def __init__(self, q_plain: np.ndarray, q_dcc: np.ndarray, g_plain: np.ndarray, g_cve: np.ndarray,
                 cfg: Any) -> None:
        self.q_plain = np.ascontiguousarray(q_plain, dtype=np.float32)
        self.q_dcc = np.ascontiguousarray(q_dcc, dtype=np.float32)
        self.g_plain = np.ascontiguousarray(g_plain, dtype=np.float32)
        self.g_cve = np.ascontiguousarray(g_cve, dtype=np.float32)
        self.g_plain_t: np.ndarray | None = None  # made on first use (calibrated_positions, ranking_scores)
        self.cfg = cfg
        self.shape = (len(self.q_plain), len(self.g_plain))

    def _g_t(self) -> np.ndarray:
        if self.g_plain_t is None:
            self.g_plain_t = np.ascontiguousarray(self.g_plain.T)
        return self.g_plain_t

    def positions(self, start: int, stop: int, items: np.ndarray) -> np.ndarray:
        """Positions of ``items`` (rows start:stop; -1 = padding) in the CalibCLIP ranking
        (``calib.calibrated_positions``: no score rows made)."""
        from calibclip.calib import calibrated_positions  # lazy: plain evaluation never imports calib
        return calibrated_positions(self.q_plain[start:stop], self.q_dcc[start:stop], self.g_plain, self.g_cve,
                                    self.cfg, items, g_plain_t=self._g_t())

    def rows(self, start: int, stop: int) -> np.ndarray:
        from calibclip.calib import ranking_scores
        return ranking_scores(self.q_plain[start:stop], self.q_dcc[start:stop], self.g_plain, self.g_cve,
                              self.cfg, g_plain_t=self._g_t())


class FullSortSims:
    """The ranking of a ``CalibratedSims`` read through ``discriminative_scores(..., k=n)``, which sorts
    every whole row, as strictly decreasing pseudo-scores n, n-1, …, 1: the former, slow path, kept
    as the reference the fast paths are checked against (tests, ``benchmarks/calib_eval.py``)."""

    def __init__(self, sims: CalibratedSims) -> None:
        self.sims = sims
        self.shape = sims.shape

    def rows(self, start: int, stop: int) -> np.ndarray:
        from calibclip.calib import discriminative_scores
        s, n = self.sims, self.shape[1]
        _, order = discriminative_scores(s.q_plain[start:stop], s.q_dcc[start:stop], s.g_plain, s.g_cve, s.cfg, n)
        out = np.zeros((stop - start, n), dtype=np.float32)  # items missing from the ranking (if any) go last
        np.put_along_axis(out, np.asarray(order, dtype=np.int64),
                          np.arange(n, n - order.shape[1], -1, dtype=np.float32)[None, :], axis=1)
        return out


def similarity_source(queries: dict[str, np.ndarray], gallery: dict[str, np.ndarray], cfg: Any = None
                      ) -> FeatureSims | CalibratedSims:
    """Plain cosine rows, or CalibCLIP's ranking when a calibration config and a "dcc" query set are given."""
    if cfg is None or "dcc" not in queries:
        return FeatureSims(queries["plain"], gallery["plain"])
    return CalibratedSims(queries["plain"], queries["dcc"], gallery["plain"], gallery.get("cve", gallery["plain"]),
                          cfg)
