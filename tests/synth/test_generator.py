"""The synthetic world: determinism, official file formats, caption variety, edits."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from calibclip.data.synth import generate, generate_all, make_demo_world, tbpr_item, tir_item
from calibclip.data.synth import scene as S
from calibclip.data.synth import vocab as V
from calibclip.errors import UserError

SIZES = {"train": 36, "val": 12, "test": 24}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_all(root, seed=0, sizes=SIZES, progress=False)
    return root


def test_same_seed_same_bytes_different_seed_different(world, tmp_path):
    generate_all(tmp_path / "again", seed=0, sizes=SIZES, progress=False)
    generate_all(tmp_path / "other", seed=1, sizes=SIZES, progress=False)
    a, b, c = _digest(world), _digest(tmp_path / "again"), _digest(tmp_path / "other")
    assert a == b
    assert len(a) > 150
    # every JSON file and most images change with the seed
    for name in a:
        if name.endswith(".json") and "image_splits" not in name:  # split files list names only
            assert a[name] != c[name], name
    same_images = sum(a[n] == c.get(n) for n in a if n.endswith(".png"))
    assert same_images < 0.05 * len(a)


def test_item_does_not_depend_on_split_size():
    assert tir_item(3, "test", 5).captions == tir_item(3, "test", 5).captions
    assert tir_item(3, "test", 5).image.tobytes() == tir_item(3, "test", 5).image.tobytes()
    assert tir_item(3, "test", 5).captions != tir_item(3, "val", 5).captions


def test_flickr30k_karpathy_format(world):
    data = json.loads((world / "flickr30k" / "dataset_flickr30k.json").read_text())
    assert data["dataset"] == "flickr30k"
    images = data["images"]
    assert Counter(im["split"] for im in images) == SIZES
    sentids = []
    for k, im in enumerate(images):
        assert im["imgid"] == k
        assert len(im["sentences"]) == 5 and len(im["sentids"]) == 5
        assert [s["sentid"] for s in im["sentences"]] == im["sentids"]
        for s in im["sentences"]:
            assert s["imgid"] == im["imgid"]
            assert s["tokens"] == re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", s["raw"].lower())
        sentids += im["sentids"]
        with Image.open(world / "flickr30k" / "flickr30k-images" / im["filename"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
    assert sentids == list(range(len(sentids)))


def test_cuhk_pedes_format(world):
    records = json.loads((world / "cuhk-pedes" / "reid_raw.json").read_text())
    assert {tuple(sorted(r)) for r in records} == {("captions", "file_path", "id", "processed_tokens", "split")}
    by_id: dict[int, list[dict]] = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
        assert len(r["captions"]) == 2 and len(r["processed_tokens"]) == 2
        assert all(toks and all(t == t.lower() for t in toks) for toks in r["processed_tokens"])
        assert (world / "cuhk-pedes" / "imgs" / r["file_path"]).is_file()
    assert all(2 <= len(v) <= 4 for v in by_id.values())  # several shots per identity
    assert all(len({r["split"] for r in v}) == 1 for v in by_id.values())  # an id lives in one split
    assert Counter(v[0]["split"] for v in by_id.values()) == {s: n // 3 for s, n in SIZES.items()}


@pytest.mark.parametrize("split,folder", [("train", "train"), ("val", "dev"), ("test1", "test1")])
def test_cirr_format(world, split, folder):
    caps = json.loads((world / "cirr" / "captions" / f"cap.rc2.{split}.json").read_text())
    names = json.loads((world / "cirr" / "image_splits" / f"split.rc2.{split}.json").read_text())
    assert len(caps) == 2 * len(names) // 6
    assert len({c["pairid"] for c in caps}) == len(caps)
    for c in caps:
        assert set(c) == {"pairid", "reference", "target_hard", "target_soft", "caption", "img_set"}
        members = c["img_set"]["members"]
        assert len(members) == 6 and c["reference"] in members and c["target_hard"] in members
        assert c["reference"] != c["target_hard"] and c["target_soft"] == {c["target_hard"]: 1.0}
        assert all(m in names for m in members)
    for name, rel in names.items():
        assert rel.startswith(f"./{folder}/") and rel.endswith(f"/{name}.png")
        assert (world / "cirr" / rel).is_file()
    # the 6 members of a set are 6 different images
    first = caps[0]["img_set"]["members"]
    assert len({(world / "cirr" / names[m]).read_bytes() for m in first}) == 6


def test_caption_wording_varies():
    caps = [c for i in range(200) for c in tir_item(0, "test", i).captions]
    per_image = [tir_item(0, "test", i).captions for i in range(50)]
    assert all(len(set(cs)) == 5 for cs in per_image)  # 5 different captions of one image
    words = Counter(w for c in caps for w in re.findall(r"[a-z]+", c))
    for synonyms in (V.SIZE_WORDS["large"], V.SIZE_WORDS["small"], ["square", "box", "block"], ["circle", "disc"]):
        assert all(words[w] > 0 for w in synonyms), synonyms
    # place before object and object before place both occur
    assert any(re.match(r"^(in|on|at) the ", c) for c in caps)
    assert any(re.match(r"^an? (small|little|tiny|large|big|huge)", c) for c in caps)
    people = [c for i in range(60) for shot in tbpr_item(0, "test", i).shots for c in shot.captions]
    assert len(set(people)) > 0.95 * len(people)
    assert {"pants", "trousers", "jeans"} <= {w for c in people for w in re.findall(r"[a-z]+", c)}


def test_refer_is_unambiguous_and_edits_apply():
    left = S.Obj("square", "red", "small", (1, 0))
    right = S.Obj("square", "red", "small", (1, 2))
    circle = S.Obj("circle", "blue", "large", (0, 1))
    scene = S.Scene((left, right, circle), style=1)
    rng = random.Random(0)
    assert re.fullmatch(r"the left (square|box|block)", S.refer(scene, left, rng))
    assert re.fullmatch(r"the right (square|box|block)", S.refer(scene, right, rng))
    assert re.fullmatch(r"the (circle|disc|round shape)", S.refer(scene, circle, rng))
    for seed in range(40):
        new, text = S.edit_scene(scene, random.Random(seed))
        changed = set(new.objects) ^ set(scene.objects)
        assert new != scene and 1 <= len(changed) <= 2, text  # one object changed, removed or added
        if text.startswith(("remove", "delete", "take away", "without")):
            assert len(new.objects) == 2
    # the untouched objects render at the same place: only the edited cell's pixels change
    new = S.Scene((left, S.Obj("square", "green", "small", (1, 2)), circle), style=1)
    a, b = S.render_scene(scene).load(), S.render_scene(new).load()
    diff = [(x, y) for x in range(64) for y in range(64) if a[x, y] != b[x, y]]
    assert diff and all(x >= 42 for x, _ in diff)


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="task"):
        generate(tmp_path, "vqa", 10)
    with pytest.raises(UserError, match="split"):
        generate(tmp_path, "tir", {"dev": 10})


def test_make_demo_world(tmp_path):
    paths = make_demo_world(tmp_path, seed=0)
    gallery = sorted(paths["gallery"].rglob("*.png"))
    assert 150 <= len(gallery) <= 500
    assert (paths["tir"] / "dataset_flickr30k.json").is_file()
    assert (paths["tbpr"] / "reid_raw.json").is_file()
    assert (paths["cir"] / "captions" / "cap.rc2.test1.json").is_file()
    demo = {p.read_bytes() for p in gallery[:50]}
    assert len(demo) == 50


def test_cli_synth(tmp_path):
    from typer.testing import CliRunner

    from calibclip.cli import app

    res = CliRunner().invoke(app, ["synth", str(tmp_path), "--n-train", "6", "--n-test", "6", "--seed", "2"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "flickr30k" / "dataset_flickr30k.json").read_text())
    assert len(data["images"]) == 18
    assert (tmp_path / "cirr" / "captions" / "cap.rc2.val.json").is_file()
