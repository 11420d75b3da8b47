"""Embedding pipeline for ``calibclip index``: scan → plan (new/changed only) → decode in workers → embed → store.

Decoding and preprocessing run in DataLoader worker processes so they overlap with the model's
forward pass; each batch is committed to the store before the next one starts, which is what
makes an interrupted run resumable.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from calibclip.backends.base import Encoder
from calibclip.calib.features import image_feature_sets
from calibclip.cores import torch_threads, usable_cores
from calibclip.images import BadImage, decode_image, file_sha1, iter_image_files
from calibclip.index.store import EmbeddingStore, FileStat
from calibclip.oom import Halving

log = logging.getLogger("calibclip.index")


@dataclass
class IndexSummary:
    """What one indexing run did."""

    added: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    links_skipped: list[str] = field(default_factory=list)  # one warning line per symlink not followed
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0


def scan(folder: str | Path, follow_symlinks: bool = False, skipped: list[str] | None = None) -> list[FileStat]:
    """Stat every image file under ``folder``; paths are absolute with every symlink resolved.

    The symlink rule (the same for index, search and serve): a link whose target lies inside
    ``folder`` is followed, and its target is indexed once (two names of one file are one item);
    a link leaving ``folder`` is skipped with a reason appended to ``skipped``, unless
    ``follow_symlinks``. Broken links are skipped the same way. Linked directories are not entered.
    """
    root = Path(folder).resolve()
    out, seen = [], set()
    for p in iter_image_files(folder):
        real = p.resolve()
        if p.is_symlink():
            if not real.exists():
                if skipped is not None:
                    skipped.append(f"{p}: broken symlink (target {real} does not exist); skipped")
                continue
            if not real.is_relative_to(root) and not follow_symlinks:
                if skipped is not None:
                    skipped.append(f"{p}: symlink to {real}, outside {root}; skipped "
                                   "(pass --follow-symlinks to index it)")
                continue
        if str(real) in seen:
            continue
        try:
            st = real.stat()
        except OSError:
            continue
        seen.add(str(real))
        out.append(FileStat(str(real), st.st_size, st.st_mtime))
    return out


def plan(store: EmbeddingStore, stats: Sequence[FileStat], verify: bool = False,
         ) -> tuple[list[FileStat], int, list[str]]:
    """Split a scan into (to embed, number unchanged, paths gone from disk).

    A file is re-embedded when its size or mtime changed, or (``verify``) when its bytes no
    longer hash to the stored SHA-1. A file that failed before is retried on every run (it may
    have been fixed without its size or time changing, e.g. permissions), except a file removed
    with `calibclip rm`, which stays out until its size or mtime changes.
    """
    known, failed, removed = store.known(), store.known_failures(), store.removed_by_user()
    hashes = store.known_sha1() if verify else {}
    todo, unchanged = [], 0
    for s in stats:
        out = removed.get(s.path)
        if out is not None and out[0] == s.size and abs(out[1] - s.mtime) < 1e-6:
            continue  # removed by the user and not changed since
        prev = known.get(s.path)
        if prev is not None and prev[0] == s.size and abs(prev[1] - s.mtime) < 1e-6 \
                and (not verify or _sha1_or_none(s.path) == hashes.get(s.path)):
            unchanged += 1
        else:
            todo.append(s)
    present = {s.path for s in stats}
    gone = [p for p in list(known) + list(failed) if p not in present]
    return todo, unchanged, gone


def _sha1_or_none(path: str) -> str | None:
    try:
        return file_sha1(path)
    except OSError:
        return None  # unreadable now: re-embedding it records the failure


class _DecodeDataset(Dataset):
    """Reads, hashes and decodes one file; failures come back as a reason string."""

    def __init__(self, stats: Sequence[FileStat]) -> None:
        self.stats = stats

    def __len__(self) -> int:
        return len(self.stats)

    def __getitem__(self, i: int):
        import hashlib

        path = self.stats[i].path
        try:
            data = Path(path).read_bytes()
            return i, decode_image(data, path), hashlib.sha1(data).hexdigest(), None
        except BadImage as exc:
            return i, None, None, str(exc)
        except OSError as exc:
            return i, None, None, f"{path}: cannot read ({exc})"


class _Collate:
    """A batch of decoded images → (positions, pixel values, SHA-1s, failures).

    The images are preprocessed in one processor call per batch (in the decode worker when there
    is one): a call per image cost the small-model index ~10 % in the processor's own overhead.
    An image the batch call cannot take is found by preprocessing one by one and becomes a failure.
    """

    def __init__(self, preprocess, paths: Sequence[str]) -> None:
        self.preprocess = preprocess
        self.paths = paths  # by dataset position, for the failure messages

    def __call__(self, batch):
        bad = [(b[0], b[3]) for b in batch if b[3] is not None]
        ok = [b for b in batch if b[3] is None]
        if not ok:
            return [], None, [], bad
        try:
            pixels = self.preprocess([b[1] for b in ok])
        except Exception:  # noqa: BLE001 - find the image at fault, keep the rest
            kept, tensors = [], []
            for b in ok:
                try:
                    tensors.append(self.preprocess([b[1]])[0])
                    kept.append(b)
                except Exception as exc:  # noqa: BLE001 - any processor error is this file's failure
                    bad.append((b[0], f"{self.paths[b[0]]}: cannot preprocess ({type(exc).__name__}: {exc})"))
            ok = kept
            pixels = torch.stack(tensors) if tensors else None
        return [b[0] for b in ok], pixels, [b[2] for b in ok], bad


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding workers must not compete with the model's threads
    exit_with_parent()


def exit_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (even by SIGKILL).

    PyTorch's DataLoader workers notice a dead parent only between items, after seconds; a
    ``kill -9`` of ``calibclip index`` must not leave decoders running. No-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def embed_into(store: EmbeddingStore, encoder: Encoder, todo: Sequence[FileStat], batch_size: int = 64,
               num_workers: int = 2, dtype: str = "float16", progress: bool = True) -> tuple[int, list]:
    """Embed ``todo`` into ``store`` batch by batch; returns (added, failures)."""
    if not todo:
        return 0, []
    cuda = encoder.device.type == "cuda"
    # pinned host batches let the copy to the GPU overlap with the previous batch's forward pass
    loader = DataLoader(_DecodeDataset(todo), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_Collate(encoder.preprocess, [s.path for s in todo]),
                        worker_init_fn=_worker_init if num_workers else None,
                        persistent_workers=False, prefetch_factor=4 if num_workers else None, pin_memory=cuda)
    added, failures = 0, []
    halving = Halving("batch of images", tqdm.write if progress else log.warning)
    bar = tqdm(total=len(todo), unit="img", desc="indexing", disable=not progress, dynamic_ncols=True)
    try:
        for idx, pixels, sha1s, bad in loader:
            for i, reason in bad:
                if progress:  # one line per bad file, printed above the bar
                    tqdm.write(f"warning: skipped {reason}")
                else:
                    log.warning("skipped %s", reason)
                failures.append((todo[i], reason))
            if bad:
                store.add_failures([(todo[i], reason) for i, reason in bad])
            if idx:
                pixels = pixels.to(encoder.device, non_blocking=cuda)
                sets = halving(lambda px: image_feature_sets(encoder, px, encoder.calibration), pixels)
                feats = {k: v.float().cpu().numpy() for k, v in sets.items()}  # one copy per batch: the store commits it
                store.add_batch([todo[i] for i in idx], sha1s, feats, dtype=dtype)
                added += len(idx)
            bar.update(len(idx) + len(bad))
    finally:
        bar.close()
    return added, failures


def thread_plan(cores: int | None = None, num_workers: int | None = None) -> tuple[int, int]:
    """(decode workers, torch threads) for indexing on ``cores`` cores (default: the usable ones).

    Decoding overlaps the model only where a core is spare: on 1–2 cores every core goes to the
    model and decoding runs between batches (a worker beside torch's threads slowed the forward
    pass 16 % for a ViT-B/32 and 3x for a small model on 2 cores); from 3 cores one worker per
    four cores (at most 4) decodes and the model keeps the rest. An explicit ``num_workers``
    is kept and the model gets the cores left beside it (at least one).
    """
    cores = max(1, usable_cores() if cores is None else cores)
    if num_workers is None:
        num_workers = 0 if cores <= 2 else min(4, max(1, cores // 4))
    return num_workers, max(1, cores - num_workers)


def default_workers() -> int:
    """Decode workers for this machine (see :func:`thread_plan`)."""
    return thread_plan()[0]


def index_folder(store: EmbeddingStore, folder: str | Path, encoder: Encoder, batch_size: int = 64,
                 num_workers: int | None = None, dtype: str = "float16", progress: bool = True,
                 follow_symlinks: bool = False, verify: bool = False) -> IndexSummary:
    """Bring the store up to date with ``folder``: add new/changed images, forget deleted ones.

    ``follow_symlinks`` and ``verify``: see :func:`scan` and :func:`plan`.
    """
    start = time.perf_counter()
    links: list[str] = []
    stats = scan(folder, follow_symlinks=follow_symlinks, skipped=links)
    todo, unchanged, gone = plan(store, stats, verify=verify)
    removed = store.remove(gone) if gone else 0
    workers, threads = thread_plan(num_workers=num_workers)
    with torch_threads(min(torch.get_num_threads(), threads)):  # never more than asked for by the caller
        added, failures = embed_into(store, encoder, todo, batch_size, workers, dtype, progress)
    return IndexSummary(added=added, unchanged=unchanged, removed=removed, links_skipped=links,
                        failed=[(s.path, r) for s, r in failures], seconds=time.perf_counter() - start)

