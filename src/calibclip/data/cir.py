"""Composed image retrieval readers: CIRR (rc2), FashionIQ, CIRCO — official annotation layouts.

- CIRR: ``captions/cap.rc2.{split}.json`` (pairid, reference, target_hard, caption, img_set.members) and
  ``image_splits/split.rc2.{split}.json`` (name → "./dev/name.png"); ``split`` test = ``test1``. The
  gallery is every image of the split. Annotations may sit in ``root`` or ``root/cirr`` (SEARLE layout);
  the image paths are resolved against the first folder where they exist.
- FashionIQ: ``captions/cap.{category}.{split}.json`` (candidate, target, captions[2]),
  ``image_splits/split.{category}.{split}.json`` (list of names), ``images/{name}.png``; one gallery per
  category (the split's image list), as CLIP4Cir/SEARLE evaluate it.
- CIRCO: ``annotations/{split}.json`` (id, reference_img_id, relative_caption, target_img_id, gt_img_ids)
  with the COCO unlabeled2017 gallery (``COCO2017_unlabeled/annotations/image_info_unlabeled2017.json``,
  ``COCO2017_unlabeled/unlabeled2017/``), as SEARLE reads it. The reference is not excluded (SEARLE).

Every record is type-checked once (``data.schema``); on labelled splits (CIRR train/val, FashionIQ
train/val, CIRCO val) a record without its ground truth (``target_hard``, ``target``, ``gt_img_ids``)
is an error naming the file, record and field, never a dropped record or a default. FashionIQ records
must have exactly the two captions every official protocol combines.
"""

from __future__ import annotations

from pathlib import Path

from calibclip.data.common import check_images, find_file, load_json, need_split, pick_base
from calibclip.data.schema import (CircoQuery, CirrRecord, CocoImage, FashionIQRecord, Name, validate_records,
                                  validate_value)
from calibclip.data.types import ComposedQuery, ComposedSet
from calibclip.errors import UserError

CIRR_SPLITS = {"train": "train", "val": "val", "test": "test1", "test1": "test1"}
FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_EXTS = (".png", ".jpg", ".jpeg")


def read_cirr(root: str | Path, split: str = "val") -> ComposedSet:
    """Read CIRR rc2 ``split`` (train / val / test; test reads the test1 files)."""
    need_split(split, tuple(CIRR_SPLITS), "cirr")
    s = CIRR_SPLITS[split]
    root = Path(root)
    cap_path = find_file(root, f"cap.rc2.{s}.json", ("captions", "cirr/captions"), "CIRR")
    ann_dir = cap_path.parent.parent
    split_path = find_file(ann_dir, f"split.rc2.{s}.json", ("image_splits",), "CIRR")
    name_to_rel = validate_value(split_path, load_json(split_path, dict, "a JSON object image name → relative path"),
                                 dict[Name, Name], "a JSON object image name → relative path")
    if not name_to_rel:
        raise UserError(f"{split_path}: no images listed.")
    names = list(name_to_rel)
    base = pick_base([ann_dir, root, ann_dir.parent, root / "img_raw", ann_dir / "img_raw"], name_to_rel[names[0]],
                     split_path, "CIRR image folders (train/, dev/, test1/)")
    paths = [base / name_to_rel[n] for n in names]
    index = {n: i for i, n in enumerate(names)}
    what = "CIRR rc2 captions ({'pairid', 'reference', 'caption', 'img_set': {'members'}, 'target_hard'})"
    caps = validate_records(cap_path, load_json(cap_path, list, what), CirrRecord, what)
    if not caps:
        raise UserError(f"{cap_path}: no records; expected {what}.")

    def idx(name: str, i: int, role: str) -> int:
        if name not in index:
            raise UserError(f"{cap_path}: record {i} {role} '{name}' is not in {split_path.name}; "
                            "the caption and image-split files must be of the same split.")
        return index[name]

    queries = []
    for i, c in enumerate(caps):
        if c.target_hard is None and s != "test1":  # train/val are labelled: a missing target is damage
            raise UserError(f"{cap_path}: record {i} has no 'target_hard' field; expected {what}.")
        ref = idx(c.reference, i, "reference")
        members = [idx(m, i, "img_set member") for m in c.img_set.members]
        tgt = idx(c.target_hard, i, "target_hard") if c.target_hard is not None else None
        queries.append(ComposedQuery(qid=str(c.pairid), reference_path=paths[ref], reference=ref,
                                     captions=[c.caption], target=tgt, positives=[tgt] if tgt is not None else [],
                                     members=members))
    check_images(paths, split_path)
    return ComposedSet(name="cirr", split=split, image_paths=paths, image_ids=names, queries=queries,
                       files=[cap_path, split_path])


def _fiq_image(img_dir: Path, name: str) -> Path:
    for ext in FASHIONIQ_EXTS:
        p = img_dir / f"{name}{ext}"
        if p.is_file():
            return p
    return img_dir / f"{name}.png"


def read_fashioniq(root: str | Path, split: str = "val",
                   categories: tuple[str, ...] = FASHIONIQ_CATEGORIES) -> list[ComposedSet]:
    """Read FashionIQ ``split`` for each category (dress, shirt, toptee): one ComposedSet per category."""
    need_split(split, ("train", "val", "test"), "fashioniq")
    bad = [c for c in categories if c not in FASHIONIQ_CATEGORIES]
    if bad:
        raise UserError(f"unknown FashionIQ categories {bad}; use {list(FASHIONIQ_CATEGORIES)}.")
    root = Path(root)
    out = []
    for cat in categories:
        cap_path = find_file(root, f"cap.{cat}.{split}.json", ("captions", "fashionIQ_dataset/captions"), "FashionIQ")
        ann_dir = cap_path.parent.parent
        split_path = find_file(ann_dir, f"split.{cat}.{split}.json", ("image_splits",), "FashionIQ")
        names = validate_value(split_path, load_json(split_path, list, "a JSON list of image names"), list[Name],
                               "a JSON list of image names")
        if not names:
            raise UserError(f"{split_path}: no images listed.")
        img_dir = ann_dir / "images"
        if not img_dir.is_dir():
            raise UserError(f"{split_path}: the image folder {img_dir} is missing; expected images/ next to "
                            "captions/ and image_splits/.")
        paths = [_fiq_image(img_dir, n) for n in names]
        index = {n: i for i, n in enumerate(names)}
        what = "FashionIQ captions ({'candidate', 'target', 'captions': [c1, c2]})"
        records = validate_records(cap_path, load_json(cap_path, list, what), FashionIQRecord, what)
        if not records:
            raise UserError(f"{cap_path}: no records; expected {what}.")
        queries = []
        for i, c in enumerate(records):
            tgt = None
            if c.target is None and split != "test":  # train/val are labelled: a missing target is damage
                raise UserError(f"{cap_path}: record {i} has no 'target' field; expected {what}.")
            if c.target is not None:
                if c.target not in index:
                    raise UserError(f"{cap_path}: record {i} target '{c.target}' is not in {split_path.name}.")
                tgt = index[c.target]
            ref_path = paths[index[c.candidate]] if c.candidate in index else _fiq_image(img_dir, c.candidate)
            queries.append(ComposedQuery(qid=f"{cat}-{i}", reference_path=ref_path,
                                         reference=index.get(c.candidate, -1), captions=list(c.captions),
                                         target=tgt, positives=[tgt] if tgt is not None else []))
        check_images(paths, split_path)
        check_images([q.reference_path for q in queries if q.reference < 0], cap_path)  # candidates off the split
        out.append(ComposedSet(name="fashioniq", split=split, image_paths=paths, image_ids=names, queries=queries,
                               category=cat, files=[cap_path, split_path]))
    return out


def read_circo(root: str | Path, split: str = "val") -> ComposedSet:
    """Read CIRCO ``split`` (val / test) with the COCO 2017 unlabeled gallery."""
    need_split(split, ("val", "test"), "circo")
    root = Path(root)
    ann = find_file(root, f"{split}.json", ("annotations",), "CIRCO")
    coco = root / "COCO2017_unlabeled"
    info = find_file(coco, "image_info_unlabeled2017.json", ("annotations",), "CIRCO COCO2017_unlabeled")
    info_what = "COCO image info ({'images': [{'id', 'file_name'}]})"
    imgs = load_json(info, dict, info_what).get("images")
    if not isinstance(imgs, list) or not imgs:
        raise UserError(f"{info}: no 'images' list; expected {info_what}.")
    imgs = validate_records(info, imgs, CocoImage, info_what, label="images entry")
    img_dir = coco / "unlabeled2017"
    ids = [str(m.id) for m in imgs]
    paths = [img_dir / m.file_name for m in imgs]
    index = {n: i for i, n in enumerate(ids)}
    what = "CIRCO annotations ({'id', 'reference_img_id', 'relative_caption', 'gt_img_ids'})"

    def idx(img_id: int, i: int, role: str) -> int:
        if str(img_id) not in index:
            raise UserError(f"{ann}: query {i} {role} {img_id} is not in {info.name}; expected COCO unlabeled2017 ids.")
        return index[str(img_id)]

    records = validate_records(ann, load_json(ann, list, what), CircoQuery, what, label="query")
    if not records:
        raise UserError(f"{ann}: no queries; expected {what}.")
    queries = []
    for i, a in enumerate(records):
        if a.gt_img_ids is None and split != "test":  # val is labelled: a missing ground truth is damage
            raise UserError(f"{ann}: query {i} has no 'gt_img_ids' field; expected {what}.")
        ref = idx(a.reference_img_id, i, "reference_img_id")
        gts = [idx(g, i, "gt_img_ids entry") for g in a.gt_img_ids or []]
        tgt = idx(a.target_img_id, i, "target_img_id") if a.target_img_id is not None else None
        queries.append(ComposedQuery(qid=str(a.id), reference_path=paths[ref], reference=ref,
                                     captions=[a.relative_caption], target=tgt,
                                     positives=gts or ([tgt] if tgt is not None else [])))
    check_images(paths, info)
    return ComposedSet(name="circo", split=split, image_paths=paths, image_ids=ids, queries=queries,
                       files=[ann, info])
