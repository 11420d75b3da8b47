"""GeneCIS (Vaze et al., CVPR 2023): four conditional-similarity sub-tasks, each query with its own gallery.

Official annotation format (facebookresearch/genecis README, "GeneCIS annotation format"): one JSON
list per sub-task, ``genecis/{change_attribute,focus_attribute,change_object,focus_object}.json``;
each record has ``reference`` and ``target`` (one image each), ``gallery`` (a list of images) and
``condition`` (the text). Attribute tasks name Visual Genome 1.2 images as
``{"image_id", "instance_bbox": [x, y, w, h]}``; object tasks name COCO 2017 val images as
``{"val_image_id"}``.

Root layout we read (``--root ROOT``): ``ROOT/genecis/<task>.json`` (or ``ROOT/<task>.json``),
Visual Genome images ``<image_id>.jpg`` under ``ROOT/VG_100K_all`` (the official config's merged
folder), ``ROOT/VG_100K`` or ``ROOT/VG_100K_2`` (also under a ``vg/`` or ``visual_genome/`` folder),
COCO images ``<val_image_id:012d>.jpg`` under ``ROOT/val2017`` (or ``coco/val2017``,
``coco2017/val2017``). E.g. ROOT/genecis/*.json, ROOT/vg/VG_100K/*.jpg, ROOT/coco2017/val2017/*.jpg.

As the official evaluation code does:
- attribute-task images are the instance box, dilated by 0.7 of its size (left/top moved out by
  0.7·w / 0.7·h, right/bottom at left/top + 1.7·w / 1.7·h, clipped to the image) and padded to a
  square with black — ``crop_instance``;
- only records whose gallery has the most common length are kept (the official loader's filter),
  and the target is scored against the query's own gallery: R@1/2/3 of the target among
  [target] + gallery.
A sub-task is one ``ComposedSet`` (its ``category``); the unique (image, box) pairs of all its records
form the set's image list and each query's ``members`` are its own gallery, target first.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from calibclip.data.common import check_images, find_file, load_json, need_split
from calibclip.data.types import ComposedQuery, ComposedSet
from calibclip.errors import UserError

TASKS = ("change_attribute", "focus_attribute", "change_object", "focus_object")
DILATION = 0.7  # official VAW loader: box grown by 0.7 of its width/height
VG_DIRS = tuple(f"{top}{d}" for top in ("", "vg/", "visual_genome/") for d in ("VG_100K_all", "VG_100K", "VG_100K_2"))
COCO_DIRS = ("val2017", "coco/val2017", "coco2017/val2017")
WHAT = "GeneCIS records ({'reference', 'target', 'gallery', 'condition'})"

Box = tuple[float, float, float, float]


def crop_instance(img: Image.Image, bbox: Box, dilation: float = DILATION) -> Image.Image:
    """The official attribute-task crop: dilated instance box, clipped to the image, padded to a black square."""
    x, y, w, h = (float(v) for v in bbox)
    width, height = img.size
    left, top = max(0.0, x - dilation * w), max(0.0, y - dilation * h)
    right, bottom = min(width, left + (1 + dilation) * w), min(height, top + (1 + dilation) * h)
    crop = img.crop((left, top, right, bottom))
    side = max(crop.size)
    if crop.size[0] == crop.size[1]:
        return crop
    square = Image.new(crop.mode, (side, side), (0,) * len(crop.getbands()) if len(crop.getbands()) > 1 else 0)
    square.paste(crop, ((side - crop.size[0]) // 2, (side - crop.size[1]) // 2))
    return square


def _image_dirs(root: Path, task: str) -> list[Path]:
    return [root / d for d in (VG_DIRS if task.endswith("attribute") else COCO_DIRS)]


def _locate(root: Path, dirs: list[Path], name: str, ann: Path, task: str) -> Path:
    for d in dirs:
        if (d / name).is_file():
            return d / name
    shown = ", ".join(str(d.relative_to(root)) for d in dirs)
    src = "Visual Genome 1.2" if task.endswith("attribute") else "COCO 2017 val"
    raise UserError(f"{ann}: image {name} not found under {root} ({shown}); put the {src} images there.")


def _image_key(rec: Any, task: str, ann: Path, i: int, role: str) -> tuple[str, Box | None]:
    """(file name, box or None) of one image entry of a record."""
    if not isinstance(rec, dict):
        raise UserError(f"{ann}: record {i} {role} is not an object; expected {WHAT}.")
    if task.endswith("attribute"):
        if "image_id" not in rec or "instance_bbox" not in rec:
            raise UserError(f"{ann}: record {i} {role} needs 'image_id' and 'instance_bbox' (Visual Genome entry).")
        box, image_id = rec["instance_bbox"], rec["image_id"]
        nums = [_number(v) for v in box] if isinstance(box, (list, tuple)) and len(box) == 4 else []
        if len(nums) != 4 or None in nums or nums[2] <= 0 or nums[3] <= 0:  # type: ignore[operator]
            raise UserError(f"{ann}: record {i} {role} instance_bbox {box!r} is not [x, y, w, h] with w, h > 0.")
        if not _is_id(image_id):
            raise UserError(f"{ann}: record {i} {role} image_id {image_id!r} is not a Visual Genome image id.")
        return f"{image_id}.jpg", tuple(nums)  # type: ignore[return-value]
    if "val_image_id" not in rec:
        raise UserError(f"{ann}: record {i} {role} needs 'val_image_id' (COCO 2017 val entry).")
    if not _is_id(rec["val_image_id"]):
        raise UserError(f"{ann}: record {i} {role} val_image_id {rec['val_image_id']!r} is not a COCO image id.")
    return f"{int(rec['val_image_id']):012d}.jpg", None


def _number(v: Any) -> float | None:
    """A JSON number as float, or None (bools and non-numeric strings are not box coordinates)."""
    if isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _is_id(v: Any) -> bool:
    """An image id: a non-negative int, or its decimal string."""
    return (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (isinstance(v, str) and v.isdigit())


def read_genecis_task(root: str | Path, task: str) -> ComposedSet:
    """One GeneCIS sub-task as a ComposedSet (category = task; per-query galleries in ``members``)."""
    root = Path(root)
    ann = find_file(root, f"{task}.json", ("genecis", ""), "GeneCIS")
    records = load_json(ann, list, WHAT)
    for i, r in enumerate(records):
        missing = [k for k in ("reference", "target", "gallery", "condition") if not isinstance(r, dict) or k not in r]
        if missing:
            raise UserError(f"{ann}: record {i} has no {', '.join(repr(m) for m in missing)}; expected {WHAT}.")
        if not isinstance(r["gallery"], list) or not r["gallery"]:
            raise UserError(f"{ann}: record {i} 'gallery' must be a non-empty list of images.")
    if not records:
        raise UserError(f"{ann}: no records; expected {WHAT}.")
    modal = Counter(len(r["gallery"]) for r in records).most_common(1)[0][0]
    dirs = _image_dirs(root, task)
    where: dict[str, Path] = {}
    keys: dict[tuple[str, Box | None], int] = {}
    paths: list[Path] = []
    boxes: list[Box | None] = []

    def index_of(entry: Any, i: int, role: str) -> tuple[int, Path, Box | None]:
        name, box = _image_key(entry, task, ann, i, role)
        if name not in where:
            where[name] = _locate(root, dirs, name, ann, task)
        if (name, box) not in keys:
            keys[(name, box)] = len(paths)
            paths.append(where[name])
            boxes.append(box)
        return keys[(name, box)], where[name], box

    queries = []
    for i, r in enumerate(records):
        if len(r["gallery"]) != modal:
            continue  # the official loader keeps only galleries of the modal length
        _, ref_path, ref_box = index_of(r["reference"], i, "reference")
        tgt, _, _ = index_of(r["target"], i, "target")
        gallery = [index_of(g, i, f"gallery[{k}]")[0] for k, g in enumerate(r["gallery"])]
        queries.append(ComposedQuery(qid=f"{task}-{i}", reference_path=ref_path, reference=-1,
                                     captions=[str(r["condition"])], target=tgt, positives=[tgt],
                                     members=[tgt, *gallery], reference_box=ref_box))
    check_images(paths, ann)
    return ComposedSet(name="genecis", split=task, image_paths=paths, image_ids=[p.stem for p in paths],
                       queries=queries, category=task, files=[ann], boxes=boxes if task.endswith("attribute") else None)


def read_genecis(root: str | Path, split: str = "all") -> list[ComposedSet]:
    """``split``: one sub-task name, or ``all`` for the four (averaged by the runner)."""
    need_split(split, (*TASKS, "all"), "genecis")
    return [read_genecis_task(root, t) for t in (TASKS if split == "all" else (split,))]
