"""``calibclip.Index``: build, update, open and search an image collection index."""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from PIL import Image

from calibclip.backends.base import Encoder
from calibclip.calib.config import CalibConfig
from calibclip.calib.features import text_feature_sets
from calibclip.errors import UserError
from calibclip.index.embed import IndexSummary, index_folder
from calibclip.index.exact import exact_search
from calibclip.index.store import EmbeddingStore


@dataclass
class Hit:
    """One search result."""

    rank: int
    score: float
    path: str
    id: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_index_path(folder: str | Path) -> Path:
    """``./photos`` → ``./photos.idx``."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.idx"


def _calib_dict(cfg: Any) -> dict | None:
    return None if cfg is None else cfg.to_dict()


def _same_image_features(built: dict | None, asked: dict | None) -> bool:
    """Would the gallery be embedded identically? Only CVE fields change stored features."""
    if built is None or asked is None:
        return built is None and asked is None
    return CalibConfig.from_dict(built).image_fingerprint() == CalibConfig.from_dict(asked).image_fingerprint()


def _model_source(encoder: Encoder) -> str:
    return encoder.source or encoder.name


def same_model(info: dict[str, str], encoder: Encoder) -> bool:
    """Is ``encoder`` the model an index was built with? By fingerprint when both have one, else by location.

    Indexes from before fingerprints recorded the model as typed; a relative path is compared
    after resolving it from the current directory (the only meaning it ever had).
    """
    built_fp, fp = info.get("model_fingerprint"), encoder.fingerprint
    if built_fp and fp:
        return built_fp == fp
    built = info.get("model")
    if built is None or built in (encoder.name, _model_source(encoder)):
        return True
    return Path(built).expanduser().exists() and str(Path(built).expanduser().resolve()) == _model_source(encoder)


def prepare_store(out: Path, encoder: Encoder, dtype: str, rebuild: bool, source: str, wait: bool = True,
                  ) -> EmbeddingStore:
    """Open/create the index at ``out`` as its one writer and check it matches this run's model, CVE and dtype.

    Shared by ``Index.build`` and the Ray pipeline; ``source`` (folder or URL) is recorded. The
    writer lock is held until the store is closed; ``wait=False`` fails at once when another
    process writes the index. With ``rebuild`` a damaged meta.sqlite is started afresh.
    """
    if dtype not in ("float16", "float32"):
        raise UserError(f"--dtype {dtype}: use float16 or float32.")
    store = EmbeddingStore(out, create=True, writer=True, wait=wait, discard_damaged=rebuild)
    try:
        _check_and_record(store, out, encoder, dtype, rebuild, source)
    except BaseException:
        store.close()
        raise
    return store


def _check_and_record(store: EmbeddingStore, out: Path, encoder: Encoder, dtype: str, rebuild: bool,
                      source: str) -> None:
    info = store.info()
    calib = _calib_dict(encoder.calibration)
    if info and not rebuild:
        if not same_model(info, encoder):
            raise UserError(f"{out}: built with model '{info.get('model')}', not '{encoder.name}'; "
                            "use the same --model, or --rebuild to re-embed everything.")
        if not _same_image_features(json.loads(info.get("calib", "null")), calib):
            raise UserError(f"{out}: built with a different calibration ({info.get('calib')}); "
                            "pass the same --calib/--calib-config, or --rebuild to re-embed everything.")
        if info.get("dtype", dtype) != dtype:
            raise UserError(f"{out}: stores {info.get('dtype')} embeddings; pass --dtype {info.get('dtype')} "
                            "or --rebuild.")
    if rebuild:
        store.clear()
    store.set_info(model=_model_source(encoder), model_fingerprint=encoder.fingerprint or "", dim=str(encoder.dim),
                   dtype=dtype, calib=json.dumps(calib), folder=source, format="1")


class Index:
    """A searchable index over an image collection (see docs/ARCHITECTURE.md for the layout)."""

    def __init__(self, root: str | Path, encoder: Encoder | None = None, shared: bool = False) -> None:
        self.root = Path(root)
        self.store = EmbeddingStore(self.root, shared=shared)
        self._encoder = encoder
        self._cache: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self._faiss: faiss.Index | None = None
        self._ann_checked = False  # the ANN file is looked up once per opening (and after reload)
        self._sets: frozenset[str] | None = None
        self.last_summary: IndexSummary | None = None
        self.ann_report = None  # calibclip.index.ann.AnnReport after build
        self.nprobe: int | None = None  # ANN search breadth (IVF lists / HNSW efSearch); None = as built

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def build(cls, folder: str | Path, encoder: Encoder, out: str | Path | None = None, batch_size: int = 64,
              num_workers: int | None = None, dtype: str = "float16", progress: bool = True,
              rebuild: bool = False, index_type: str | None = None, nlist: int | None = None,
              m: int | None = None, max_memory: int | None = None, follow_symlinks: bool | None = None,
              verify: bool = False, wait: bool = True) -> "Index":
        """Index ``folder`` into ``out`` (default ``<folder>.idx``); on an existing index adds new/changed files only.

        ``index_type`` ("auto", "exact", "ivf-flat", "ivf-pq", "hnsw"; None = as last built, else
        auto) builds an approximate index beside the embeddings (see :mod:`calibclip.index.ann`);
        its report, with recall@10 against exact search, is ``index.ann_report``.
        ``follow_symlinks`` (None: as last built, else False): index symlinks that leave ``folder``
        (see :func:`calibclip.index.embed.scan`). ``verify``: re-hash unchanged-looking files and
        re-embed those whose bytes changed. ``wait``: when another process is writing ``out``,
        wait for it (True) or raise a UserError at once.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{folder}: not a directory; pass the folder of images to index.")
        out = Path(out) if out is not None else default_index_path(folder)
        store = prepare_store(out, encoder, dtype, rebuild, str(folder.resolve()), wait=wait)
        try:
            if follow_symlinks is None:
                follow_symlinks = store.get_info("follow_symlinks", "0") == "1"
            store.set_info(follow_symlinks="1" if follow_symlinks else "0")
            summary = index_folder(store, folder, encoder, batch_size=batch_size, num_workers=num_workers,
                                   dtype=dtype, progress=progress, follow_symlinks=follow_symlinks, verify=verify)
            from calibclip.index.ann import build_store_ann

            ann_report = build_store_ann(store, index_type, nlist=nlist, m=m, max_memory=max_memory)
        finally:
            store.close()
        index = cls(out, encoder)
        index.last_summary = summary
        index.ann_report = ann_report
        return index

    @classmethod
    def open(cls, path: str | Path, encoder: Encoder | None = None, shared: bool = False) -> "Index":
        """Open an existing index; the encoder is loaded from the recorded model when first needed.

        ``shared``: usable from several threads, one at a time (a server serialising its searches).
        """
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: no such index; build it with `calibclip index FOLDER --out {path}`.")
        return cls(path, encoder, shared=shared)

    # ---- properties ----------------------------------------------------------------------
    @property
    def info(self) -> dict[str, str]:
        return self.store.info()

    @property
    def calibration(self) -> dict | None:
        """The CalibConfig (as a dict) the gallery was embedded with, or None."""
        return json.loads(self.store.get_info("calib", "null") or "null")

    @property
    def model(self) -> str:
        """The model the index was built with: absolute folder or HF id (as typed, for old indexes)."""
        return self.store.get_info("model") or ""

    def model_to_load(self) -> str:
        """:attr:`model`, or a one-line error when the folder it names is gone (then ``--model`` points elsewhere)."""
        model = self.model
        looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1
        if looks_local and not Path(model).expanduser().exists():
            raise UserError(f"{self.root}: built with the model at {model}, which does not exist (here); pass "
                            "--model with the folder of the same model.")
        return model

    def check_model(self, encoder: Encoder) -> None:
        """Refuse a model that is not the one the gallery was embedded with (dimension, then fingerprint)."""
        info = self.info
        dim = int(info.get("dim", 0) or 0)
        if dim and encoder.dim != dim:
            raise UserError(f"--model {encoder.name}: embeds into {encoder.dim} dimensions, but {self.root} holds "
                            f"{dim}-dimensional embeddings of {info.get('model')}; use that model.")
        if not same_model(info, encoder):
            raise UserError(f"--model {encoder.name}: not the model {self.root} was built with "
                            f"({info.get('model')}; its files differ); use that model, or re-index with "
                            "`calibclip index ... --rebuild`.")

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from calibclip.backends.loading import load

            enc = load(self.model_to_load())
            self.check_model(enc)
            self._encoder = enc
        return self._encoder

    @encoder.setter
    def encoder(self, enc: Encoder) -> None:
        self._encoder = enc

    def matrix(self, feature_set: str = "plain") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(ids, embeddings, paths) of one feature set, cached in memory."""
        if feature_set not in self._cache:
            self._cache[feature_set] = self.store.load_matrix(feature_set)
        return self._cache[feature_set]

    @property
    def paths(self) -> list[str]:
        return self.matrix()[2]

    def __len__(self) -> int:
        return len(self.matrix()[0])

    def embeddings(self, feature_set: str = "plain") -> np.ndarray:
        return self.matrix(feature_set)[1]

    def reload(self) -> None:
        """Drop cached matrices so the next search sees images added since opening."""
        self._cache.clear()
        self._faiss = None
        self._ann_checked = False
        self._sets = None

    # ---- search --------------------------------------------------------------------------
    def _faiss_index(self) -> faiss.Index | None:
        """The approximate index built beside the embeddings (nprobe applied), or None: search exactly."""
        if not self._ann_checked:
            from calibclip.index.ann import open_store_ann

            self._faiss = open_store_ann(self.store, self.matrix()[0])  # approximate index if built
            self._ann_checked = True
        if self._faiss is not None and self.nprobe is not None:
            from calibclip.index.ann import set_nprobe

            set_nprobe(self._faiss, self.nprobe)
        return self._faiss

    def search_vectors(self, queries: np.ndarray, k: int = 10, spare_torch: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product search: (scores (m, k), positions (m, k)); positions index ``paths``.

        Exact (numpy over the one in-memory copy of the rows, ties to the lower position) unless an
        approximate index was built for exactly these items. ``spare_torch``: an encoder pass
        follows (as in text search and serving), so the product leaves no BLAS thread pool
        spinning on the cores it needs (``calibclip.index.exact``); off, numpy's BLAS threads.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, len(self)))
        if len(self) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        ann = self._faiss_index()
        if ann is not None:
            return ann.search(queries, k)
        return exact_search(self.embeddings("plain"), queries, k, spare_torch=spare_torch)

    def has_feature_set(self, name: str) -> bool:
        """Whether the store holds feature set ``name`` (looked up once per opening, not per search)."""
        if self._sets is None:
            self._sets = frozenset(self.store.feature_sets())
        return name in self._sets

    def _check_calibration(self, encoder: Encoder) -> None:
        cfg = encoder.calibration
        if cfg is None:
            return
        built = self.calibration
        if built is None and cfg.to_dict().get("cve", False):
            raise UserError(f"{self.root}: this index was built without calibration, so it has no CVE features; "
                            "rebuild it with `calibclip index ... --calib`, or pass --reencode.")
        # Only the CVE fields shape the stored features; DCC / similarity knobs may change per search.
        if built is not None and not _same_image_features(built, cfg.to_dict()):
            raise UserError(f"{self.root}: built with CVE settings {built}, which differ from the ones asked for; "
                            "search with the same CVE fields in --calib-config, or pass --reencode.")

    def rank(self, feats: dict[str, Any], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rank the gallery for query feature sets ("plain", and "dcc" with calibration)."""
        q_plain = np.asarray(feats["plain"], dtype=np.float32)
        cfg = self.encoder.calibration
        if cfg is None or "dcc" not in feats:
            return self.search_vectors(q_plain, k, spare_torch=True)
        from calibclip.calib import discriminative_scores

        g_plain = self.embeddings("plain")
        g_cve = self.embeddings("cve") if self.has_feature_set("cve") else g_plain
        return discriminative_scores(q_plain, np.asarray(feats["dcc"], dtype=np.float32), g_plain, g_cve, cfg,
                                     min(k, len(g_plain)))

    def _hits(self, scores: np.ndarray, pos: np.ndarray, min_score: float | None = None,
              exclude: Collection[int] = (), k: int | None = None) -> list[Hit]:
        """Hits of one ranked row: positions < 0 (ANN padding), ids in ``exclude`` and scores below
        ``min_score`` dropped, at most ``k``, ranks renumbered from 1."""
        ids, _, paths = self.matrix()
        kept = [(float(s), int(p)) for s, p in zip(scores, pos)
                if p >= 0 and int(ids[p]) not in exclude and (min_score is None or s >= min_score)]
        return [Hit(rank=r + 1, score=s, path=paths[p], id=int(ids[p])) for r, (s, p) in enumerate(kept[:k])]

    def _cutoffs(self, feats: dict[str, Any], cutoff: str | float | None) -> list[float | None]:
        """Per-query score cut of :mod:`calibclip.index.cutoff` (None: no cut), same similarity as :meth:`rank`."""
        from calibclip.index.cutoff import parse_cutoff, sample_positions, thresholds

        q = np.atleast_2d(np.asarray(feats["plain"], np.float32))
        z = parse_cutoff(cutoff)
        if z is None:
            return [None] * len(q)
        sample = sample_positions(len(self))
        whole = len(sample) == len(self)  # every item (galleries up to SAMPLE): the rows as they are, no copy

        def rows(name: str) -> np.ndarray:
            g = self.embeddings(name)
            return g if whole else g[sample]

        scores = q @ rows("plain").T
        cfg = self.encoder.calibration if "dcc" in feats else None
        if cfg is not None and cfg.disc_sim:
            g_cve = rows("cve" if self.has_feature_set("cve") else "plain")
            scores = scores + cfg.lam * (np.atleast_2d(np.asarray(feats["dcc"], np.float32)) @ g_cve.T)
        return [float(t) for t in thresholds(scores, z)]

    def find(self, path: str | Path) -> int | None:
        """Id of an indexed image given its path (any spelling of it), or of an indexed file with the same
        content (SHA-1); None when the image is not in the index."""
        p = Path(path).expanduser()
        row = self.store.conn.execute("SELECT id FROM items WHERE path=?", (str(p.resolve()),)).fetchone()
        if row is None and p.is_file():
            from calibclip.images import file_sha1

            row = self.store.conn.execute("SELECT id FROM items WHERE sha1=? ORDER BY id",
                                          (file_sha1(p),)).fetchone()
        return None if row is None else int(row[0])

    def check_query(self, text: str) -> str:
        """Validate a text query: empty → error; longer than the context → warning (it is truncated)."""
        if not text or not text.strip():
            raise UserError("the query is empty; give some words to search for, e.g. \"a red car\".")
        enc = self.encoder
        n = enc.token_count(text) if hasattr(enc, "token_count") else 0
        if n > enc.context_length:
            warnings.warn(f"query is {n} tokens, longer than the model's context of {enc.context_length}; "
                          "it was truncated.", stacklevel=3)
        return text.strip()

    def search(self, query: str | Sequence[str], k: int = 10,
               cutoff: str | float | None = None) -> list[Hit] | list[list[Hit]]:
        """Text → image search. A list of queries gives a list of hit lists.

        ``cutoff``: None (the top ``k``), ``"auto"`` or a z value — keep only the hits that stand out
        from the query's own score distribution over the gallery (rule: :mod:`calibclip.index.cutoff`).
        """
        single = isinstance(query, str)
        texts = [self.check_query(q) for q in ([query] if single else query)]
        self._check_calibration(self.encoder)
        feats = {k_: v.cpu().numpy() for k_, v in text_feature_sets(self.encoder, texts,
                                                                     self.encoder.calibration).items()}
        scores, pos = self.rank(feats, k)
        hits = [self._hits(s, p, c) for s, p, c in zip(scores, pos, self._cutoffs(feats, cutoff))]
        return hits[0] if single else hits

    def search_image(self, image: Image.Image | np.ndarray, k: int = 10, cutoff: str | float | None = None,
                     exclude: Collection[int] = ()) -> list[Hit]:
        """Image → image search (query by example): a PIL image, or an image embedding (D,).

        ``exclude``: ids left out of the results (e.g. the query image itself).
        """
        q = image if isinstance(image, np.ndarray) else self.encoder.encode_images([image])
        feats = {"plain": np.atleast_2d(np.asarray(q, np.float32))}
        scores, pos = self.search_vectors(feats["plain"], k + len(exclude), spare_torch=True)
        return self._hits(scores[0], pos[0], self._cutoffs(feats, cutoff)[0], exclude=exclude, k=k)

    def search_composed(self, image: Image.Image, text: str, phi: Any, k: int = 10,
                        prompt: str = "a photo of $ that {}", cutoff: str | float | None = None,
                        exclude: Collection[int] = ()) -> list[Hit]:
        """Composed search: reference image + modification text through a φ projection.

        ``exclude``: ids left out of the results — pass the reference's id (:meth:`find`), as the
        benchmarks do, to never return the reference itself.
        """
        text = self.check_query(text)
        enc = self.encoder
        if enc.calibration is not None:
            from calibclip.cir import composed_feature_set

            self._check_calibration(enc)
            feats = {k_: np.asarray(v) for k_, v in composed_feature_set(enc, [image], [text], phi,
                                                                         prompt=prompt).items()}
            scores, pos = self.rank(feats, k + len(exclude))
        else:
            from calibclip.cir import encode_composed

            feats = {"plain": np.asarray(encode_composed(enc, [image], [text], phi, prompt=prompt), np.float32)}
            scores, pos = self.search_vectors(feats["plain"], k + len(exclude), spare_torch=True)
        return self._hits(scores[0], pos[0], self._cutoffs(feats, cutoff)[0], exclude=exclude, k=k)

    def search_like(self, reference: int | str | Path, k: int = 10, cutoff: str | float | None = None,
                    keep_reference: bool = False) -> list[Hit]:
        """Images similar to an indexed image, given by id or path; the reference itself is left out
        unless ``keep_reference``. A path not in the index is opened and encoded."""
        ref_id = reference if isinstance(reference, int) else self.find(reference)
        if ref_id is None:
            from calibclip.images import BadImage, open_image

            try:
                image = open_image(reference)
            except BadImage as exc:
                raise UserError(f"{exc} (and it is not in the index {self.root}).") from None
            return self.search_image(image, k=k, cutoff=cutoff)
        ids = self.matrix()[0]
        where = np.nonzero(ids == ref_id)[0]
        if not len(where):
            raise UserError(f"no image with id {ref_id} in {self.root}.")
        return self.search_image(self.embeddings()[where[0]], k=k, cutoff=cutoff,
                                 exclude=() if keep_reference else (ref_id,))
