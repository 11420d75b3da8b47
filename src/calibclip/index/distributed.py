"""``calibclip index --ray``: embed a collection on a Ray cluster into the ordinary on-disk index.

Pipeline (Ray Data, streaming)::

    file list (folder / manifest / fsspec URL, on the driver)
      → read + SHA-1 + decode + preprocess        CPU tasks (retried when a worker dies)
      → embed                                     actors: the model is loaded once per actor
      → commit                                    driver: one shard + one SQLite transaction per batch

The driver is the only writer: each embedded batch becomes one ``shards/<set>-<n>.npy`` file and
one SQLite transaction (see :mod:`calibclip.index.store`), so the result is byte-for-byte the
format of the single-process path, and a run that is interrupted or loses workers resumes from
the batches already written (the next run embeds only what is missing, exactly like the
single-process ``calibclip index``). Fault tolerance is Ray Data's default: a decode task whose
worker dies is re-run, a dead embedding actor is restarted and its batch re-sent (both without
limit; an exception raised by our own code is not retried — a bad image is recorded as a failure
instead of raising). Batches are committed in input order
(``preserve_order``), so ids are assigned in scan order as in the single-process path.

Installation: ``pip install 'calibclip[ray]'`` (ray[data], pyarrow, fsspec). On a remote
cluster every node needs calibclip installed and must be able to read the sources (use URLs such
as ``s3://`` or a shared filesystem); the index itself is written where the driver runs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calibclip.backends.base import Encoder
from calibclip.calib.features import image_feature_sets
from calibclip.errors import UserError
from calibclip.index.embed import IndexSummary, plan
from calibclip.index.index import prepare_store
from calibclip.index.store import EmbeddingStore, FileStat

log = logging.getLogger("calibclip.index")


@dataclass(frozen=True)
class RayConfig:
    """Resources and fault tolerance of the Ray pipeline."""

    local_cpus: int | None = None      # CPUs of an in-process cluster (--ray local); None = all cores
    num_actors: int | None = None      # embedding actors; None = one per GPU, else half the CPUs (≥ 1)
    cpus_per_actor: float = 1.0
    threads_per_actor: int = 1         # torch threads inside each CPU actor
    gpus_per_actor: float | None = None  # None = 1 when the cluster has GPUs and --device is not cpu
    # CPUs per decode task. Half a CPU: decoding waits on reads (object stores) much of the time;
    # a request different from the actors' also stops Ray Data from fusing decoding into the
    # actors, which would serialise it with the forward pass instead of overlapping the two.
    decode_cpus: float = 0.5
    rows_per_block: int = 256          # files per input block (unit of scheduling)
    crash_marker: str | None = None    # tests: the first decode task that finds this file missing exits


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UserError("--ray needs Ray Data: pip install 'calibclip[ray]'  (or: pip install 'ray[data]')") from None
    return ray


def check_address(address: str) -> None:
    """``local``, ``auto``, ``ray://host:port`` or ``host:port``; anything else is a UserError."""
    if not (address in ("local", "auto") or address.startswith("ray://") or ":" in address):
        raise UserError(f"--ray {address}: use local, auto, or ray://HEAD:10001.")


def connect(address: str, config: RayConfig = RayConfig()) -> bool:
    """Start (``local``) or join (``auto``, ``ray://host:10001``, ``host:6379``) a cluster.

    Returns True when this call started/connected Ray (the caller shuts it down), False when Ray
    was already initialised in this process (it is reused as is).
    """
    check_address(address)
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING,
                                  configure_logging=True)
    if address == "local":
        kwargs["num_cpus"] = config.local_cpus or os.cpu_count() or 1
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({exc}); start one with "
                        "`ray start --head` or use --ray local.") from None
    return True


# ---- worker side -------------------------------------------------------------------------------
def _decode_batch(batch: dict[str, np.ndarray], processor: Any, crash_marker: str | None = None
                  ) -> dict[str, np.ndarray]:
    """CPU task: read, hash, decode and preprocess a batch of files; failures keep a reason string."""
    import hashlib

    import torch
    from PIL import Image

    from calibclip.images import BadImage, decode_image
    from calibclip.index.sources import read_bytes

    torch.set_num_threads(1)
    if crash_marker is not None and not os.path.exists(crash_marker):
        Path(crash_marker).touch()
        os._exit(1)  # simulate a preempted worker: Ray must re-run this task
    paths = [str(p) for p in batch["path"]]
    images, sha1s, errors = [], [], []
    for path in paths:
        try:
            data = read_bytes(path)
            images.append(decode_image(data, path))
            sha1s.append(hashlib.sha1(data).hexdigest())
            errors.append("")
        except (BadImage, OSError) as exc:
            images.append(None)
            sha1s.append("")
            errors.append(str(exc) if isinstance(exc, BadImage) else f"{path}: cannot read ({exc})")
    ok = [im for im in images if im is not None]
    probe = ok if ok else [Image.new("RGB", (8, 8))]  # shape of the processor's output
    pix = processor(images=probe, return_tensors="np")["pixel_values"].astype(np.float32)
    pixels = np.zeros((len(paths), *pix.shape[1:]), np.float32)
    if ok:
        pixels[[i for i, im in enumerate(images) if im is not None]] = pix
    return {"i": np.asarray(batch["i"]), "path": np.array(paths, dtype=object), "sha1": np.array(sha1s, dtype=object),
            "error": np.array(errors, dtype=object), "pixels": pixels}


class _Embedder:
    """Ray actor: loads the encoder once, embeds every batch it is given."""

    def __init__(self, model: str, device: str, calibration: dict | None, threads: int) -> None:
        import torch

        from calibclip.backends.loading import load

        torch.set_num_threads(threads)
        cfg = None
        if calibration is not None:
            from calibclip.calib import CalibConfig

            cfg = CalibConfig.from_dict(calibration)
        self.encoder = load(model, device=device, calibration=cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = np.array([e == "" for e in batch["error"]], dtype=bool)
        # an all-failed batch still runs one zero image so every block has the same columns
        rows = ok if ok.any() else np.eye(1, len(ok), dtype=bool)[0]
        feats = image_feature_sets(self.encoder, torch.from_numpy(np.ascontiguousarray(batch["pixels"][rows])),
                                   self.encoder.calibration)
        out = {k: batch[k] for k in ("i", "path", "sha1", "error")}
        for name, value in feats.items():
            arr = np.zeros((len(ok), value.shape[1]), np.float32)
            if ok.any():
                arr[ok] = value.float().cpu().numpy()
            out[f"feat_{name}"] = arr
        return out


# ---- driver side -------------------------------------------------------------------------------
def _resources(ray: Any, device: str, config: RayConfig) -> tuple[int, float, str]:
    """(number of actors, GPUs per actor, device string for the actors)."""
    cluster = ray.cluster_resources()
    gpus = float(cluster.get("GPU", 0))
    gpu_each = config.gpus_per_actor
    if gpu_each is None:
        gpu_each = 1.0 if gpus >= 1 and device != "cpu" else 0.0
    if config.num_actors is not None:
        actors = config.num_actors
    elif gpu_each > 0:
        actors = max(1, int(gpus // gpu_each))
    else:
        actors = max(1, int(cluster.get("CPU", 1)) // 2)
    actor_device = device if gpu_each > 0 else "cpu"
    return actors, gpu_each, actor_device


def embed_with_ray(store: EmbeddingStore, encoder: Encoder, model: str, todo: list[FileStat], device: str = "auto",
                   batch_size: int = 64, dtype: str = "float16", progress: bool = True,
                   config: RayConfig = RayConfig()) -> tuple[int, list[tuple[str, str]]]:
    """Run the Ray pipeline over ``todo`` and commit every batch to ``store``; returns (added, failures)."""
    if not todo:
        return 0, []
    ray = _import_ray()
    from tqdm import tqdm

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # ids in scan order, as the single-process path
    for flag in ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, flag):
            setattr(ctx, flag, False)  # our own bar below; Ray's would interleave with it
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines; our bar says it
    actors, gpu_each, actor_device = _resources(ray, device, config)
    by_path = {s.path: s for s in todo}
    items = [{"i": i, "path": s.path} for i, s in enumerate(todo)]
    blocks = max(1, -(-len(items) // config.rows_per_block))
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(_decode_batch, batch_size=batch_size, batch_format="numpy",
                        fn_kwargs=dict(processor=encoder.processor, crash_marker=config.crash_marker),
                        num_cpus=config.decode_cpus)
    calib = None if encoder.calibration is None else encoder.calibration.to_dict()
    ds = ds.map_batches(_Embedder, batch_size=batch_size, batch_format="numpy",
                        fn_constructor_kwargs=dict(model=model, device=actor_device, calibration=calib,
                                                   threads=config.threads_per_actor),
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=config.cpus_per_actor,
                        num_gpus=gpu_each)
    added, failures = 0, []
    bar = tqdm(total=len(todo), unit="img", desc=f"indexing (ray, {actors} actor(s))", disable=not progress,
               dynamic_ncols=True)
    try:
        for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            errors = [str(e) for e in batch["error"]]
            paths = [str(p) for p in batch["path"]]
            bad = [(by_path[p], e) for p, e in zip(paths, errors) if e]
            if bad:
                for _, reason in bad:
                    tqdm.write(f"warning: skipped {reason}") if progress else log.warning("skipped %s", reason)
                store.add_failures(bad)
                failures += [(s.path, r) for s, r in bad]
            ok = np.array([not e for e in errors], dtype=bool)
            if ok.any():
                feats = {k.removeprefix("feat_"): np.asarray(v)[ok] for k, v in batch.items() if k.startswith("feat_")}
                store.add_batch([by_path[p] for p, g in zip(paths, ok) if g],
                                [str(h) for h, g in zip(batch["sha1"], ok) if g], feats, dtype=dtype)
                added += int(ok.sum())
            bar.update(len(paths))
    finally:
        bar.close()
    return added, failures


def index_distributed(source: str | Path, encoder: Encoder, model: str | None = None, out: str | Path | None = None,
                      address: str = "local", batch_size: int = 64, dtype: str = "float16", device: str = "auto",
                      progress: bool = True, rebuild: bool = False, index_type: str | None = None,
                      nlist: int | None = None, m: int | None = None, max_memory: int | None = None,
                      config: RayConfig = RayConfig(), wait: bool = True):
    """``calibclip index SOURCE --ray ADDRESS``: the Ray counterpart of :meth:`calibclip.Index.build`.

    ``source`` is a local folder, a manifest (CSV/TSV/JSONL/Parquet of paths or URLs) or an fsspec
    URL. ``encoder`` (loaded on the driver) supplies the name, dimension, calibration and image
    processor; ``model`` (default ``encoder.name``) is what each actor loads. Incremental and
    resumable like the single-process path; returns the opened :class:`calibclip.Index`.
    """
    from calibclip.index.ann import build_store_ann
    from calibclip.index.index import Index, default_index_path
    from calibclip.index.sources import list_source

    check_address(address)
    source = str(source)
    if out is None:
        out = (Path(source.rstrip("/").rsplit("/", 1)[-1] + ".idx") if "://" in source
               else default_index_path(source))
    out = Path(out)
    model = model or encoder.name
    start = time.perf_counter()
    stats = list_source(source)
    folder = source if "://" in source or not Path(source).exists() else str(Path(source).resolve())
    store = prepare_store(out, encoder, dtype, rebuild, folder, wait=wait)
    try:
        todo, unchanged, gone = plan(store, stats)
        removed = store.remove(gone) if gone else 0
        owns = connect(address, config) if todo else False
        try:
            added, failures = embed_with_ray(store, encoder, model, todo, device=device, batch_size=batch_size,
                                             dtype=dtype, progress=progress, config=config)
        finally:
            if owns:
                import ray

                ray.shutdown()
        summary = IndexSummary(added=added, unchanged=unchanged, removed=removed, failed=failures,
                               seconds=time.perf_counter() - start)
        ann_report = build_store_ann(store, index_type, nlist=nlist, m=m, max_memory=max_memory)
    finally:
        store.close()
    index = Index(out, encoder)
    index.last_summary = summary
    index.ann_report = ann_report
    return index
