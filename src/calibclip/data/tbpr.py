"""Text-based person retrieval readers, as the IRRA code base reads them (datasets/{cuhkpedes,icfgpedes,rstpreid}.py).

Each annotation is a JSON list of records ``{"id", "split", "captions", "file_path"|"img_path"}``;
images live in ``imgs/`` next to it. Evaluation (test/val split): the gallery is every record's image
with its person id ``int(id)``, the queries are all captions, labelled with the same person id.
Every record's types are checked (``data.schema.irra_record``) before any is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calibclip.data.common import check_images, find_file, load_json, need_split
from calibclip.data.schema import irra_record, validate_records
from calibclip.data.types import RetrievalSet
from calibclip.errors import UserError


@dataclass(frozen=True)
class IrraLayout:
    """Where IRRA finds one dataset: folder name, annotation file, image-path key, image folder."""

    folder: str
    annotation: str
    path_key: str
    splits: tuple[str, ...]
    image_dir: str = "imgs"


LAYOUTS = {
    "cuhk-pedes": IrraLayout("CUHK-PEDES", "reid_raw.json", "file_path", ("train", "val", "test")),
    "icfg-pedes": IrraLayout("ICFG-PEDES", "ICFG-PEDES.json", "file_path", ("train", "test")),
    "rstpreid": IrraLayout("RSTPReid", "data_captions.json", "img_path", ("train", "val", "test")),
}


def read_irra(root: str | Path, dataset: str = "cuhk-pedes", split: str = "test") -> RetrievalSet:
    """Read a TBPR dataset's ``split`` (``root`` = the dataset folder, or its parent as in IRRA's --root_dir)."""
    if dataset not in LAYOUTS:
        raise UserError(f"unknown person-retrieval dataset {dataset!r}; use {list(LAYOUTS)}.")
    lay = LAYOUTS[dataset]
    need_split(split, lay.splits, dataset)
    ann = find_file(Path(root), lay.annotation, ("", lay.folder), f"{lay.folder} dataset")
    what = f"IRRA's {lay.annotation} format (a list of {{'id', 'split', 'captions', '{lay.path_key}'}})"
    records = validate_records(ann, load_json(ann, list, what), irra_record(lay.path_key), what)
    img_dir = ann.parent / lay.image_dir
    if not img_dir.is_dir():
        raise UserError(f"{ann}: the image folder {img_dir} is missing; expected {lay.image_dir}/ next to it.")
    paths, ids, pids, texts, text_pids, text_image = [], [], [], [], [], []
    for rec in records:
        if rec.split != split:
            continue
        paths.append(img_dir / rec.path)
        ids.append(rec.path)
        pids.append(rec.id)
        for c in rec.captions:
            texts.append(c.strip())
            text_pids.append(rec.id)
            text_image.append(len(paths) - 1)
    if not paths:
        present = sorted({r.split for r in records})
        raise UserError(f"{ann}: no records with split '{split}' (splits present: {', '.join(present) or 'none'}).")
    check_images(paths, ann)
    return RetrievalSet(name=dataset, split=split, task="tbpr", image_paths=paths, image_ids=ids, texts=texts,
                        text_image=text_image, image_pids=pids, text_pids=text_pids, files=[ann])
