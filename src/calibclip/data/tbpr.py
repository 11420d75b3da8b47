"""Text-based person retrieval readers, as the IRRA code base reads them (datasets/{cuhkpedes,icfgpedes,rstpreid}.py).

Each annotation is a JSON list of records ``{"id", "split", "captions", "file_path"|"img_path"}``;
images live in ``imgs/`` next to it. Evaluation (test/val split): the gallery is every record's image
with its person id ``int(id)``, the queries are all captions, labelled with the same person id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from calibclip.data.common import check_images, field_of, find_file, load_json, need_split
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
    records = load_json(ann, list, what)
    img_dir = ann.parent / lay.image_dir
    if not img_dir.is_dir():
        raise UserError(f"{ann}: the image folder {img_dir} is missing; expected {lay.image_dir}/ next to it.")
    paths, ids, pids, texts, text_pids, text_image = [], [], [], [], [], []
    for i, rec in enumerate(records):
        if field_of(rec, "split", ann, i, what) != split:
            continue
        rel = field_of(rec, lay.path_key, ann, i, what)
        try:
            pid = int(field_of(rec, "id", ann, i, what))
        except (TypeError, ValueError):
            raise UserError(f"{ann}: record {i} has a non-integer person id {rec['id']!r}.") from None
        caps = field_of(rec, "captions", ann, i, what)
        if not isinstance(caps, list) or not caps:
            raise UserError(f"{ann}: record {i} ({rel}) has no captions list.")
        paths.append(img_dir / rel)
        ids.append(str(rel))
        pids.append(pid)
        for c in caps:
            texts.append(str(c).strip())
            text_pids.append(pid)
            text_image.append(len(paths) - 1)
    if not paths:
        present = sorted({str(r.get("split")) for r in records if isinstance(r, dict)})
        raise UserError(f"{ann}: no records with split '{split}' (splits present: {', '.join(present) or 'none'}).")
    check_images(paths, ann)
    return RetrievalSet(name=dataset, split=split, task="tbpr", image_paths=paths, image_ids=ids, texts=texts,
                        text_image=text_image, image_pids=pids, text_pids=text_pids, files=[ann])
