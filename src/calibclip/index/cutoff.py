"""Per-query relevance cutoff: keep the hits that stand out from the query's own score distribution.

A fixed score threshold does not transfer between queries: CLIP cosines of a specific query
("a red double-decker bus") and of a vague one ("a photo") live on different scales, so one
threshold returns nothing for the first and junk for the second. The rule here is a z-score
against the gallery, computed per query:

1. score the query against a seeded sample of at most :data:`SAMPLE` gallery items (all of them
   in a smaller gallery) with the same similarity the ranking uses (cosine; with CalibCLIP
   ``s0 + λ·(q_dcc·g_cve)``, the discriminative similarity of the re-ranked head);
2. take the mean μ and standard deviation σ of those scores;
3. keep a hit when ``score ≥ μ + z·σ``; ``cutoff="auto"`` is ``z = AUTO_Z = 2``, a number is ``z``.

So a hit is kept when it scores at least ``z`` standard deviations above what the query scores on
a typical gallery image; the number of hits kept varies per query (none when nothing stands out).
The cutoff never adds hits: ``k`` stays the cap.

Why z = 2: on the demo gallery (328 images, shipped synthetic CLIP) z = 3 kept no hit for four of
five test queries, z = 2 kept 10–13 each; for a roughly normal bulk of scores z = 2 lets about
2 % of the gallery through. Tune it per collection with a number (``--cutoff 2.5``).
"""

from __future__ import annotations

import numpy as np

from calibclip.errors import UserError

AUTO_Z = 2.0
SAMPLE = 10_000


def parse_cutoff(value: str | float | None) -> float | None:
    """``None``/"none"/"off" → no cutoff; "auto" → :data:`AUTO_Z`; a number → that z (UserError otherwise)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        z = float(value)
    else:
        text = str(value).strip().lower()
        if text in ("", "none", "off"):
            return None
        if text == "auto":
            return AUTO_Z
        try:
            z = float(text)
        except ValueError:
            raise UserError(f"cutoff {value!r}: use auto, or a number of standard deviations such as 2.5.") from None
    if not np.isfinite(z):
        raise UserError(f"cutoff {value!r}: use auto, or a finite number of standard deviations such as 2.5.")
    return z


def sample_positions(n: int, size: int = SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted gallery positions scored for the statistics: all when ``n ≤ size``, else a seeded sample."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def thresholds(sample_scores: np.ndarray, z: float) -> np.ndarray:
    """Per-query cut ``μ + z·σ`` of an (m, s) score matrix (float64 statistics)."""
    s = np.asarray(sample_scores, np.float64)
    if s.shape[-1] == 0:
        return np.full(s.shape[0], -np.inf)
    return s.mean(axis=1) + z * s.std(axis=1)
