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
- every record is kept, in file order (the official ``COCOValSubset`` / ``VAWValSubset`` drop
  nothing), and the target is scored against the query's own gallery: R@1/2/3 of the target among
  [target] + gallery;
- every gallery of a sub-task has the same length as its first record's: the official loader batches
  ``[target] + gallery`` with torch's default collate (8 records per batch), which cannot stack galleries
  of different lengths, so the official code cannot score such a file. A record whose gallery length
  differs is an error naming the file, the record and both lengths (the official object files have 14
  gallery images in every record), never a dropped record.
Every record's types are checked once (``data.schema.GenecisAttribute`` / ``GenecisObject``): image ids
are non-negative integers (or their ASCII digits), boxes four finite numbers with w, h > 0.
A sub-task is one ``ComposedSet`` (its ``category``); the unique (image, box) pairs of all its records
form the set's image list and each query's ``members`` are its own gallery, target first.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from calibclip.data.common import check_images, find_file, load_json, need_split
from calibclip.data.schema import CocoEntry, GenecisAttribute, GenecisObject, VGEntry, validate_records
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


def read_genecis_task(root: str | Path, task: str) -> ComposedSet:
    """One GeneCIS sub-task as a ComposedSet (category = task; per-query galleries in ``members``)."""
    root = Path(root)
    ann = find_file(root, f"{task}.json", ("genecis", ""), "GeneCIS")
    schema = GenecisAttribute if task.endswith("attribute") else GenecisObject
    records = validate_records(ann, load_json(ann, list, WHAT), schema, WHAT)
    if not records:
        raise UserError(f"{ann}: no records; expected {WHAT}.")
    width = len(records[0].gallery)
    for i, r in enumerate(records):
        if len(r.gallery) != width:
            raise UserError(f"{ann}: record {i} has {len(r.gallery)} gallery images but record 0 has {width}; "
                            "the official loader needs one gallery length per sub-task (check the file).")
    dirs = _image_dirs(root, task)
    where: dict[str, Path] = {}
    keys: dict[tuple[str, Box | None], int] = {}
    paths: list[Path] = []
    boxes: list[Box | None] = []

    def index_of(entry: VGEntry | CocoEntry) -> tuple[int, Path, Box | None]:
        if isinstance(entry, VGEntry):
            name, box = f"{entry.image_id}.jpg", entry.instance_bbox
        else:
            name, box = f"{entry.val_image_id:012d}.jpg", None
        if name not in where:
            where[name] = _locate(root, dirs, name, ann, task)
        if (name, box) not in keys:
            keys[(name, box)] = len(paths)
            paths.append(where[name])
            boxes.append(box)
        return keys[(name, box)], where[name], box

    queries = []
    for i, r in enumerate(records):
        _, ref_path, ref_box = index_of(r.reference)
        tgt, _, _ = index_of(r.target)
        gallery = [index_of(g)[0] for g in r.gallery]
        queries.append(ComposedQuery(qid=f"{task}-{i}", reference_path=ref_path, reference=-1,
                                     captions=[r.condition], target=tgt, positives=[tgt],
                                     members=[tgt, *gallery], reference_box=ref_box))
    check_images(paths, ann)
    return ComposedSet(name="genecis", split=task, image_paths=paths, image_ids=[p.stem for p in paths],
                       queries=queries, category=task, files=[ann], boxes=boxes if task.endswith("attribute") else None)


def read_genecis(root: str | Path, split: str = "all") -> list[ComposedSet]:
    """``split``: one sub-task name, or ``all`` for the four (averaged by the runner)."""
    need_split(split, (*TASKS, "all"), "genecis")
    return [read_genecis_task(root, t) for t in (TASKS if split == "all" else (split,))]
