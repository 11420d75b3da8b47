"""Evaluation runner: read a benchmark, encode gallery (cached) and queries, compute the official metrics.

One ``evaluate(spec)`` call = one result row (a configuration: base, calib or rtd). Gallery features
are cached on disk per (dataset part, model, feature set + its config, data fingerprint), one file per
feature set: "plain" features are shared by every row of a ``--compare`` run, "cve" by calibrated rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from calibclip.calib.features import image_feature_sets, text_feature_sets
from calibclip.data import ComposedSet, RetrievalSet, canonical, fingerprint, read_dataset
from calibclip.data import DATASETS
from calibclip.errors import UserError
from calibclip.eval import metrics as M
from calibclip.eval.choices import MODES
from calibclip.eval.precision import precision_context, resolve_precision
from calibclip.eval.scoring import FeatureSims, similarity_source
from calibclip.oom import Halving, concat

SUBMISSION_TOP = 50  # CIRR recall and CIRCO submissions: top-50 names per query
SUBSET_TOP = 3  # CIRR recall_subset submission: top-3 inside the img_set


@dataclass
class EvalSpec:
    """Everything that defines one evaluation row."""

    dataset: str
    root: Path
    model: str
    mode: str = "base"
    split: str | None = None
    calib_config: Path | None = None
    phi: Path | None = None
    rtd: Path | None = None
    prompt: str | None = None  # free-text template; None: ``prompt_preset`` (default the rtd preset)
    prompt_preset: str | None = None  # cir.prompts.PRESETS name: rtd, searle, lincir, pic2word
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"  # fp32 | fp16 | bf16 | fp16-weights; auto = the benchmark's official (eval/precision.py)
    cache_dir: Path | None = None  # None: no feature cache
    results_dir: Path | None = Path("results")
    submission: Path | None = None
    progress: bool = True


@dataclass
class EvalResult:
    """One row: metrics plus the configuration, data fingerprint and timing that produced them."""

    dataset: str
    split: str
    model: str
    config: str
    metrics: dict[str, float]
    settings: dict[str, Any]
    data_fingerprint: str
    timing: dict[str, float]
    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)
    path: Path | None = None
    submission: list[str] = field(default_factory=list)
    label: str = ""  # the configuration in words, e.g. "LinCIR φ synth-phi + RTD synth-rtd"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


# ---------------------------------------------------------------------------------------------- config
def load_calib_config(path: Path | None) -> Any:
    """CalibConfig from a TOML file, or the defaults (imported lazily: calib/ is optional at import time)."""
    try:
        from calibclip.calib import CalibConfig
    except ImportError as exc:
        raise UserError(f"calibrated evaluation needs calibclip.calib, which is not available ({exc}).") from None
    if path is None:
        return CalibConfig()
    if not Path(path).is_file():
        raise UserError(f"--calib-config {path}: no such file.")
    return CalibConfig.from_toml(path)


def _calib_dict(cfg: Any) -> dict | None:
    if cfg is None:
        return None
    return cfg.to_dict() if hasattr(cfg, "to_dict") else asdict(cfg)


def _sha(obj: Any, n: int = 10) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def model_fingerprint(model: str) -> str:
    """Name + (for a local folder) the sizes and mtimes of its files: retrained weights → new cache key."""
    p = Path(model)
    files = sorted((str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime))
                   for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    return _sha([str(p.resolve()) if p.is_dir() else model, files])


def slug(text: str) -> str:
    """Filesystem-safe short name (the last path component of a model path or HF id)."""
    s = re.sub(r"[^A-Za-z0-9._+-]+", "_", Path(str(text).rstrip("/")).name or str(text))
    return s.strip("._") or "model"


def config_label(spec: EvalSpec, calib: Any) -> str:
    """Row name: base / calib[-<fp>] / rtd-<ckpt>, plus +<phi> for composed retrieval."""
    label = spec.mode
    if spec.mode == "calib" and calib is not None and (spec.calib_config is not None
                                                       or _calib_dict(calib) != _calib_dict(type(calib)())):
        label += f"-{_sha(_calib_dict(calib), 6)}"
    if spec.mode == "rtd" and spec.rtd is not None:
        label += f"-{slug(Path(spec.rtd).stem)}"
    if spec.phi is not None:
        label += f"+{slug(Path(spec.phi).stem)}"
        proto = _custom_prompt(spec)
        if proto is not None:  # keep rows apart by prompt
            label += f"@{proto.preset or _sha(proto.prompt, 6)}"
    return label


DEFAULT_PROMPT_TEXT = "a photo of $ that {}"


def _prompt(spec: EvalSpec) -> Any:
    """The composed-query protocol of a spec (cir.prompts.resolve_prompt)."""
    from calibclip.cir.prompts import resolve_prompt

    return resolve_prompt(spec.prompt, spec.prompt_preset)


def _custom_prompt(spec: EvalSpec) -> Any:
    """The spec's composed-query protocol when it is not the default one (the rtd preset), else None."""
    proto = _prompt(spec)
    return proto if proto.preset not in (None, "rtd") or proto.prompt != DEFAULT_PROMPT_TEXT else None


def readable_label(spec: EvalSpec, calib: Any) -> str:
    """The configuration as a person reads it: "baseline", "CalibCLIP", "CalibCLIP (config 3fa2b1)",
    "φ lincir", "φ lincir + RTD rtd_text" (checkpoint file names without their suffix)."""
    parts = []
    if spec.phi is not None:
        parts.append(f"φ {Path(spec.phi).stem}")
    if spec.mode == "calib":
        parts.append("CalibCLIP" + (f" (config {_sha(_calib_dict(calib), 6)})" if spec.calib_config else ""))
    elif spec.mode == "rtd":
        parts.append(f"RTD {Path(spec.rtd).stem}" if spec.rtd is not None else "RTD")
    label = " + ".join(parts) or "baseline"
    if spec.phi is not None and (proto := _custom_prompt(spec)) is not None:
        label += f" (prompt: {proto.preset or proto.prompt})"
    return label


# ---------------------------------------------------------------------------------------------- encoding
def _open(path: Path):
    from calibclip.images import BadImage, open_image

    try:
        return open_image(path)
    except BadImage as exc:
        raise UserError(f"benchmark image unreadable: {exc}") from None


def _open_cropped(item: tuple[Path, Any]):
    """An image, cut to its GeneCIS instance box when it has one."""
    path, box = item
    img = _open(path)
    if box is None:
        return img
    from calibclip.data.genecis import crop_instance

    return crop_instance(img, box)


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(n, i + size)


def _to_np(x: Any) -> np.ndarray:
    return (x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32))


def _joined(chunks: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Per-batch results (kept on the device: no per-batch host sync) joined and copied to the host once."""
    return {k: _to_np(concat(v)) for k, v in chunks.items()}


def _pixels(enc: Any, images: list[Any]) -> torch.Tensor:
    """Preprocessed batch on the encoder's device; on CUDA through pinned memory so the copy is asynchronous."""
    px = enc.preprocess(images)
    if getattr(enc, "device", torch.device("cpu")).type == "cuda":
        px = px.pin_memory().to(enc.device, non_blocking=True)
    return px


def _notice(progress: bool):
    return tqdm.write if progress else None


def encode_gallery(enc: Any, paths: list[Path], batch_size: int, progress: bool, desc: str,
                   boxes: list[Any] | None = None) -> dict[str, np.ndarray]:
    """Feature sets ("plain", plus "cve" with calibration) of every gallery image, decoded in threads.

    ``boxes``: per image an instance box to crop (GeneCIS attribute tasks) or None.
    """
    out: dict[str, list[Any]] = {}
    items = list(zip(paths, boxes if boxes is not None else [None] * len(paths)))
    halving = Halving("gallery batch", _notice(progress))
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for a, b in _batches(len(paths), batch_size):
            images = list(pool.map(_open_cropped, items[a:b]))
            feats = halving(lambda ims: image_feature_sets(enc, _pixels(enc, ims), enc.calibration), images)
            for k, v in feats.items():
                out.setdefault(k, []).append(v)
            bar.update(b - a)
    return _joined(out)


class FeatureCache:
    """Gallery features on disk, one ``.npy`` per (part, model, feature set + config, data fingerprint)."""

    def __init__(self, root: Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def path(self, key: str, feature_set: str, set_fp: str) -> Path | None:
        return None if self.root is None else self.root / f"{key}.{feature_set}-{set_fp}.npy"

    def load(self, key: str, wanted: dict[str, str]) -> dict[str, np.ndarray] | None:
        """All ``wanted`` sets (name → config fingerprint) from disk, or None if any is missing."""
        out = {}
        for name, fp in wanted.items():
            p = self.path(key, name, fp)
            if p is None or not p.is_file():
                return None
            out[name] = np.load(p)
        return out

    def save(self, key: str, feats: dict[str, np.ndarray], fps: dict[str, str]) -> None:
        from calibclip.atomic import atomic_save_npy

        for name, arr in feats.items():
            p = self.path(key, name, fps.get(name, "x"))
            if p is not None:
                atomic_save_npy(p, arr.astype(np.float32))


def _image_side(calib: Any) -> dict | None:
    """The calibration fields that change gallery features (CVE); DCC and re-ranking knobs do not."""
    d = _calib_dict(calib)
    if d is None:
        return None
    from calibclip.calib.config import IMAGE_FIELDS

    return {k: v for k, v in d.items() if k in IMAGE_FIELDS}


def _query_side(calib: Any) -> dict | None:
    """The calibration fields that change query features (all but the score-only re-ranking knobs)."""
    d = _calib_dict(calib)
    if d is None:
        return None
    from calibclip.calib.config import SCORE_FIELDS

    return {k: v for k, v in d.items() if k not in SCORE_FIELDS}


def gallery_features(enc: Any, paths: list[Path], key: str, cache: FeatureCache, batch_size: int,
                     progress: bool, boxes: list[Any] | None = None, memo: dict | None = None
                     ) -> tuple[dict[str, np.ndarray], bool]:
    """Gallery feature sets for ``enc`` (cached on disk, and in ``memo`` when given); (features, from_cache).

    The "cve" set is keyed by the image-side calibration fields only, so a sweep of DCC / re-ranking
    knobs encodes each gallery image once.
    """
    calib = enc.calibration
    fps = {"plain": "plain"}
    if calib is not None:
        fps["cve"] = _sha(_image_side(calib))
    mkey = ("gallery", key, tuple(sorted(fps.items())))
    if memo is not None and mkey in memo:
        return memo[mkey], True
    hit = cache.load(key, fps)
    if hit is None:
        hit = encode_gallery(enc, paths, batch_size, progress, f"gallery {key.split('-')[0]}", boxes)
        if calib is not None and "cve" not in hit:  # calibration with CVE switched off: the plain features serve
            hit["cve"] = hit["plain"]
        cache.save(key, hit, fps)
        cached = False
    else:
        cached = True
    if memo is not None:
        memo[mkey] = hit
    return hit, cached


def encode_texts(enc: Any, texts: list[str], batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    """Query feature sets ("plain", plus "dcc" with calibration) for a list of texts."""
    out: dict[str, list[Any]] = {}
    halving = Halving("query batch", _notice(progress))
    for a, b in tqdm(list(_batches(len(texts), batch_size)), desc="queries", disable=not progress, leave=False):
        for k, v in halving(lambda ts: text_feature_sets(enc, ts, enc.calibration), texts[a:b]).items():
            out.setdefault(k, []).append(v)
    return _joined(out)


def encode_composed_queries(enc: Any, ds: ComposedSet, phi: Any, prompt: str, batch_size: int, progress: bool,
                            fashioniq: str = "both") -> dict[str, np.ndarray]:
    """Composed query feature sets via calibclip.cir ("plain", plus "dcc" when ``enc.calibration`` is set).

    FashionIQ's two captions give one query per ``fashioniq`` mode (``cir.fashioniq_feature_set``):
    "both" normalize(normalize(q("c1 and c2")) + normalize(q("c2 and c1"))), "second-first" q("c2 and c1").
    """
    from calibclip import cir

    out: dict[str, list[np.ndarray]] = {}
    qs = ds.queries
    halving = Halving("query batch", _notice(progress))

    def run(pairs: list[tuple[Any, Any]]) -> dict[str, np.ndarray]:
        images, caps = [p[0] for p in pairs], [p[1] for p in pairs]
        if ds.name == "fashioniq":
            return cir.fashioniq_feature_set(enc, images, caps, phi, prompt, batch_size, mode=fashioniq)
        return cir.composed_feature_set(enc, images, caps, phi, prompt, batch_size)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for a, b in tqdm(list(_batches(len(qs), batch_size)), desc="composed queries", disable=not progress,
                         leave=False):
            batch = qs[a:b]
            images = list(pool.map(_open_cropped, [(q.reference_path, q.reference_box) for q in batch]))
            if ds.name == "fashioniq":
                caps = [(q.captions[0], q.captions[1] if len(q.captions) > 1 else q.captions[0]) for q in batch]
            else:
                caps = [q.captions[0] for q in batch]
            for k, v in halving(run, list(zip(images, caps))).items():
                out.setdefault(k, []).append(v)
    return _joined(out)


# ---------------------------------------------------------------------------------------------- metrics
def _part_metrics(ds: RetrievalSet | ComposedSet, q: dict[str, np.ndarray], g: dict[str, np.ndarray], calib: Any,
                  notes: list[str]) -> tuple[dict[str, float], Any]:
    src = similarity_source(q, g, calib)
    if isinstance(ds, RetrievalSet) and ds.task == "tbpr":
        return M.tbpr_metrics(src, ds.text_pids, ds.image_pids), src
    if isinstance(ds, RetrievalSet):
        out = M.tir_metrics(src, ds.text_image, i2t=False)
        out.pop("rsum")
        # Image→text always uses plain features: CalibCLIP calibrates text queries only.
        if calib is not None:
            notes.append("i2t uses plain features (CalibCLIP re-ranks text→image only)")
        out.update(M.i2t_metrics(FeatureSims(g["plain"], q["plain"]), ds.text_image))
        out["rsum"] = sum(out.values())
        return out, src
    if not ds.labelled:
        return {}, src
    if ds.name == "cirr":
        return M.cirr_metrics(src, [x.reference for x in ds.queries], [x.target for x in ds.queries],
                              [x.members for x in ds.queries]), src
    if ds.name == "circo":
        return M.circo_metrics(src, [x.positives for x in ds.queries]), src
    if ds.name == "genecis":
        return M.genecis_metrics(*genecis_block(ds, q, g, calib)), src
    return M.fashioniq_metrics(src, [x.target for x in ds.queries]), src


def genecis_block(ds: ComposedSet, q: dict[str, np.ndarray], g: dict[str, np.ndarray], calib: Any
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores over each query's own gallery (m, G), target column (m,), valid mask (m, G)) for GeneCIS.

    The reliable candidate space of CalibCLIP is the query's own gallery (10–15 images, below K), so a
    calibrated row scores every member with s0 + λ·cos(t̃, ṽ) (docs/methods/calibclip.md).
    """
    width = max(len(x.members) for x in ds.queries)
    cols = np.zeros((len(ds.queries), width), dtype=np.int64)
    mask = np.zeros((len(ds.queries), width), dtype=bool)
    for i, x in enumerate(ds.queries):
        cols[i, :len(x.members)] = x.members
        mask[i, :len(x.members)] = True
    qp, gp = q["plain"].astype(np.float32), g["plain"].astype(np.float32)
    scores = np.einsum("qd,qkd->qk", qp, gp[cols])
    if calib is not None and getattr(calib, "disc_sim", False) and "dcc" in q:
        gc = g.get("cve", g["plain"]).astype(np.float32)
        scores = scores + calib.lam * np.einsum("qd,qkd->qk", q["dcc"].astype(np.float32), gc[cols])
    target = np.array([x.members.index(x.target) for x in ds.queries], dtype=np.int64)
    return scores, target, mask


def _average_parts(per_part: dict[str, dict[str, float]]) -> dict[str, float]:
    """FashionIQ: category/metric for each category, then avg/metric and the overall average."""
    out = {f"{cat}/{k}": v for cat, m in per_part.items() for k, v in m.items()}
    keys = sorted({k for m in per_part.values() for k in m})
    for k in keys:
        out[f"avg/{k}"] = float(np.mean([m[k] for m in per_part.values() if k in m]))
    if keys:
        out["avg"] = float(np.mean([out[f"avg/{k}"] for k in keys]))
    return out


def genecis_headline(metrics: dict[str, float], notes: list[str]) -> dict[str, float]:
    """GeneCIS as the paper reports it: ``avg_R@1`` = mean of the sub-tasks' R@1 (unweighted by their
    sizes), first; the per-task and ``avg/R@k`` rows stay, the mean over R@1..3 (``avg``) is not reported."""
    tasks = sorted({k.split("/")[0] for k in metrics if "/" in k and not k.startswith("avg/")})
    if len(tasks) < 4:
        notes.append(f"avg_R@1 is over {len(tasks)} of the 4 GeneCIS sub-tasks ({', '.join(tasks)})")
    return {"avg_R@1": metrics["avg/R@1"], **{k: v for k, v in metrics.items() if k != "avg"}}


def _submission(ds: ComposedSet, src: Any) -> dict[str, dict[str, Any]]:
    """Official test-server JSON: CIRR recall (top-50, reference excluded) + recall_subset (top-3); CIRCO top-50."""
    ids = np.asarray(ds.image_ids, dtype=object)
    qids = [q.qid for q in ds.queries]
    if ds.name == "cirr":
        refs = [q.reference for q in ds.queries]
        top = M.topk_indices(src, SUBMISSION_TOP, exclude=refs)
        sub = M.subset_topk(src, [q.members for q in ds.queries], refs, SUBSET_TOP)
        return {"recall": {"version": "rc2", "metric": "recall", **{k: ids[t].tolist() for k, t in zip(qids, top)}},
                "recall_subset": {"version": "rc2", "metric": "recall_subset",
                                  **{k: ids[t[t >= 0]].tolist() for k, t in zip(qids, sub)}}}
    if ds.name == "circo":
        top = M.topk_indices(src, SUBMISSION_TOP)
        # The CIRCO server's example lists COCO image ids as JSON integers.
        num = [int(x) if str(x).isdigit() else x for x in ids]
        return {"recall": {k: [num[j] for j in t] for k, t in zip(qids, top)}}
    raise UserError(f"--submission: {ds.name} has no test server format; use it with cirr or circo.")


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (tmp + rename)."""
    from calibclip.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(obj, indent=1) + "\n")


def submission_paths(path: Path) -> dict[str, Path]:
    """CIRR writes two files: PATH (recall) and PATH with ``_subset`` before the suffix (recall_subset)."""
    path = Path(path)
    return {"recall": path, "recall_subset": path.with_name(f"{path.stem}_subset{path.suffix or '.json'}")}


# ---------------------------------------------------------------------------------------------- main
def _load_encoder(spec: EvalSpec, calib: Any) -> Any:
    from calibclip.backends.loading import load

    return load(spec.model, device=spec.device, calibration=calib)


def _apply_rtd(enc: Any, spec: EvalSpec) -> None:
    """Swap in the RTD text tower (in place) for an rtd row."""
    if spec.rtd is None:
        raise UserError("the rtd configuration needs --rtd CKPT (a checkpoint from `calibclip rtd train`).")
    from calibclip.cir.rtd import load_rtd

    load_rtd(enc, spec.rtd)


def _read_parts(name: str, root: Path, split: str, memo: dict | None) -> tuple[list[Any], str]:
    """The benchmark's parts and data fingerprint; kept in ``memo`` (a sweep) so they are read once."""
    mkey = ("dataset", name, str(root), split)
    if memo is not None and mkey in memo:
        return memo[mkey]
    parts = read_dataset(name, root, split)
    data_fp = fingerprint([f for p in parts for f in p.files], [x for p in parts for x in p.image_paths])
    if memo is not None:
        memo[mkey] = (parts, data_fp)
    return parts, data_fp


def evaluate(spec: EvalSpec, enc: Any = None, calib: Any = None, memo: dict | None = None) -> EvalResult:
    """Run one configuration on one benchmark; write ``results/<dataset>-<model>-<config>.json``.

    ``enc``: an already loaded encoder to reuse (its ``calibration`` is set for this row, and an rtd row
    swaps its text tower in place); else loaded from ``spec.model``. ``calib``: a CalibConfig for a calib
    row instead of ``spec.calib_config``. ``memo``: a dict kept across calls (a sweep) that holds the read
    benchmark, gallery and query features in memory, keyed by what changes them.
    """
    t_start = time.perf_counter()
    if spec.mode not in MODES:
        raise UserError(f"unknown configuration {spec.mode!r}; use {', '.join(MODES)}.")
    name = canonical(spec.dataset)
    task, default_split = DATASETS[name]
    split = spec.split or default_split
    if task == "cir" and spec.phi is None:
        raise UserError(f"{name} is composed retrieval: pass --phi (a LinCIR/SEARLE/Pic2Word or train-phi checkpoint).")
    if spec.mode == "rtd" and task != "cir":
        raise UserError("--rtd applies to composed retrieval (cirr, fashioniq, circo).")
    proto = _prompt(spec) if task == "cir" else None  # a bad --prompt fails before any reading
    parts, data_fp = _read_parts(name, spec.root, split, memo)
    if spec.mode != "calib":
        calib = None
    elif calib is None:
        calib = load_calib_config(spec.calib_config)
    if enc is None:
        enc = _load_encoder(spec, calib)
    else:
        enc.calibration = calib
    if spec.mode == "rtd":
        _apply_rtd(enc, spec)  # in place: a later base row needs a fresh encoder (evaluate_many does that)
    phi = None
    if spec.phi is not None and task == "cir":
        from calibclip.cir import load_phi

        phi = load_phi(spec.phi, device=getattr(enc, "device", "cpu"))
    ds_name = name if split == default_split else f"{name}.{split}"
    sub_path = spec.submission
    if sub_path is None and name in ("cirr", "circo") and not all(p.labelled for p in parts):
        # An unlabelled (test) split can only be scored by the server: write its submission by default.
        stem = f"{ds_name}-{slug(spec.model)}-{config_label(spec, calib)}"
        sub_path = Path(spec.results_dir or ".") / f"{stem}-submission.json"
    if sub_path is not None and name not in ("cirr", "circo"):
        raise UserError(f"--submission: {name} has no test server format; use it with cirr or circo.")
    cache = FeatureCache(spec.cache_dir)
    precision = resolve_precision(spec.precision, name, getattr(enc, "device", "cpu"))
    # fp32 keeps the cache key it always had; other precisions give other features, so other files
    model_key = f"{slug(spec.model)}-{model_fingerprint(spec.model)}" + ("" if precision == "fp32" else f"-{precision}")
    timing = {"gallery_s": 0.0, "queries_s": 0.0, "metrics_s": 0.0}
    per_part: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    submission: dict[str, dict] = {}
    cached_all = True
    n_queries = n_images = 0
    for part in parts:
        pname = (part.category if isinstance(part, ComposedSet) else None) or "all"
        t0 = time.perf_counter()
        key = f"{name}-{split}-{pname}-{model_key}-{data_fp}"
        with precision_context(enc, precision):
            g, cached = gallery_features(enc, part.image_paths, key, cache, spec.batch_size, spec.progress,
                                         getattr(part, "boxes", None), memo)
            cached_all &= cached
            t1 = time.perf_counter()
            qkey = ("queries", key, _sha([_query_side(calib), spec.mode, str(spec.phi), str(spec.rtd),
                                          proto.settings() if proto is not None else None]))
            if memo is not None and qkey in memo:
                q = memo[qkey]
            elif isinstance(part, RetrievalSet):
                q = encode_texts(enc, part.texts, max(spec.batch_size, 64), spec.progress)
            else:
                q = encode_composed_queries(enc, part, phi, proto.prompt, spec.batch_size, spec.progress,
                                            proto.fashioniq)
            if memo is not None:
                memo[qkey] = q
        t2 = time.perf_counter()
        per_part[pname], src = _part_metrics(part, q, g, calib, notes)
        if sub_path is not None and isinstance(part, ComposedSet):
            for kind, obj in _submission(part, src).items():
                submission.setdefault(kind, {}).update(obj)
        timing["gallery_s"] += t1 - t0
        timing["queries_s"] += t2 - t1
        timing["metrics_s"] += time.perf_counter() - t2
        n_images += len(part.image_paths)
        n_queries += len(part.texts) if isinstance(part, RetrievalSet) else len(part.queries)
    metrics = per_part["all"] if list(per_part) == ["all"] else _average_parts(per_part)
    if name == "genecis":
        metrics = genecis_headline(metrics, notes)
    if not metrics:
        notes.append(f"{name} {split} has no ground truth: only the submission file is produced")
    written = []
    for kind, obj in submission.items():
        p = submission_paths(sub_path)[kind]
        write_json(p, obj)
        written.append(str(p))
    timing["total_s"] = time.perf_counter() - t_start
    settings = {"mode": spec.mode, "calibration": _calib_dict(calib), "phi": str(spec.phi) if spec.phi else None,
                "rtd": str(spec.rtd) if spec.rtd else None,
                **(proto.settings() if proto is not None else {"prompt": None}),
                "batch_size": spec.batch_size, "precision": precision, "device": str(getattr(enc, "device", spec.device)),
                "root": str(spec.root), "gallery_cached": cached_all, "tie_rule": "stable by gallery index"}
    result = EvalResult(dataset=name, split=split, model=spec.model, config=config_label(spec, calib),
                        metrics={k: round(float(v), 4) for k, v in metrics.items()}, settings=settings,
                        data_fingerprint=data_fp, timing={k: round(v, 3) for k, v in timing.items()},
                        counts={"images": n_images, "queries": n_queries}, notes=sorted(set(notes)),
                        submission=written, label=readable_label(spec, calib))
    if spec.results_dir is not None:
        save_result(result, Path(spec.results_dir) / f"{ds_name}-{slug(spec.model)}-{result.config}.json")
    return result


def save_result(result: EvalResult, path: Path) -> Path:
    """Write one result's JSON (every metric, settings, fingerprint, timing, creation time) to ``path``."""
    result.path = Path(path)
    write_json(result.path, {**result.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return result.path


def evaluate_many(spec: EvalSpec, modes: list[str]) -> list[EvalResult]:
    """Several configurations on the same benchmark (``--compare``); the encoder is loaded once per model state.

    Calibrated rows encode the gallery once for both "plain" and "cve"; a base row after them reuses the
    cached "plain" features (and vice versa), so each image is encoded once per image-side configuration.
    """
    bad = [m for m in modes if m not in MODES]
    if bad or len(set(modes)) != len(modes):
        raise UserError(f"--compare {','.join(modes)}: give distinct configurations among {', '.join(MODES)}.")
    if "calib" in modes:
        load_calib_config(spec.calib_config)  # fail before any encoding if calibration is unavailable
    # Run calibrated rows first so their single gallery pass fills the plain cache too; report in given order.
    order = sorted(range(len(modes)), key=lambda i: modes[i] != "calib")
    shared = None
    results: dict[int, EvalResult] = {}
    for i in order:
        row = EvalSpec(**{**asdict(spec), "mode": modes[i]})
        if spec.submission is not None:  # one submission file per configuration
            sub = Path(spec.submission)
            row.submission = sub.with_name(f"{sub.stem}-{modes[i]}{sub.suffix}")
        if modes[i] == "rtd":
            results[i] = evaluate(row)  # RTD swaps the text tower in place: its own encoder
        else:
            shared = shared if shared is not None else _load_encoder(row, None)
            results[i] = evaluate(row, enc=shared)
    return [results[i] for i in range(len(modes))]
