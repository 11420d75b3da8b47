"""Each reader on a tiny fixture written here in the exact official format (tiny PNGs via PIL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from calibclip.data import (fingerprint, read_circo, read_cirr, read_dataset, read_fashioniq, read_irra,
                            read_karpathy, read_pairs)
from calibclip.errors import UserError


def png(path: Path, color: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (color, 0, 0)).save(path)
    return path


def dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def karpathy_entry(filename, imgid, split, n_sent, first_sentid, **extra):
    sents = [{"tokens": ["a", f"s{first_sentid + k}"], "raw": f"caption {imgid}.{k}", "imgid": imgid,
              "sentid": first_sentid + k} for k in range(n_sent)]
    return {"sentids": [s["sentid"] for s in sents], "imgid": imgid, "sentences": sents, "split": split,
            "filename": filename, **extra}


# ---------------------------------------------------------------- TIR
def test_flickr30k_karpathy(tmp_path):
    root = tmp_path / "flickr30k"
    for i, name in enumerate(["1000092795.jpg", "10002456.jpg", "1000268201.jpg"]):
        png(root / "flickr30k-images" / name, i)
    dump(root / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": [
        karpathy_entry("1000092795.jpg", 0, "train", 5, 0),
        karpathy_entry("10002456.jpg", 1, "test", 5, 5),
        karpathy_entry("1000268201.jpg", 2, "test", 5, 10)]})
    ds = read_karpathy(root, "flickr30k", "test")
    assert [p.name for p in ds.image_paths] == ["10002456.jpg", "1000268201.jpg"]
    assert ds.texts[:2] == ["caption 1.0", "caption 1.1"] and len(ds.texts) == 10
    assert ds.text_image == [0] * 5 + [1] * 5
    assert ds.files == [root / "dataset_flickr30k.json"]
    with pytest.raises(UserError, match="split 'val'.*splits present: test, train"):
        read_karpathy(root, "flickr30k", "val")
    (root / "flickr30k-images" / "1000268201.jpg").unlink()
    with pytest.raises(UserError, match="1 of 2 images.*1000268201.jpg"):
        read_karpathy(root, "flickr30k", "test")


def clip_benchmark_queries(karpathy: dict, split: str) -> tuple[list[str], list[int]]:
    """CLIP_benchmark zeroshot_retrieval, by hand: each split image with ALL its captions; every caption is a
    query labelled with its image's index (texts_image_index)."""
    texts, owner = [], []
    for i, e in enumerate(x for x in karpathy["images"] if x["split"] == split):
        for s in e["sentences"]:
            texts.append(s["raw"].strip())
            owner.append(i)
    return texts, owner


def test_mscoco_karpathy_filepath_and_every_caption(tmp_path):
    png(tmp_path / "val2014" / "COCO_val2014_000000391895.jpg")
    png(tmp_path / "val2014" / "COCO_val2014_000000522418.jpg", 9)
    ann = {"dataset": "coco", "images": [
        karpathy_entry("COCO_val2014_000000391895.jpg", 0, "test", 7, 0, filepath="val2014", cocoid=391895),
        karpathy_entry("COCO_val2014_000000522418.jpg", 1, "test", 6, 7, filepath="val2014", cocoid=522418)]}
    dump(tmp_path / "annotations" / "dataset_coco.json", ann)
    ds = read_dataset("coco", tmp_path)[0]
    assert ds.image_ids == ["391895", "522418"]
    assert ds.image_paths[0] == tmp_path / "val2014" / "COCO_val2014_000000391895.jpg"
    # Issue 15.9: all 13 captions are queries (before: the first 5 of each image, 10 queries).
    assert (ds.texts, ds.text_image) == clip_benchmark_queries(ann, "test")
    assert len(ds.texts) == 13 and ds.text_image == [0] * 7 + [1] * 6


def test_karpathy_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="dataset_flickr30k.json not found"):
        read_karpathy(tmp_path, "flickr30k")
    dump(tmp_path / "dataset_flickr30k.json", [1, 2])
    with pytest.raises(UserError, match="dataset_flickr30k.json: expected the Karpathy"):
        read_karpathy(tmp_path, "flickr30k")
    (tmp_path / "dataset_flickr30k.json").write_text("{oops")
    with pytest.raises(UserError, match="not valid JSON"):
        read_karpathy(tmp_path, "flickr30k")
    with pytest.raises(UserError, match="no such folder"):
        read_karpathy(tmp_path / "nope", "flickr30k")


# ---------------------------------------------------------------- TBPR
def test_cuhk_pedes_reid_raw(tmp_path):
    root = tmp_path / "CUHK-PEDES"
    recs = [{"split": "train", "captions": ["t"], "file_path": "train_query/p1_s1.jpg", "processed_tokens": [["t"]],
             "id": 1},
            {"split": "test", "captions": ["a man in red", "red shirt man"], "file_path": "CUHK01/0363004.png",
             "processed_tokens": [["a"], ["r"]], "id": 12004},
            {"split": "test", "captions": ["a man in red again"], "file_path": "CUHK01/0363003.png",
             "processed_tokens": [["a"]], "id": 12004},
            {"split": "test", "captions": ["a woman"], "file_path": "cam_a/000_45.bmp", "processed_tokens": [["a"]],
             "id": 12005}]
    for r in recs:
        png(root / "imgs" / r["file_path"])
    dump(root / "reid_raw.json", recs)
    ds = read_irra(tmp_path, "cuhk-pedes", "test")  # IRRA-style root (parent of CUHK-PEDES/) works too
    assert ds.task == "tbpr" and ds.image_pids == [12004, 12004, 12005]
    assert ds.texts == ["a man in red", "red shirt man", "a man in red again", "a woman"]
    assert ds.text_pids == [12004, 12004, 12004, 12005] and ds.text_image == [0, 0, 1, 2]
    assert ds.image_paths[2] == root / "imgs" / "cam_a" / "000_45.bmp"
    assert read_irra(root, "cuhk-pedes", "train").image_pids == [1]
    with pytest.raises(UserError, match="split 'val'"):
        read_irra(root, "cuhk-pedes", "val")


def test_icfg_and_rstpreid_layouts(tmp_path):
    icfg = tmp_path / "ICFG-PEDES"
    png(icfg / "imgs" / "test" / "0001" / "0001_001.jpg")
    dump(icfg / "ICFG-PEDES.json", [{"id": 1, "file_path": "test/0001/0001_001.jpg", "captions": ["x"],
                                     "processed_tokens": [["x"]], "split": "test"}])
    assert read_dataset("icfg-pedes", icfg)[0].image_pids == [1]
    with pytest.raises(UserError, match="icfg-pedes has splits train, test"):
        read_irra(icfg, "icfg-pedes", "val")
    rstp = tmp_path / "RSTPReid"
    png(rstp / "imgs" / "0000_c14_0031.jpg")
    dump(rstp / "data_captions.json", [{"id": 0, "img_path": "0000_c14_0031.jpg", "captions": ["a", "b"],
                                        "split": "test"}])
    ds = read_irra(rstp, "rstpreid")
    assert ds.texts == ["a", "b"] and ds.text_pids == [0, 0]
    # A CUHK-style record in RSTPReid (file_path instead of img_path) is named precisely.
    dump(rstp / "data_captions.json", [{"id": 0, "file_path": "x.jpg", "captions": ["a"], "split": "test"}])
    with pytest.raises(UserError, match="record 0 has no 'img_path' field"):
        read_irra(rstp, "rstpreid")


# ---------------------------------------------------------------- CIR
def cirr_fixture(root: Path, img_root: Path) -> None:
    names = [f"dev-147-1-img{k}" for k in range(4)] + ["dev-980-0-img0"]
    for k, n in enumerate(names):
        png(img_root / "dev" / f"{n}.png", k)
    dump(root / "image_splits" / "split.rc2.val.json", {n: f"./dev/{n}.png" for n in names})
    members = names[:4]
    dump(root / "captions" / "cap.rc2.val.json", [
        {"pairid": 12063, "reference": names[1], "target_hard": names[3], "target_soft": {names[3]: 1.0},
         "caption": "make it red", "img_set": {"id": 183, "members": members}},
        {"pairid": 12064, "reference": names[0], "target_hard": names[4], "target_soft": {names[4]: 1.0},
         "caption": "more dogs", "img_set": {"id": 183, "members": members}}])
    dump(root / "captions" / "cap.rc2.test1.json", [
        {"pairid": 1, "reference": "test1-1-0-img0", "caption": "x",
         "img_set": {"id": 1, "members": ["test1-1-0-img0", "test1-1-0-img1"]}}])
    dump(root / "image_splits" / "split.rc2.test1.json",
         {"test1-1-0-img0": "./test1/test1-1-0-img0.png", "test1-1-0-img1": "./test1/test1-1-0-img1.png"})
    png(img_root / "test1" / "test1-1-0-img0.png")
    png(img_root / "test1" / "test1-1-0-img1.png")


def test_cirr_val_and_test1(tmp_path):
    cirr_fixture(tmp_path / "cirr", tmp_path)  # SEARLE layout: annotations in cirr/, images beside it
    ds = read_cirr(tmp_path, "val")
    assert ds.image_ids[3] == "dev-147-1-img3" and ds.image_paths[3] == tmp_path / "dev" / "dev-147-1-img3.png"
    q = ds.queries[0]
    assert (q.qid, q.reference, q.target, q.members, q.captions) == ("12063", 1, 3, [0, 1, 2, 3], ["make it red"])
    assert ds.labelled
    test = read_cirr(tmp_path, "test")
    assert test.queries[0].target is None and not test.labelled and test.files[0].name == "cap.rc2.test1.json"


def test_cirr_mismatched_ids(tmp_path):
    cirr_fixture(tmp_path, tmp_path)
    caps = json.loads((tmp_path / "captions" / "cap.rc2.val.json").read_text())
    caps[1]["target_hard"] = "train-1-0-img0"
    dump(tmp_path / "captions" / "cap.rc2.val.json", caps)
    with pytest.raises(UserError, match="cap.rc2.val.json: record 1 target_hard 'train-1-0-img0' is not in "
                                        "split.rc2.val.json"):
        read_cirr(tmp_path, "val")
    with pytest.raises(UserError, match="cap.rc2.train.json not found"):
        read_cirr(tmp_path, "train")


def test_fashioniq(tmp_path):
    for k, n in enumerate(["B008BHCT58", "B003FGW7MK", "B004ZMF4JI", "B00CANDID8"]):
        png(tmp_path / "images" / f"{n}.png", k)
    dump(tmp_path / "image_splits" / "split.dress.val.json", ["B008BHCT58", "B003FGW7MK", "B004ZMF4JI"])
    dump(tmp_path / "captions" / "cap.dress.val.json", [
        {"target": "B008BHCT58", "candidate": "B003FGW7MK", "captions": ["is solid black", "is black with straps"]},
        {"target": "B004ZMF4JI", "candidate": "B00CANDID8", "captions": ["is longer.", "has sleeves?"]}])
    (ds,) = read_fashioniq(tmp_path, "val", categories=("dress",))
    assert ds.category == "dress" and len(ds.image_paths) == 3
    assert [(q.reference, q.target) for q in ds.queries] == [(1, 0), (-1, 2)]
    assert ds.queries[1].reference_path == tmp_path / "images" / "B00CANDID8.png"  # not in the gallery
    assert ds.queries[0].captions == ["is solid black", "is black with straps"]
    with pytest.raises(UserError, match="cap.shirt.val.json not found"):
        read_fashioniq(tmp_path, "val")


def test_circo(tmp_path):
    coco = tmp_path / "COCO2017_unlabeled"
    ids = [39769, 35012, 67530, 1]
    for k, i in enumerate(ids):
        png(coco / "unlabeled2017" / f"{i:012d}.jpg", k)
    dump(coco / "annotations" / "image_info_unlabeled2017.json",
         {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]})
    dump(tmp_path / "annotations" / "val.json", [
        {"id": 0, "reference_img_id": 39769, "target_img_id": 35012, "relative_caption": "has two dogs",
         "shared_concept": "dog", "gt_img_ids": [35012, 67530]}])
    dump(tmp_path / "annotations" / "test.json", [
        {"id": 7, "reference_img_id": 1, "relative_caption": "is at night", "shared_concept": "x"}])
    ds = read_circo(tmp_path, "val")
    q = ds.queries[0]
    assert (q.reference, q.target, q.positives, ds.image_ids[1]) == (0, 1, [1, 2], "35012")
    assert not read_circo(tmp_path, "test").labelled
    dump(tmp_path / "annotations" / "val.json", [
        {"id": 0, "reference_img_id": 5, "target_img_id": 35012, "relative_caption": "x", "gt_img_ids": [35012]}])
    with pytest.raises(UserError, match="reference_img_id 5 is not in image_info_unlabeled2017.json"):
        read_circo(tmp_path, "val")


# ---------------------------------------------------------------- generic
def test_pairs_csv_and_jsonl(tmp_path):
    png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "b.png", 5)
    (tmp_path / "pairs.csv").write_text("image,caption\nimg/a.png,a red square\nimg/b.png,blue\nimg/a.png,red\n")
    ds = read_pairs(tmp_path / "pairs.csv")
    assert ds.image_ids == ["img/a.png", "img/b.png"] and ds.text_image == [0, 1, 0]
    (tmp_path / "pairs.jsonl").write_text('{"image": "img/b.png", "caption": "blue"}\n\n')
    assert read_dataset("jsonl", tmp_path / "pairs.jsonl")[0].texts == ["blue"]
    (tmp_path / "bad.csv").write_text("file_name,caption\nimg/a.png,x\n")
    with pytest.raises(UserError, match="bad.csv: no image column"):
        read_pairs(tmp_path / "bad.csv")


def test_fingerprint_changes_with_annotations(tmp_path):
    png(tmp_path / "x.png")
    png(tmp_path / "y.png")
    ann = dump(tmp_path / "a.json", [1])
    f1 = fingerprint([ann], [tmp_path / "x.png", tmp_path / "y.png"])
    assert f1 == fingerprint([ann], [tmp_path / "x.png", tmp_path / "y.png"])
    dump(ann, [2])
    assert fingerprint([ann], [tmp_path / "x.png", tmp_path / "y.png"]) != f1


# ---------------------------------------------------------------- teammate's synthetic world
def test_reads_synthetic_world_in_official_formats(tmp_path):
    synth = pytest.importorskip("calibclip.data.synth")
    synth.generate(tmp_path / "flickr30k", "tir", {"test": 3}, seed=0, progress=False)
    synth.generate(tmp_path / "cuhk-pedes", "tbpr", {"test": 6}, seed=0, progress=False)
    synth.generate(tmp_path / "cirr", "cir", {"val": 6, "test": 6}, seed=0, progress=False)
    tir = read_dataset("flickr30k", tmp_path / "flickr30k")[0]
    assert len(tir.image_paths) == 3 and len(tir.texts) == 15
    tbpr = read_dataset("cuhk-pedes", tmp_path / "cuhk-pedes")[0]
    assert len(set(tbpr.image_pids)) == 2 and set(tbpr.text_pids) == set(tbpr.image_pids)
    cirr = read_dataset("cirr", tmp_path / "cirr", "val")[0]
    assert cirr.labelled and all(q.target in q.members and q.reference in q.members for q in cirr.queries)
    assert read_cirr(tmp_path / "cirr", "test").labelled  # the synthetic test1 keeps its targets
