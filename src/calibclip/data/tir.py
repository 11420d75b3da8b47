"""Text↔image retrieval readers: Flickr30K / MSCOCO Karpathy split JSON, and generic (image, caption) files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from calibclip.data.common import check_images, find_file, load_json, need_split, pick_base
from calibclip.data.schema import KarpathyImage, is_unicode, validate_records
from calibclip.data.types import RetrievalSet
from calibclip.errors import UserError

KARPATHY_FILES = {"flickr30k": "dataset_flickr30k.json", "mscoco": "dataset_coco.json"}
KARPATHY_SPLITS = ("train", "val", "test", "restval")
# Where the images usually sit relative to the folder holding the JSON (first match wins).
IMAGE_DIRS = {"flickr30k": ("flickr30k-images", "flickr30k_images", "images", "Images", ""),
              "mscoco": ("", "images", "coco")}


def read_karpathy(root: str | Path, dataset: str = "flickr30k", split: str = "test") -> RetrievalSet:
    """Read ``dataset_flickr30k.json`` / ``dataset_coco.json`` (Karpathy split) under ``root``.

    Gallery = the split's images in file order; queries = every raw caption of every gallery image, as
    CLIP_benchmark's ``zeroshot_retrieval`` and the papers count them (MSCOCO 5k test: 25,010 captions,
    a few images have 6 or 7; Flickr30K 1k test: 5,000). COCO entries carry ``filepath``
    (val2014/train2014); image folders are looked up next to the JSON. Every record is type-checked
    (``data.schema.KarpathyImage``).
    """
    if dataset not in KARPATHY_FILES:
        raise UserError(f"unknown Karpathy dataset {dataset!r}; use {list(KARPATHY_FILES)}.")
    need_split(split, KARPATHY_SPLITS, dataset)
    name = KARPATHY_FILES[dataset]
    ann = find_file(Path(root), name, ("", "annotations", "karpathy", "data"), f"{dataset} (Karpathy split JSON)")
    what = f"the Karpathy {name} format ({{'images': [{{'filename', 'split', 'sentences': [{{'raw'}}]}}]}})"
    obj = load_json(ann, dict, what)
    if not isinstance(obj.get("images"), list):
        raise UserError(f"{ann}: no 'images' list; expected {what}.")
    images = obj["images"]
    # Every entry's split is checked; the full schema only on the split read (MSCOCO: 5,000 of 123,287
    # entries), since the other splits' records cannot change its numbers and would double the read time.
    for i, e in enumerate(images):
        if not isinstance(e, dict):
            raise UserError(f"{ann}: images entry {i} is not a JSON object; expected {what}.")
        if not isinstance(e.get("split"), str):
            found = repr(e["split"])[:60] if "split" in e else "nothing"
            raise UserError(f"{ann}: images entry {i} field 'split' is not a string (found {found}); expected {what}.")
    numbers = [i for i, e in enumerate(images) if e["split"] == split]
    if not numbers:
        splits = sorted({e["split"] for e in images})
        raise UserError(f"{ann}: no images with split '{split}' (splits present: {', '.join(splits) or 'none'}).")
    entries = validate_records(ann, [images[i] for i in numbers], KarpathyImage, what, label="images entry",
                               numbers=numbers)

    def rel(e: KarpathyImage) -> str:
        return f"{e.filepath}/{e.filename}" if e.filepath else e.filename

    base = pick_base([ann.parent / d for d in IMAGE_DIRS[dataset]] + [Path(root)], rel(entries[0]), ann,
                     f"{dataset} images")
    paths, ids, texts, text_image = [], [], [], []
    for e in entries:
        r = rel(e)
        paths.append(base / r)
        ids.append(str(e.cocoid if e.cocoid is not None else e.imgid if e.imgid is not None else r))
        for s in e.sentences:
            texts.append(s.raw.strip())
            text_image.append(len(paths) - 1)
    check_images(paths, ann)
    return RetrievalSet(name=dataset, split=split, task="tir", image_paths=paths, image_ids=ids, texts=texts,
                        text_image=text_image, files=[ann])


PAIR_IMAGE_KEYS = ("image", "image_path", "filepath", "file", "path")
PAIR_TEXT_KEYS = ("caption", "text", "query")


def _pair_key(keys: list[str], wanted: tuple[str, ...], path: Path, role: str) -> str:
    for k in wanted:
        if k in keys:
            return k
    raise UserError(f"{path}: no {role} column/key (have {keys}); expected one of {list(wanted)}.")


def read_pairs(path: str | Path) -> RetrievalSet:
    """A CSV (header row) or JSONL file of (image, caption) pairs; image paths relative to the file's folder.

    Columns/keys: ``image`` (or image_path/filepath/file/path) and ``caption`` (or text/query). An image
    listed several times is one gallery item with several captions (text→image and image→text).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--root {path}: expected a .csv or .jsonl file of (image, caption) pairs.")
    try:
        rows, keys = _pair_rows(path)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8.") from None
    if not rows:
        raise UserError(f"{path}: no (image, caption) rows.")
    ik = _pair_key(keys, PAIR_IMAGE_KEYS, path, "image")
    tk = _pair_key(keys, PAIR_TEXT_KEYS, path, "caption")
    index: dict[str, int] = {}
    paths, texts, text_image = [], [], []
    for n, r in enumerate(rows, 1):
        for k in (ik, tk):
            if not isinstance(r.get(k), str) or not r[k].strip() or not is_unicode(r[k]):
                found = "nothing" if r.get(k) is None else repr(r[k])[:60]
                raise UserError(f"{path}: row {n} field '{k}' must be a non-empty Unicode string (found {found}).")
        img, cap = r[ik].strip(), r[tk].strip()
        if img not in index:
            index[img] = len(paths)
            paths.append(path.parent / img)
        texts.append(cap)
        text_image.append(index[img])
    check_images(paths, path)
    return RetrievalSet(name=path.stem, split="all", task="tir", image_paths=paths, image_ids=list(index),
                        texts=texts, text_image=text_image, files=[path])


def _pair_rows(path: Path) -> tuple[list[dict], list[str]]:
    """(rows, column names) of a pairs CSV/JSONL file."""
    rows: list[dict] = []
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            keys = list(reader.fieldnames or [])
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}: line {n} is not JSON ({exc.msg}).") from None
                if not isinstance(rows[-1], dict):
                    raise UserError(f"{path}: line {n} is not a JSON object with image and caption keys.")
        keys = sorted({k for r in rows for k in r})
    else:
        raise UserError(f"{path}: unsupported extension '{path.suffix}'; use .csv or .jsonl.")
    return rows, keys
