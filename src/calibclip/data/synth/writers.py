"""Write the synthetic benchmarks to disk in the official formats of real benchmarks.

- TIR  → Flickr30K Karpathy split: ``dataset_flickr30k.json`` + ``flickr30k-images/``
- TBPR → CUHK-PEDES: ``reid_raw.json`` + ``imgs/``
- CIR  → CIRR rc2: ``captions/cap.rc2.{split}.json``, ``image_splits/split.rc2.{split}.json``,
  images under ``train/<k>/``, ``dev/``, ``test1/``. Unlike the real CIRR, our test1 captions keep
  ``target_hard``/``target_soft`` (we know the targets), so the test split can be evaluated locally.

Split sizes are "about n images" for every task: TIR writes n images, TBPR n // 3 identities
(2–4 shots each), CIR n // 6 image sets (6 images, 2 queries each).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from calibclip.atomic import atomic_write, atomic_write_text
from calibclip.data.synth import items as I
from calibclip.errors import UserError

TASKS = ("tir", "tbpr", "cir")
SPLITS = ("train", "val", "test")
TASK_DIRS = {"tir": "flickr30k", "tbpr": "cuhk-pedes", "cir": "cirr"}
CIRR_SPLIT = {"train": "train", "val": "val", "test": "test1"}
CIRR_DIR = {"train": "train", "val": "dev", "test": "test1"}
# Pair ids and person ids are unique across splits: each split gets its own block.
ID_BLOCK = 1_000_000


def tokens(text: str) -> list[str]:
    """Karpathy-style tokens: lower-case words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text.lower())


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _save_png(img: Image.Image, path: Path) -> None:
    atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def _sizes(n: int | Mapping[str, int]) -> dict[str, int]:
    sizes = {"test": n} if isinstance(n, int) else dict(n)
    bad = [s for s in sizes if s not in SPLITS]
    if bad:
        raise UserError(f"unknown split(s) {bad}; use {list(SPLITS)}.")
    if any(v < 0 for v in sizes.values()):
        raise UserError("split sizes must be >= 0.")
    return sizes


def write_tir(out_dir: Path, sizes: Mapping[str, int], seed: int, progress: bool = True) -> Path:
    """Flickr30K Karpathy JSON with 5 captions per image."""
    images, imgid, sentid = [], 0, 0
    for split, n in sizes.items():
        for i in tqdm(range(n), desc=f"tir/{split}", disable=not progress, leave=False):
            item = I.tir_item(seed, split, i)
            filename = f"{split}_{i:06d}.png"
            _save_png(item.image, out_dir / "flickr30k-images" / filename)
            sents = []
            for raw in item.captions:
                sents.append({"tokens": tokens(raw), "raw": raw, "imgid": imgid, "sentid": sentid})
                sentid += 1
            images.append({"filepath": "flickr30k-images", "filename": filename, "imgid": imgid, "split": split,
                           "sentids": [s["sentid"] for s in sents], "sentences": sents})
            imgid += 1
    path = out_dir / "dataset_flickr30k.json"
    _write_json(path, {"images": images, "dataset": "flickr30k"})
    return path


def write_tbpr(out_dir: Path, sizes: Mapping[str, int], seed: int, progress: bool = True) -> Path:
    """CUHK-PEDES reid_raw.json: one record per image, person ids shared by an identity's shots."""
    records = []
    for split, n in sizes.items():
        for i in tqdm(range(n // 3), desc=f"tbpr/{split}", disable=not progress, leave=False):
            item = I.tbpr_item(seed, split, i)
            pid = SPLITS.index(split) * ID_BLOCK + i + 1
            for k, shot in enumerate(item.shots):
                rel = f"synth_{split}/{pid:07d}_{k}.png"
                _save_png(shot.image, out_dir / "imgs" / rel)
                records.append({"split": split, "captions": shot.captions, "file_path": rel,
                                "processed_tokens": [tokens(c) for c in shot.captions], "id": pid})
    path = out_dir / "reid_raw.json"
    _write_json(path, records)
    return path


def cirr_name(split: str, set_id: int, member: int) -> str:
    """CIRR-style image name, e.g. 'dev-147-0-img3'."""
    return f"{CIRR_DIR[split]}-{set_id}-0-img{member}"


def write_cir(out_dir: Path, sizes: Mapping[str, int], seed: int, progress: bool = True) -> Path:
    """CIRR rc2 caption and image-split files, one pair of files per split."""
    for split, n in sizes.items():
        caps, names = [], {}
        for i in tqdm(range(n // I.CIR_SET_SIZE), desc=f"cir/{split}", disable=not progress, leave=False):
            item = I.cir_item(seed, split, i)
            members = [cirr_name(split, i, m) for m in range(len(item.images))]
            for name, img in zip(members, item.images):
                sub = f"train/{i % 100}" if split == "train" else CIRR_DIR[split]
                names[name] = f"./{sub}/{name}.png"
                _save_png(img, out_dir / sub / f"{name}.png")
            for ref, tgt, text in item.pairs:
                caps.append({"pairid": SPLITS.index(split) * ID_BLOCK + len(caps), "reference": members[ref],
                             "target_hard": members[tgt], "target_soft": {members[tgt]: 1.0}, "caption": text,
                             "img_set": {"id": i, "members": members}})
        _write_json(out_dir / "captions" / f"cap.rc2.{CIRR_SPLIT[split]}.json", caps)
        _write_json(out_dir / "image_splits" / f"split.rc2.{CIRR_SPLIT[split]}.json", names)
    return out_dir / "captions"


WRITERS = {"tir": write_tir, "tbpr": write_tbpr, "cir": write_cir}


def generate(out_dir: str | Path, task: str, n: int | Mapping[str, int], seed: int = 0,
             progress: bool = True) -> Path:
    """Write one synthetic benchmark to ``out_dir`` in its official format; return the main file.

    ``task``: 'tir' (Flickr30K format), 'tbpr' (CUHK-PEDES) or 'cir' (CIRR). ``n``: about how many
    images per split, as ``{"train": 20000, "val": 500, "test": 500}``; an int means the test split only.
    Same seed and sizes → byte-identical files.
    """
    if task not in TASKS:
        raise UserError(f"task {task!r}: use one of {list(TASKS)}.")
    return WRITERS[task](Path(out_dir), _sizes(n), int(seed), progress)


def generate_all(root: str | Path, seed: int = 0, sizes: Mapping[str, int] | None = None,
                 progress: bool = True) -> dict[str, Path]:
    """All three benchmarks under ``root/{flickr30k,cuhk-pedes,cirr}``; returns task → main file."""
    sizes = sizes or {"train": 3000, "val": 300, "test": 300}
    return {t: generate(Path(root) / TASK_DIRS[t], t, sizes, seed, progress) for t in TASKS}
