"""Approximate nearest-neighbour indexes (FAISS) behind one function, for collections of millions.

Every index uses the inner-product metric over L2-normalised rows (= cosine similarity) and
returns *positions* (0..n-1, the order the vectors were given in) as ids.

Kinds:

- ``flat``      exact search; memory 4·n·D bytes. No file is written for it: ``Index`` searches its
                in-memory rows with numpy (:mod:`calibclip.index.exact`); ``build_ann`` gives ``IndexFlatIP``.
- ``ivf-flat``  inverted lists over a k-means coarse quantiser, raw vectors in the lists;
                same memory as flat, scans only ``nprobe`` of ``nlist`` lists.
- ``ivf-pq``    inverted lists of product-quantised codes (``m`` bytes per vector with 8-bit
                codes), re-ranked by a refine index (``Refine(SQ8)``: D bytes per vector, or
                ``RFlat``: exact rows) whenever the memory budget allows — PQ distances alone
                rarely reach recall@10 ≥ 0.9, re-ranking the top ``k_factor·k`` does.
- ``hnsw``      graph index (``HNSW<M>,Flat``); raw vectors plus ~2·M links per vector, no
                training, fast queries, slow build on few cores.

The automatic choice is :func:`choose_kind`. IVF quantisers are trained on a seeded random
sample, so a build is reproducible for a given ``seed``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from calibclip.atomic import atomic_write_bytes
from calibclip.errors import UserError

KINDS = ("flat", "ivf-flat", "ivf-pq", "hnsw")


@dataclass(frozen=True)
class AnnConfig:
    """Constants of index construction and search (defaults tuned on clustered D=512 data, 2 cores)."""

    flat_max_n: int = 1_000_000       # exact search up to this size when it fits the memory budget
    memory_fraction: float = 0.5      # budget = this fraction of physical RAM when none is given
    train_per_list: int = 64          # k-means training points per inverted list (FAISS wants ≥ 39)
    max_train: int = 131_072          # cap on the training sample (k-means cost is sample·nlist·D)
    kmeans_iters: int = 10            # k-means iterations for the coarse quantiser
    pq_iters: int = 10                # k-means iterations per PQ sub-quantiser (FAISS default 25: slow, no gain)
    pq_points_per_centroid: int = 64  # PQ codebooks train on at most this many points per centroid
    nprobe: int = 32                  # lists scanned per query (set again at search time by --nprobe)
    k_factor: int = 10                # IVF-PQ refine: re-rank k_factor·k PQ candidates with the refine index
    hnsw_m: int = 32                  # HNSW links per node
    ef_construction: int = 64         # HNSW build breadth
    ef_search: int = 64               # HNSW search breadth (also set by --nprobe)
    add_chunk: int = 65_536           # rows added per call (bounds temporary memory of assignment)


DEFAULT = AnnConfig()


# ---- sizing ----------------------------------------------------------------------------------
def default_nlist(n: int) -> int:
    """≈ √n rounded to a power of two, at most n/39 (FAISS needs ~39 training points per list).

    √n (rather than FAISS's 4–16·√n) keeps k-means training affordable on a few cores; the
    per-query cost nprobe·n/nlist is still only ~32k codes at 1M vectors.
    """
    if n < 78:
        return 1
    nlist = 2 ** round(math.log2(math.sqrt(n)))
    return int(max(1, min(nlist, n // 39)))


def default_m(dim: int) -> int:
    """PQ sub-quantisers: the largest divisor of ``dim`` not above dim/8 (64 for D=512)."""
    target = max(1, dim // 8)
    return max(d for d in range(1, target + 1) if dim % d == 0)


def estimate_memory(kind: str, n: int, dim: int, nlist: int | None = None, m: int | None = None,
                    nbits: int = 8, refine: str = "none", config: AnnConfig = DEFAULT) -> int:
    """Approximate resident bytes of an index of ``kind`` over ``n`` vectors of ``dim``."""
    nlist = nlist or default_nlist(n)
    raw = 4 * n * dim
    if kind == "flat":
        return raw
    if kind == "ivf-flat":
        return raw + 8 * n + 4 * nlist * dim
    if kind == "hnsw":
        return raw + n * config.hnsw_m * 2 * 4 + n * 8  # level-0 links (2M) + upper levels/offsets
    if kind == "ivf-pq":
        m = m or default_m(dim)
        codes = n * (math.ceil(m * nbits / 8) + 8)
        refine_bytes = {"none": 0, "sq8": n * dim, "flat": raw}[refine]
        return codes + refine_bytes + 4 * nlist * dim + 4 * dim * (2 ** nbits)
    raise ValueError(f"unknown index kind {kind!r}")


def memory_budget(max_memory: int | None, config: AnnConfig = DEFAULT) -> int:
    """``max_memory`` bytes, or ``config.memory_fraction`` of physical RAM when None."""
    if max_memory is not None:
        return int(max_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * config.memory_fraction)


def parse_memory(text: str | None) -> int | None:
    """'24G', '512M', '2.5GiB', '1000000' → bytes (None stays None); bad text → UserError."""
    if text is None or str(text).strip() == "":
        return None
    s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    mult = units.get(s[-1:], 1)
    num = s[:-1] if s[-1:] in units else s
    try:
        value = float(num)
    except ValueError:
        raise UserError(f"--max-memory {text!r}: give a size such as 24G, 512M or a byte count.") from None
    if value <= 0:
        raise UserError(f"--max-memory {text!r}: must be positive.")
    return int(value * mult)


def choose_refine(n: int, dim: int, budget: int, nlist: int | None = None, m: int | None = None,
                  nbits: int = 8, config: AnnConfig = DEFAULT) -> str:
    """Strongest IVF-PQ re-ranking that fits: exact rows ("flat"), then 8-bit rows ("sq8"), else "none"."""
    for refine in ("flat", "sq8", "none"):
        if estimate_memory("ivf-pq", n, dim, nlist, m, nbits, refine, config) <= budget:
            return refine
    return "none"


def choose_kind(n: int, dim: int, max_memory_bytes: int | None = None, config: AnnConfig = DEFAULT) -> str:
    """Automatic index kind for ``n`` vectors of ``dim`` within a memory budget.

    1. ``flat`` (exact) while n ≤ ``config.flat_max_n`` (1M) and the raw float32 rows fit:
       a brute-force scan of 1M×512 is ~0.1 s per query on two cores, still interactive, and exact.
    2. ``ivf-flat`` above that while the raw rows still fit: same memory, scans ~nprobe/nlist.
    3. ``ivf-pq`` when the raw rows do not fit: m bytes per vector (+ a refine index if it fits).
    HNSW is never chosen automatically: its build is the slowest by far on few cores and it needs
    more memory than IVF-Flat; ask for it with ``kind="hnsw"`` when query latency matters most.
    The budget defaults to half the physical RAM. Raises UserError when not even PQ codes fit.
    """
    if n <= 0:
        return "flat"
    budget = memory_budget(max_memory_bytes, config)
    if n <= config.flat_max_n and estimate_memory("flat", n, dim) <= budget:
        return "flat"
    if estimate_memory("ivf-flat", n, dim) <= budget:
        return "ivf-flat"
    need = estimate_memory("ivf-pq", n, dim, refine="none", config=config)
    if need <= budget:
        return "ivf-pq"
    raise UserError(f"--max-memory {budget / 2**30:.2f} GiB is too small for {n} vectors of dimension {dim}: "
                    f"even product-quantised codes need {need / 2**30:.2f} GiB; raise --max-memory or pass a "
                    "smaller --m.")


# ---- build -----------------------------------------------------------------------------------
def factory_string(kind: str, n: int, dim: int, nlist: int | None = None, m: int | None = None, nbits: int = 8,
                   refine: str = "none", config: AnnConfig = DEFAULT) -> str:
    """The ``faiss.index_factory`` description of an index kind (e.g. ``IVF1024,PQ64,Refine(SQ8)``)."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{config.hnsw_m},Flat"
    nlist = nlist or default_nlist(n)
    if kind == "ivf-flat":
        return f"IVF{nlist},Flat"
    if kind == "ivf-pq":
        m = m or default_m(dim)
        if dim % m:
            raise UserError(f"--m {m}: must divide the embedding dimension {dim} (e.g. {default_m(dim)}).")
        if nbits not in (4, 8):
            raise UserError(f"nbits {nbits}: use 8 (PQ) or 4 (fast-scan PQ).")
        pq = f"PQ{m}np" if nbits == 8 else f"PQ{m}x4fs"  # np: skip slow polysemous training
        if nbits == 4 and m % 2:
            raise UserError(f"--m {m}: fast-scan (4-bit) PQ needs an even m.")
        suffix = {"none": "", "sq8": ",Refine(SQ8)", "flat": ",RFlat"}[refine]
        return f"IVF{nlist},{pq}{suffix}"
    raise UserError(f"--index-type {kind}: use one of auto, exact, {', '.join(KINDS[1:])}.")


def _check_vectors(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be (n, D), got shape {vectors.shape}")
    return vectors


def training_sample(vectors: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """A seeded random subset of ``size`` rows (all rows when n ≤ size), in original order."""
    n = len(vectors)
    if n <= size:
        return vectors
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows])


def normalise_kind(kind: str) -> str:
    """'exact' is an alias of 'flat'; 'ivfpq' / 'ivf_pq' spellings are accepted."""
    k = kind.lower().replace("_", "-")
    return {"exact": "flat", "ivfflat": "ivf-flat", "ivfpq": "ivf-pq"}.get(k, k)


def build_ann(vectors: np.ndarray, kind: str = "auto", nlist: int | None = None, m: int | None = None,
              nbits: int = 8, max_memory: int | None = None, sample: int | None = None, seed: int = 0,
              refine: str = "auto", config: AnnConfig = DEFAULT) -> faiss.Index:
    """Build an inner-product FAISS index over ``vectors`` (n, D) float32, L2-normalised rows.

    ``kind`` "auto" uses :func:`choose_kind`. IVF kinds are trained on ``sample`` rows drawn with
    ``seed`` (default ``train_per_list·nlist``, at most ``max_train``). ``refine`` for IVF-PQ is
    "auto" (strongest that fits ``max_memory``), "flat", "sq8" or "none". Ids are row positions.
    """
    vectors = _check_vectors(vectors)
    n, dim = vectors.shape
    kind = normalise_kind(kind)
    if kind == "auto":
        kind = choose_kind(n, dim, max_memory, config)
    if kind not in KINDS:
        raise UserError(f"--index-type {kind}: use one of auto, exact, {', '.join(KINDS[1:])}.")
    if kind in ("ivf-flat", "ivf-pq"):
        nlist = nlist or default_nlist(n)
        if nlist < 1 or nlist > max(1, n):
            raise UserError(f"--nlist {nlist}: must be between 1 and the number of vectors ({n}).")
    if kind == "ivf-pq" and refine == "auto":
        refine = choose_refine(n, dim, memory_budget(max_memory, config), nlist, m, nbits, config)
    desc = factory_string(kind, n, dim, nlist, m, nbits, refine if kind == "ivf-pq" else "none", config)
    if kind == "ivf-pq" and n < 2 ** nbits:  # each PQ codebook has 2**nbits centroids to train
        raise UserError(f"--index-type ivf-pq: needs at least {2 ** nbits} vectors to train its codebooks, the "
                        f"index has {n}; use --index-type exact (or ivf-flat) for a collection this small.")
    index = faiss.index_factory(dim, desc, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = config.ef_construction
    if kind in ("ivf-flat", "ivf-pq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = config.kmeans_iters
        ivf.cp.seed = seed
        size = sample or min(config.max_train, max(config.train_per_list * nlist, 256 * 40))
        if kind == "ivf-pq":  # PQ codebooks (2**nbits centroids per sub-space) need enough points too
            size = max(size, min(n, 64 * 2 ** nbits))
            # small collections: fewer points than FAISS's 39/centroid rule is fine for codebooks
            # (refine re-ranks anyway); without this FAISS prints a warning per sub-quantiser
            pq_cp = faiss.downcast_index(ivf).pq.cp
            pq_cp.min_points_per_centroid = 1
            pq_cp.max_points_per_centroid = config.pq_points_per_centroid
            pq_cp.niter = config.pq_iters
            pq_cp.seed = seed
        index.train(training_sample(vectors, size, seed))
    elif not index.is_trained:
        index.train(vectors)
    for start in range(0, n, config.add_chunk):
        index.add(vectors[start:start + config.add_chunk])
    if kind == "ivf-pq" and refine != "none":
        faiss.downcast_index(index).k_factor = config.k_factor
    set_nprobe(index, config.nprobe if kind != "hnsw" else config.ef_search)
    return index


# ---- search-time knobs ------------------------------------------------------------------------
def index_kind(index: faiss.Index) -> str:
    """The kind ("flat", "ivf-flat", "ivf-pq", "hnsw") of a FAISS index built by :func:`build_ann`."""
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexRefine):
        idx = faiss.downcast_index(idx.base_index)
    if isinstance(idx, faiss.IndexHNSW):
        return "hnsw"
    try:
        ivf = faiss.extract_index_ivf(idx)
    except RuntimeError:
        return "flat"
    return "ivf-flat" if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFlat) else "ivf-pq"


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    """Search breadth: inverted lists scanned (IVF), or ``efSearch`` (HNSW); no-op for exact indexes.

    Larger is slower and more accurate. Clipped to ``nlist`` (IVF) or the number of vectors (HNSW), so
    any value is safe (2**31 would overflow FAISS's int, 3e8 would allocate gigabytes).
    """
    if nprobe < 1:
        raise UserError(f"--nprobe {nprobe}: must be at least 1.")
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexRefine):
        idx = faiss.downcast_index(idx.base_index)
    if isinstance(idx, faiss.IndexHNSW):  # a breadth above the collection size only costs memory
        idx.hnsw.efSearch = int(min(nprobe, max(1, idx.ntotal)))
        return
    try:
        ivf = faiss.extract_index_ivf(idx)
    except RuntimeError:
        return
    ivf.nprobe = int(min(nprobe, ivf.nlist))


def get_nprobe(index: faiss.Index) -> int | None:
    """Current nprobe (IVF) / efSearch (HNSW), None for exact indexes."""
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexRefine):
        idx = faiss.downcast_index(idx.base_index)
    if isinstance(idx, faiss.IndexHNSW):
        return int(idx.hnsw.efSearch)
    try:
        return int(faiss.extract_index_ivf(idx).nprobe)
    except RuntimeError:
        return None


# ---- evaluation ------------------------------------------------------------------------------
def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int = 10, chunk: int = 262_144) -> np.ndarray:
    """Exact top-k row positions by inner product (numpy, chunked over the collection): (m, k)."""
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    k = min(k, len(vectors))
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), chunk):
        s = queries @ np.asarray(vectors[start:start + chunk], dtype=np.float32).T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        best_s = np.concatenate([best_s, np.take_along_axis(s, part, 1)], axis=1)
        best_i = np.concatenate([best_i, part + start], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1)


def recall_at_k(ann_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |ANN top-k ∩ exact top-k| / k (ids < 0, FAISS's "no result", never match)."""
    ann_ids, exact_ids = np.atleast_2d(ann_ids)[:, :k], np.atleast_2d(exact_ids)[:, :k]
    if len(ann_ids) != len(exact_ids):
        raise ValueError(f"{len(ann_ids)} ANN rows vs {len(exact_ids)} exact rows")
    if len(ann_ids) == 0:
        return float("nan")
    kk = exact_ids.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(e.tolist())) for a, e in zip(ann_ids, exact_ids)]
    return float(np.mean(hits) / kk) if kk else float("nan")


def measure_recall(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """recall@k of ``index`` against exact search over ``vectors`` for ``queries``."""
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return recall_at_k(ids, exact_topk(vectors, queries, k), k)


# ---- persistence -----------------------------------------------------------------------------
def save_ann(index: faiss.Index, path: str | Path) -> None:
    """Write ``index`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    atomic_write_bytes(path, faiss.serialize_index(index).tobytes())


def load_ann(path: str | Path, mmap: bool = False) -> faiss.Index:
    """Read an index written by :func:`save_ann` (``mmap`` maps IVF lists instead of reading them)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such ANN index file; rebuild with `calibclip index ... --index-type`.")
    flags = faiss.IO_FLAG_MMAP if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except (RuntimeError, MemoryError) as exc:  # garbage, truncated, or another program's file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"{path}: damaged approximate index ({first}); rebuild it with `calibclip index FOLDER "
                        f"--out {path.parent}` (or delete the file to search exactly).") from None


# ---- synthetic data (tests, benchmarks) --------------------------------------------------------
def clustered_vectors(n: int, dim: int = 512, n_clusters: int | None = None, intrinsic_dim: int = 24,
                      spread: float = 0.6, noise: float = 0.08, seed: int = 0,
                      chunk: int = 131_072) -> np.ndarray:
    """Synthetic L2-normalised embeddings with cluster + low-rank structure, like CLIP features.

    Each row = cluster centre + ``spread``·(a point of a random ``intrinsic_dim`` subspace shared by
    its cluster) + ``noise``·isotropic noise, normalised. Uniform noise would make every neighbour
    equidistant in 512 D and recall meaningless; this has real near neighbours.
    """
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(8, int(math.sqrt(max(n, 1))) // 2)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32) / math.sqrt(dim)
    bases = rng.standard_normal((n_clusters, intrinsic_dim, dim)).astype(np.float32) / math.sqrt(dim)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        b = min(chunk, n - start)
        c = rng.integers(0, n_clusters, size=b)
        z = rng.standard_normal((b, intrinsic_dim)).astype(np.float32) * spread
        x = centres[c]
        for j in np.unique(c):  # per cluster: (rows, r) @ (r, D), no (b, r, D) temporary
            rows = np.nonzero(c == j)[0]
            x[rows] += z[rows] @ bases[j]
        x += rng.standard_normal((b, dim)).astype(np.float32) * (noise / math.sqrt(dim))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + b] = x
    return out


# ---- on-disk index integration (``<name>.idx/ann.faiss``) ---------------------------------------
ANN_FILE = "ann.faiss"


@dataclass
class AnnReport:
    """What building the approximate index of a store did (printed by ``calibclip index``)."""

    kind: str
    n: int
    factory: str = ""
    recall10: float | None = None
    queries: int = 0
    seconds: float = 0.0
    reused: bool = False


def ids_fingerprint(ids: np.ndarray) -> str:
    """Identity of the item order an ANN index was built over (its ids are positions in it)."""
    import hashlib

    return f"{len(ids)}:{hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()}"


def describe(index: faiss.Index) -> str:
    """Short human description of a built index, e.g. ``IVF1024,PQ64np,Refine(SQ8)``."""
    idx = faiss.downcast_index(index)
    refine = ""
    if isinstance(idx, faiss.IndexRefine):
        inner = faiss.downcast_index(idx.refine_index)
        refine = ",RFlat" if isinstance(inner, faiss.IndexFlat) else ",Refine(SQ8)"
        idx = faiss.downcast_index(idx.base_index)
    if isinstance(idx, faiss.IndexHNSW):
        return f"HNSW{idx.hnsw.nb_neighbors(1)},Flat"
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(idx))
    except RuntimeError:
        return "Flat"
    if isinstance(ivf, faiss.IndexIVFFlat):
        return f"IVF{ivf.nlist},Flat"
    pq = ivf.pq
    return f"IVF{ivf.nlist},PQ{pq.M}{'x4fs' if pq.nbits == 4 else ''}{refine}"


def build_store_ann(store, kind: str | None = "auto", nlist: int | None = None, m: int | None = None,
                    nbits: int = 8, max_memory: int | None = None, sample_queries: int = 200, seed: int = 0,
                    config: AnnConfig = DEFAULT) -> AnnReport:
    """Build (or keep) the approximate index of an :class:`~calibclip.index.store.EmbeddingStore`.

    ``kind`` None reuses the settings recorded by the previous build (else "auto"). An exact
    kind removes any ANN file (search is brute force). Otherwise the index is built over the
    "plain" embeddings in id order, saved atomically as ``ann.faiss`` beside the shards, and its
    recall@10 against exact search is measured on ``sample_queries`` rows drawn (seeded) from the
    collection. Nothing is rebuilt when the items and settings are unchanged.
    """
    import json
    import time

    t0 = time.perf_counter()
    path = Path(store.root) / ANN_FILE
    prev = json.loads(store.get_info("ann", "null") or "null")
    if kind is None:
        if prev is None:
            kind = "auto"
        else:
            kind, nlist, m, nbits = prev["request"], prev.get("nlist"), prev.get("m"), prev.get("nbits", 8)
            max_memory = prev.get("max_memory")
    request = normalise_kind(kind)
    ids, vectors, _ = store.load_matrix("plain")
    n, dim = vectors.shape
    chosen = choose_kind(n, dim, max_memory, config) if request == "auto" else request
    params = dict(request=request, kind=chosen, nlist=nlist, m=m, nbits=nbits, max_memory=max_memory,
                  fingerprint=ids_fingerprint(ids))
    if chosen == "flat":
        path.unlink(missing_ok=True)
        store.set_info(ann=json.dumps(dict(params, kind="flat")))
        return AnnReport(kind="flat", n=n, factory="Flat (exact)", recall10=1.0, seconds=time.perf_counter() - t0)
    if prev is not None and path.exists() and all(prev.get(k) == v for k, v in params.items()) \
            and _readable(path, n):
        return AnnReport(kind=chosen, n=n, factory=prev.get("factory", ""), recall10=prev.get("recall10"),
                         queries=prev.get("queries", 0), seconds=time.perf_counter() - t0, reused=True)
    if n < 2:
        raise UserError(f"--index-type {chosen}: the index has {n} item(s); approximate indexes need more "
                        "(use --index-type exact).")
    index = build_ann(vectors, chosen, nlist=nlist, m=m, nbits=nbits, max_memory=max_memory, seed=seed,
                      config=config)
    rows = training_sample(np.arange(n), min(sample_queries, n), seed + 1)
    recall = measure_recall(index, vectors, vectors[rows], k=10)
    save_ann(index, path)
    factory = describe(index)
    store.set_info(ann=json.dumps(dict(params, factory=factory, recall10=recall, queries=len(rows))))
    return AnnReport(kind=chosen, n=n, factory=factory, recall10=recall, queries=len(rows),
                     seconds=time.perf_counter() - t0)


def _readable(path: Path, n: int) -> bool:
    """Is the ANN file there to be reused an index of ``n`` vectors? (A damaged one is rebuilt.)"""
    try:
        return load_ann(path, mmap=True).ntotal == n
    except UserError:
        return False


def open_store_ann(store, ids: np.ndarray) -> faiss.Index | None:
    """The store's ANN index when one was built for exactly these items, else None (exact search).

    A stale file (items added or removed since it was built) is ignored with a warning, so search
    stays correct; the next ``calibclip index`` rebuilds it.
    """
    import json
    import warnings

    info = json.loads(store.get_info("ann", "null") or "null")
    path = Path(store.root) / ANN_FILE
    if info is None or info.get("kind") == "flat" or not path.exists():
        return None
    if info.get("fingerprint") != ids_fingerprint(ids):
        warnings.warn(f"{path}: built for a different set of items; searching exactly. Run `calibclip index` "
                      "again to rebuild the approximate index.", stacklevel=3)
        return None
    index = load_ann(path)
    if index.ntotal != len(ids):
        raise UserError(f"{path}: damaged approximate index ({index.ntotal} vectors for {len(ids)} items); rebuild "
                        f"it with `calibclip index FOLDER --out {path.parent}`.")
    return index
