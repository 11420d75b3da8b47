"""Retrieval metrics on a similarity matrix, batched and chunked over queries.

Every metric reduces to one primitive: the 0-based rank of each ground-truth gallery item in
its query's ranking (``positive_ranks``). Rows of the similarity matrix are processed in chunks
so a 25k×5k matrix is never copied whole; the matrix may also be a lazy ``RowSource`` that
computes rows on demand (the evaluation runner never materialises it).

Tie rule (deterministic, documented): the ranking is the *stable* order by descending score,
ties broken by ascending gallery index. Formally the rank of gallery item j for a query with
scores s is  #{l : s_l > s_j} + #{l < j : s_l = s_j}.  (IRRA and the CIR evaluation scripts use
torch.argsort/topk, whose tie order is unspecified; with real-valued features ties are rare.)

All metrics are percentages (0–100), as the papers report them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from calibclip.ranks import MISSING, SORT_ABOVE_POSITIVES, positions

# Elements of the (chunk × positives × gallery) comparison tensor allowed at once (~16M → ~16 MB bool).
CHUNK_ELEMENTS = 1 << 24


@runtime_checkable
class RowSource(Protocol):
    """Anything with ``shape`` (m, n) whose ``rows(start, stop)`` gives a (stop-start, n) score block."""

    shape: tuple[int, int]

    def rows(self, start: int, stop: int) -> np.ndarray | torch.Tensor: ...


@runtime_checkable
class PositionSource(RowSource, Protocol):
    """A row source that also gives the 0-based positions of given items in its rows' rankings directly
    (same tie rule), cheaper than ranking from score rows; ``ranks_for`` uses it."""

    def positions(self, start: int, stop: int, items: np.ndarray) -> np.ndarray: ...


Scores = np.ndarray | torch.Tensor | RowSource


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _block(sims: Scores, start: int, stop: int) -> np.ndarray:
    out = sims.rows(start, stop) if isinstance(sims, RowSource) else sims[start:stop]
    return np.ascontiguousarray(_np(out), dtype=np.float32)


def iter_rows(sims: Scores, chunk: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (row slice, float32 score block) over the query rows, ``chunk`` rows at a time."""
    m = sims.shape[0]
    chunk = max(1, chunk)
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        yield slice(start, stop), _block(sims, start, stop)


def _chunk_rows(n_gallery: int, n_pos: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, n_gallery * max(1, n_pos)))


def pad_lists(lists: Sequence[Sequence[int]], fill: int = -1) -> np.ndarray:
    """Ragged lists of gallery indices → (m, P) int64 array padded with ``fill``."""
    width = max((len(x) for x in lists), default=0)
    out = np.full((len(lists), max(1, width)), fill, dtype=np.int64)
    for i, x in enumerate(lists):
        out[i, :len(x)] = list(x)
    return out


def positive_ranks(scores: np.ndarray | torch.Tensor, positives: np.ndarray | torch.Tensor) -> np.ndarray:
    """0-based ranks (b, P) of gallery items ``positives`` (b, P; -1 = padding) in each row of ``scores``.

    Ties are broken by gallery index (see module docstring). Padded entries get rank ``MISSING``.
    """
    return positions(_np(scores), _np(positives))


def _exclude(block: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """Push excluded items (one per row, -1 = none) to the very bottom of the ranking (block is a copy)."""
    if exclude is None:
        return block
    rows = np.nonzero(exclude >= 0)[0]
    block[rows, exclude[rows]] = -np.inf
    return block


def ranks_for(sims: Scores, positives: np.ndarray | torch.Tensor | Sequence,
              exclude: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
    """Ranks (m, P) of every query's positives over the whole gallery, computed chunk by chunk."""
    m, n = sims.shape
    positives = _np(positives).astype(np.int64).reshape(m, -1)
    ex = None if exclude is None else _np(exclude).astype(np.int64).reshape(m)
    if isinstance(sims, PositionSource):
        return _ranks_from_positions(sims, positives, ex)
    p = positives.shape[1]
    chunk = 256 if p > SORT_ABOVE_POSITIVES else _chunk_rows(n, p)
    out = np.empty((m, p), dtype=np.int64)
    for sl, block in iter_rows(sims, chunk):
        if ex is not None:
            block = _exclude(block.copy(), ex[sl])  # never write into the caller's matrix
        out[sl] = positive_ranks(block, positives[sl])
    return out


def _ranks_from_positions(sims: PositionSource, positives: np.ndarray, ex: np.ndarray | None) -> np.ndarray:
    """``ranks_for`` read from ``sims.positions``; an excluded item moves to the very bottom (as ``_exclude``
    does with -inf): it ranks n-1 and the items it was above move up one."""
    m, n = sims.shape
    items = positives if ex is None else np.concatenate([positives, ex[:, None]], axis=1)
    r = np.asarray(sims.positions(0, m, items), dtype=np.int64)
    if ex is None:
        return r
    r, r_ex = r[:, :-1], r[:, -1:]
    r = np.where(r_ex < r, r - 1, r)  # r_ex is MISSING where a row excludes nothing
    r = np.where(positives == np.where(ex >= 0, ex, -2)[:, None], n - 1, r)
    return np.where(positives >= 0, r, MISSING)


def _best_positive(values: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Index into ``positives`` (b, P; -1 = padding) of each row's first-ranked positive: the highest
    value, ties to the lowest gallery index (positives are sorted ascending, argmax takes the first)."""
    return np.argmax(np.where(positives >= 0, values, -np.inf), axis=1)


def best_ranks_for(sims: Scores, positives: np.ndarray) -> np.ndarray:
    """Rank (m,) of each query's best-ranked positive (sorted padded lists, -1 = padding): min of ``ranks_for``.

    One pass over each block: the best positive is picked from its scores, then only it is counted.
    """
    m, n = sims.shape
    out = np.empty(m, dtype=np.int64)
    for sl, block in iter_rows(sims, _chunk_rows(n, 1)):
        pos = positives[sl]
        vals = np.take_along_axis(block, np.maximum(pos, 0), axis=1)
        best = np.take_along_axis(pos, _best_positive(vals, pos)[:, None], axis=1)
        out[sl] = positive_ranks(block, best)[:, 0]
    return out


def column_best_ranks(sims: np.ndarray | torch.Tensor, positives: np.ndarray) -> np.ndarray:
    """Rank (n,) of each column's best-ranked positive row in that column's descending order (tie rule).

    ``positives`` (n, P): per column j the sorted row indices that are its positives (-1 = padding).
    Streams the matrix by row blocks counting, per column, the rows scoring above (and equal to) its
    best positive, so no transposed copy is made; ties are resolved on the rare tied columns only.
    """
    s = _np(sims)
    m, n = s.shape
    safe = np.maximum(positives, 0)
    vals = np.asarray(s[safe, np.arange(n)[:, None]], dtype=np.float32)
    best_row = np.take_along_axis(positives, _best_positive(vals, positives)[:, None], axis=1)[:, 0]
    best = np.asarray(s[best_row, np.arange(n)], dtype=np.float32)
    above = np.zeros(n, dtype=np.int64)
    equal = np.zeros(n, dtype=np.int64)
    for _, block in iter_rows(s, _chunk_rows(n, 2)):
        above += np.count_nonzero(block > best, axis=0)
        equal += np.count_nonzero(block == best, axis=0)  # includes the positive itself
    for j in np.nonzero(equal > 1)[0]:  # rare with real features: ties broken by row index
        col = np.asarray(s[:best_row[j], j], dtype=np.float32)
        above[j] += np.count_nonzero(col == best[j])
    return above


Ints = Sequence[int] | np.ndarray | torch.Tensor
Ragged = Sequence[Sequence[int]] | np.ndarray


def _ints(x: Ints) -> np.ndarray:
    return _np(x).astype(np.int64).reshape(-1)


def _check_has_positive(positives: np.ndarray) -> None:
    missing = np.nonzero((positives >= 0).sum(1) == 0)[0]
    if len(missing):
        raise ValueError(f"{len(missing)} queries (first: {int(missing[0])}) have no ground-truth gallery item")


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """R@K (%) from ranks (m, P): a query is a hit when its best-ranked positive is within the top K."""
    best = ranks.reshape(len(ranks), -1).min(axis=1)
    return {k: float((best < k).mean() * 100) for k in ks}


def _sorted_positive_ranks(ranks: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks sorted ascending per row (invalid pushed last) and the matching validity mask."""
    r = np.sort(np.where(valid, ranks, MISSING), axis=1)
    return r, r < MISSING


def ap_inp_from_ranks(ranks: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and INP (IRRA definitions) from positive ranks (m, P) and their validity mask.

    With the positives' 1-based ranks r_1 < … < r_n: AP = (1/n) Σ_i i / r_i and INP = n / r_n.
    """
    r, ok = _sorted_positive_ranks(ranks, valid)
    n = ok.sum(1)
    rr = np.where(ok, r, 0).astype(np.float64) + 1
    i = np.arange(1, r.shape[1] + 1, dtype=np.float64)[None, :]
    ap = np.where(ok, i / rr, 0.0).sum(1) / n
    inp = n / np.where(ok, rr, 0.0).max(1)
    return ap, inp


def tir_metrics(sims: Scores, text_image: Ints, ks: Sequence[int] = (1, 5, 10), i2t: bool = True
                ) -> dict[str, float]:
    """Text↔image retrieval (Flickr30K / COCO Karpathy protocol: every caption is a query, 5–7 per image).

    ``sims``: (n_texts, n_images) similarity; ``text_image[t]`` is the gallery index of text t's image.
    t2i R@K: the caption's image is in the top K. i2t R@K: any of the image's captions is in the top K,
    read from the matrix's columns (for a lazy RowSource call ``i2t_metrics`` with its transpose).
    ``rsum`` is the sum of every recall reported.
    """
    t_img = _ints(text_image)
    out = {f"t2i_R@{k}": v for k, v in recall_from_ranks(ranks_for(sims, t_img[:, None]), ks).items()}
    if i2t:
        if isinstance(sims, RowSource):
            raise TypeError("pass a transposed RowSource to i2t_metrics instead of tir_metrics(<RowSource>, i2t=True)")
        best = column_best_ranks(sims, _captions_of(t_img, sims.shape[1]))
        out.update({f"i2t_R@{k}": v for k, v in recall_from_ranks(best[:, None], ks).items()})
    out["rsum"] = sum(out.values())
    return out


def _captions_of(text_image: np.ndarray, n_images: int) -> np.ndarray:
    """(n_images, P) padded caption indices of each image, ascending; every image needs one."""
    lists: list[list[int]] = [[] for _ in range(n_images)]
    for t, i in enumerate(text_image.tolist()):
        lists[i].append(t)
    pos = pad_lists(lists)
    _check_has_positive(pos)
    return pos


def i2t_metrics(sims_i2t: Scores, text_image: Ints, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Image→text R@K from an (n_images, n_texts) source; an image's positives are its captions."""
    pos = _captions_of(_ints(text_image), sims_i2t.shape[0])
    best = best_ranks_for(sims_i2t, pos)
    return {f"i2t_R@{k}": v for k, v in recall_from_ranks(best[:, None], ks).items()}


def positives_by_label(query_labels: Ints, gallery_labels: Ints) -> np.ndarray:
    """(m, P) padded gallery indices sharing each query's label (person id), in gallery order."""
    groups: dict[int, list[int]] = {}
    for j, lab in enumerate(_ints(gallery_labels).tolist()):
        groups.setdefault(lab, []).append(j)
    table = {lab: i for i, lab in enumerate(groups)}
    padded = pad_lists(list(groups.values()))
    qi = [table.get(lab, -1) for lab in _ints(query_labels).tolist()]
    missing = [i for i, t in enumerate(qi) if t < 0]
    if missing:
        raise ValueError(f"{len(missing)} queries (first: {missing[0]}) have a label absent from the gallery")
    return padded[np.asarray(qi, dtype=np.int64)]


def tbpr_metrics(sims: Scores, query_pids: Ints, gallery_pids: Ints, ks: Sequence[int] = (1, 5, 10)
                 ) -> dict[str, float]:
    """Text-based person retrieval (IRRA): R@K, mAP, mINP; positives = gallery images of the same person id."""
    pos = positives_by_label(query_pids, gallery_pids)
    ranks = ranks_for(sims, pos)
    out = {f"R@{k}": v for k, v in recall_from_ranks(ranks, ks).items()}
    ap, inp = ap_inp_from_ranks(ranks, pos >= 0)
    out["mAP"] = float(ap.mean() * 100)
    out["mINP"] = float(inp.mean() * 100)
    return out


def cirr_metrics(sims: Scores, reference: Ints, target: Ints, members: Ragged,
                 ks: Sequence[int] = (1, 5, 10, 50), subset_ks: Sequence[int] = (1, 2, 3)) -> dict[str, float]:
    """CIRR: R@K over the gallery with the reference removed; Recall_subset@K within ``members``.

    ``members``: per query the gallery indices of its ``img_set`` (the reference is dropped here).
    ``avg`` = (R@5 + Rsubset@1) / 2, the headline number of the CIRR leaderboard.
    """
    ref, tgt = _ints(reference), _ints(target)
    ranks = ranks_for(sims, tgt[:, None], exclude=ref)
    out = {f"R@{k}": v for k, v in recall_from_ranks(ranks, ks).items()}
    sub = subset_ranks(sims, members, tgt, ref)
    out.update({f"Rsubset@{k}": float((sub < k).mean() * 100) for k in subset_ks})
    if "R@5" in out and "Rsubset@1" in out:
        out["avg"] = (out["R@5"] + out["Rsubset@1"]) / 2
    return out


def _members(members: Ragged, reference: np.ndarray) -> np.ndarray:
    """Padded member indices per query, reference removed, sorted by gallery index (padding last)."""
    mem = pad_lists([sorted(set(int(x) for x in m) - {int(r)}) for m, r in zip(members, reference)])
    return mem


def _subset_scores(sims: Scores, mem: np.ndarray) -> np.ndarray:
    out = np.full(mem.shape, -np.inf, dtype=np.float32)
    for sl, block in iter_rows(sims, _chunk_rows(sims.shape[1], 1)):
        m = mem[sl]
        vals = np.take_along_axis(block, np.maximum(m, 0), axis=1)
        out[sl] = np.where(m >= 0, vals, -np.inf)
    return out


def subset_ranks(sims: Scores, members: Ragged, target: Ints, reference: Ints) -> np.ndarray:
    """0-based rank (m,) of the target among its query's ``img_set`` members (reference excluded; absent → miss)."""
    mem = _members(members, _ints(reference))
    where = mem == _ints(target)[:, None]
    # A target outside its img_set counts as a miss, as in the CIRR evaluation code (no label in the group).
    local = np.where(where.any(1), where.argmax(1), -1)[:, None]
    return positive_ranks(_subset_scores(sims, mem), local).reshape(-1)


def subset_topk(sims: Scores, members: Ragged, reference: Ints, k: int = 3) -> np.ndarray:
    """Top-``k`` gallery indices (m, k) inside each query's img_set (reference excluded), tie rule applied."""
    mem = _members(members, _ints(reference))
    order = np.argsort(-_subset_scores(sims, mem), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(mem, order, axis=1)


def fashioniq_metrics(sims: Scores, target: Ints, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """FashionIQ (one category): R@10 / R@50 of the target over the category's gallery (no exclusion)."""
    return {f"R@{k}": v for k, v in recall_from_ranks(ranks_for(sims, _ints(target)[:, None]), ks).items()}


def circo_metrics(sims: Scores, targets: Ragged, ks: Sequence[int] = (5, 10, 25, 50)) -> dict[str, float]:
    """CIRCO mAP@K: AP@K = 1/min(|G|, K) · Σ_{k≤K} P@k · 1[item at rank k ∈ G], averaged over queries."""
    pos = pad_lists([sorted(set(int(x) for x in t)) for t in targets])
    _check_has_positive(pos)
    r, ok = _sorted_positive_ranks(ranks_for(sims, pos), pos >= 0)
    n = ok.sum(1)
    # The i-th positive in rank order sits at rank r_i with i hits so far: P@r_i = i / r_i.
    prec = np.arange(1, r.shape[1] + 1)[None, :] / (np.where(ok, r, 0).astype(np.float64) + 1)
    out = {}
    for k in ks:
        ap = np.where(ok & (r < k), prec, 0.0).sum(1) / np.minimum(n, k)
        out[f"mAP@{k}"] = float(ap.mean() * 100)
    return out


def genecis_metrics(sims: np.ndarray | torch.Tensor, target: Ints, gallery_mask: np.ndarray | None = None,
                    ks: Sequence[int] = (1, 2, 3)) -> dict[str, float]:
    """GeneCIS: R@K of the target within each query's own gallery (rows of ``sims``; mask = valid entries)."""
    block = np.asarray(_np(sims), dtype=np.float32)
    if gallery_mask is not None:
        block = np.where(_np(gallery_mask).astype(bool), block, -np.inf).astype(np.float32)
    return {f"R@{k}": v for k, v in recall_from_ranks(ranks_for(block, _ints(target)[:, None]), ks).items()}


def topk_indices(sims: Scores, k: int, exclude: Ints | None = None) -> np.ndarray:
    """Top-``k`` gallery indices (m, k) per query under the tie rule, optionally excluding one item per row."""
    m, n = sims.shape
    ex = _ints(exclude) if exclude is not None else None
    k_eff = min(k, n - (1 if ex is not None else 0))
    out = np.empty((m, k_eff), dtype=np.int64)
    for sl, block in iter_rows(sims, _chunk_rows(n, 4)):
        if ex is not None:
            block = _exclude(block.copy(), ex[sl])
        out[sl] = np.argsort(-block, axis=1, kind="stable")[:, :k_eff]
    return out
