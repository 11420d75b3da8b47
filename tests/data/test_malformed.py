"""Issues 15.11 / 16.13: damaged annotation files give one-line UserErrors naming the file, never a traceback.

Each reader gets a small valid fixture in its official format; then, for every node of every annotation
file (each field of each record, each list element), the node is deleted, set to null, to values of the
wrong type and to empty values, and the file is also replaced whole (empty, wrong top-level type, invalid
UTF-8, truncated JSON). Every variant must either be read (a legitimate file) or raise a ``UserError``
whose single line names the damaged file; any other exception fails the test.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from calibclip.data import read_circo, read_cirr, read_fashioniq, read_genecis, read_irra, read_karpathy, read_pairs
from calibclip.errors import UserError

DELETE = object()
VALUES = [DELETE, None, 5, -1, True, "x", "", "\u00b2", "\ud800", [], {"a": 1}]


def png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (len(path.name) * 9 % 255, 0, 0)).save(path)


def put(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# ------------------------------------------------------------------------------ fixtures: (files, read)
def karpathy(root: Path, dataset: str) -> tuple[list[Path], Callable[[], Any]]:
    coco = dataset == "mscoco"
    recs = []
    for i, name in enumerate(["a.jpg", "b.jpg"]):
        png(root / ("val2014" if coco else "flickr30k-images") / name)
        sents = [{"tokens": ["a", "dog"], "raw": f"A dog {i}.{k}", "imgid": i, "sentid": 2 * i + k} for k in range(2)]
        rec = {"filename": name, "imgid": i, "split": "test", "sentences": sents, "sentids": [2 * i, 2 * i + 1]}
        recs.append({**rec, "filepath": "val2014", "cocoid": 100 + i} if coco else rec)
    f = put(root / ("dataset_coco.json" if coco else "dataset_flickr30k.json"), {"images": recs})
    return [f], lambda: read_karpathy(root, dataset, "test")


def irra(root: Path, dataset: str) -> tuple[list[Path], Callable[[], Any]]:
    folder, ann, key = {"cuhk-pedes": ("CUHK-PEDES", "reid_raw.json", "file_path"),
                        "icfg-pedes": ("ICFG-PEDES", "ICFG-PEDES.json", "file_path"),
                        "rstpreid": ("RSTPReid", "data_captions.json", "img_path")}[dataset]
    recs = [{"id": i // 2, "split": "test", "captions": [f"a man {i}", "red shirt"], key: f"p/{i}.png"}
            for i in range(3)]
    for r in recs:
        png(root / folder / "imgs" / r[key])
    return [put(root / folder / ann, recs)], lambda: read_irra(root, dataset, "test")


def cirr(root: Path) -> tuple[list[Path], Callable[[], Any]]:
    names = [f"dev-1-0-img{k}" for k in range(3)]
    for n in names:
        png(root / "dev" / f"{n}.png")
    split = put(root / "image_splits" / "split.rc2.val.json", {n: f"./dev/{n}.png" for n in names})
    caps = put(root / "captions" / "cap.rc2.val.json", [
        {"pairid": 1, "reference": names[0], "target_hard": names[1], "caption": "make it red",
         "img_set": {"id": 1, "members": names}},
        {"pairid": 2, "reference": names[2], "target_hard": names[0], "caption": "more dogs",
         "img_set": {"id": 1, "members": names}}])
    return [caps, split], lambda: read_cirr(root, "val")


def fashioniq(root: Path) -> tuple[list[Path], Callable[[], Any]]:
    names = ["B001", "B002", "B003"]
    for n in names:
        png(root / "images" / f"{n}.png")
    split = put(root / "image_splits" / "split.dress.val.json", names)
    caps = put(root / "captions" / "cap.dress.val.json", [
        {"target": "B001", "candidate": "B002", "captions": ["is black", "has straps"]},
        {"target": "B003", "candidate": "B001", "captions": ["is longer.", "has sleeves?"]}])
    return [caps, split], lambda: read_fashioniq(root, "val", categories=("dress",))


def circo(root: Path) -> tuple[list[Path], Callable[[], Any]]:
    ids = [11, 12, 13]
    for i in ids:
        png(root / "COCO2017_unlabeled" / "unlabeled2017" / f"{i:012d}.jpg")
    info = put(root / "COCO2017_unlabeled" / "annotations" / "image_info_unlabeled2017.json",
               {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]})
    ann = put(root / "annotations" / "val.json", [
        {"id": 0, "reference_img_id": 11, "target_img_id": 12, "relative_caption": "two dogs",
         "shared_concept": "dog", "gt_img_ids": [12, 13]}])
    return [ann, info], lambda: read_circo(root, "val")


def genecis(root: Path, task: str) -> tuple[list[Path], Callable[[], Any]]:
    if task.endswith("attribute"):
        for i in range(1, 5):
            png(root / "VG_100K" / f"{i}.jpg")
        e = [{"image_id": i, "instance_bbox": [0, 0, 2, 2]} for i in range(1, 5)]
    else:
        for i in range(1, 5):
            png(root / "val2017" / f"{i:012d}.jpg")
        e = [{"val_image_id": i} for i in range(1, 5)]
    ann = put(root / "genecis" / f"{task}.json", [
        {"reference": e[0], "target": e[1], "gallery": [e[2], e[3]], "condition": "color"},
        {"reference": e[3], "target": e[2], "gallery": [e[0], e[1]], "condition": "shape"}])
    return [ann], lambda: read_genecis(root, task)


def pairs(root: Path, kind: str) -> tuple[list[Path], Callable[[], Any]]:
    png(root / "img" / "a.png")
    png(root / "img" / "b.png")
    f = root / f"pairs.{kind}"
    f.write_text('{"image": "img/a.png", "caption": "red"}\n{"image": "img/b.png", "caption": "blue"}\n'
                 if kind == "jsonl" else "image,caption\nimg/a.png,red\nimg/b.png,blue\n")
    return [f], lambda: read_pairs(f)


FIXTURES = {
    "flickr30k": lambda r: karpathy(r, "flickr30k"), "mscoco": lambda r: karpathy(r, "mscoco"),
    "cuhk-pedes": lambda r: irra(r, "cuhk-pedes"), "icfg-pedes": lambda r: irra(r, "icfg-pedes"),
    "rstpreid": lambda r: irra(r, "rstpreid"), "cirr": cirr, "fashioniq": fashioniq, "circo": circo,
    "genecis-attribute": lambda r: genecis(r, "change_attribute"),
    "genecis-object": lambda r: genecis(r, "focus_object"), "pairs-jsonl": lambda r: pairs(r, "jsonl"),
    "pairs-csv": lambda r: pairs(r, "csv"),
}


# ------------------------------------------------------------------------------ mutations
def paths_of(obj: Any, at: tuple = ()) -> Iterator[tuple]:
    """Every node's path (keys / indices) below the root; inside a record, lists are entered at element 0
    only (the other elements have the same schema), which keeps the test fast."""
    items = list(obj.items()) if isinstance(obj, dict) else list(enumerate(obj)) if isinstance(obj, list) else []
    if isinstance(obj, list) and at:
        items = items[:1]
    for k, v in items:
        yield (*at, k)
        yield from paths_of(v, (*at, k))


def mutated(obj: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(obj)
    node = out
    for k in path[:-1]:
        node = node[k]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def variants(path: Path) -> Iterator[tuple[str, bytes]]:
    """(description, file bytes) of every damaged version of one annotation file."""
    raw = path.read_bytes()
    yield "invalid UTF-8", raw[:5] + b"\xff\xfe" + raw[5:]
    yield "truncated", raw[: len(raw) // 2]
    yield "empty file", b""
    if path.suffix == ".csv":
        rows = raw.decode().splitlines()
        for i in range(len(rows)):
            for cells in ("", "img/a.png", "img/a.png,", ",red", "img/a.png,red,extra", '"img/a.png,red'):
                yield f"row {i} = {cells!r}", "\n".join([*rows[:i], cells, *rows[i + 1:]]).encode()
        return
    if path.suffix == ".jsonl":
        lines = raw.decode().splitlines()
        docs = [json.loads(x) for x in lines]
        for i, doc in enumerate(docs):
            for p in paths_of(doc):
                for v in VALUES:
                    rows = [*docs[:i], mutated(doc, p, v), *docs[i + 1:]]
                    text = "\n".join(json.dumps(r) for r in rows)
                    yield f"line {i} {p} = {v if v is not DELETE else 'deleted'}", text.encode("utf-8", "surrogatepass")
        return
    doc = json.loads(raw)
    for top in ([], {}, "x", 5, None):
        yield f"whole file = {top!r}", json.dumps(top).encode()
    for p in paths_of(doc):
        for v in VALUES:
            text = json.dumps(mutated(doc, p, v))
            yield f"{p} = {v if v is not DELETE else 'deleted'}", text.encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("reader", list(FIXTURES))
def test_every_malformed_variant_is_read_or_a_one_line_user_error(tmp_path, reader):
    files, read = FIXTURES[reader](tmp_path)
    read()  # the fixture itself is valid
    bad: list[str] = []
    counts = {"accepted": 0, "user_error": 0}
    for f in files:
        original = f.read_bytes()
        for what, data in variants(f):
            f.write_bytes(data)
            try:
                read()
                counts["accepted"] += 1
            except UserError as exc:
                counts["user_error"] += 1
                msg = str(exc)
                if "\n" in msg or f.name not in msg:
                    bad.append(f"{f.name} {what}: message does not name the file in one line: {msg}")
            except Exception as exc:  # noqa: BLE001 — the point of the test
                bad.append(f"{f.name} {what}: {type(exc).__name__}: {exc}")
        f.write_bytes(original)
    assert not bad, f"{len(bad)} bad of {sum(counts.values())} variants:\n" + "\n".join(bad[:15])
    assert counts["user_error"] > 0


def test_karpathy_checks_the_split_read_and_names_the_record_by_its_place_in_the_file(tmp_path):
    files, read = karpathy(tmp_path, "flickr30k")
    doc = json.loads(files[0].read_text())
    doc["images"].insert(0, {"filename": 5, "split": "train", "sentences": 12345})  # another split: not read
    doc["images"][2]["sentences"][0]["raw"] = ["not", "text"]
    files[0].write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"images entry 2 field 'sentences.0.raw': expected a string"):
        read()
    doc["images"][2]["sentences"][0]["raw"] = "fixed"
    doc["images"][0]["split"] = 7
    files[0].write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"images entry 0 field 'split' is not a string \(found 7\)"):
        read()
    doc["images"][0]["split"] = "train"
    files[0].write_text(json.dumps(doc))
    assert read().texts[2] == "fixed"  # the second test image's first caption
