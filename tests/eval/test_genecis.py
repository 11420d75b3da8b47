"""GeneCIS: the official crop, the reader on fixtures in the official format, `calibclip eval genecis` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibclip.cli import app
from calibclip.data.genecis import crop_instance, read_genecis, read_genecis_task
from calibclip.errors import UserError


def test_crop_instance_dilates_clips_and_pads_like_the_official_code():
    arr = np.zeros((80, 100, 3), dtype=np.uint8)
    arr[..., 0] = np.arange(100)[None, :]  # red = x
    arr[..., 1] = np.arange(80)[:, None]  # green = y
    out = crop_instance(Image.fromarray(arr), (10, 20, 20, 10))
    # left = max(0, 10 − 14) = 0, top = 20 − 7 = 13, right = 0 + 1.7·20 = 34, bottom = 13 + 1.7·10 = 30
    # → a 34×17 crop, padded to 34×34 with black rows: 8 above, 9 below
    assert out.size == (34, 34)
    o = np.asarray(out)
    assert (o[:8] == 0).all() and (o[25:] == 0).all()
    assert o[8, 0, 0] == 0 and o[8, 33, 0] == 33  # x from 0 to 33
    assert o[8, 0, 1] == 13 and o[24, 0, 1] == 29  # y from 13 to 29
    square = crop_instance(Image.fromarray(arr), (40, 30, 10, 10))  # 17×17 inside the image: no padding
    assert square.size == (17, 17) and np.asarray(square)[0, 0, 0] == 33 and np.asarray(square)[0, 0, 1] == 23


def _jpg(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)


def write_genecis(root: Path) -> Path:
    """change_attribute (Visual Genome, boxes) and focus_object (COCO val) in the official JSON format."""
    for i in range(1, 9):
        _jpg(root / "VG_100K" / f"{i}.jpg", i)
        _jpg(root / "val2017" / f"{100 + i:012d}.jpg", 100 + i)
    vg = [{"image_id": i, "instance_bbox": [5, 4, 12, 10], "object_name": "car"} for i in range(1, 9)]
    attr = [  # every record has 3 gallery images, as the official loader (batched default collate) needs
        {"reference": vg[0], "target": vg[1], "gallery": [vg[2], vg[3], vg[4]], "condition": "color"},
        {"reference": vg[5], "target": vg[6], "gallery": [vg[7], vg[2], {**vg[2], "instance_bbox": [1, 1, 8, 8]}],
         "condition": "material"},
    ]
    coco = [{"val_image_id": 100 + i} for i in range(1, 9)]
    obj = [{"reference": coco[0], "target": coco[1], "gallery": coco[2:6], "condition": "dog"},
           {"reference": coco[6], "target": coco[7], "gallery": coco[1:5], "condition": "bus"}]
    (root / "genecis").mkdir(parents=True, exist_ok=True)
    (root / "genecis" / "change_attribute.json").write_text(json.dumps(attr))
    (root / "genecis" / "focus_object.json").write_text(json.dumps(obj))
    return root


@pytest.fixture
def genecis(tmp_path):
    return write_genecis(tmp_path / "genecis-root")


def test_reader_builds_per_query_galleries(genecis):
    ds = read_genecis_task(genecis, "change_attribute")
    assert ds.category == "change_attribute" and len(ds.queries) == 2
    q0, q1 = ds.queries
    assert q0.captions == ["color"] and q0.reference_box == (5.0, 4.0, 12.0, 10.0)
    assert q0.members[0] == q0.target and len(q0.members) == 4
    assert [ds.image_paths[m].name for m in q0.members] == ["2.jpg", "3.jpg", "4.jpg", "5.jpg"]
    # the same image with another box is another gallery entry; the same (image, box) is shared
    assert ds.image_paths[q1.members[2]] == ds.image_paths[q1.members[3]]
    assert q1.members[2] == q0.members[1] and q1.members[3] != q1.members[2]
    assert ds.boxes is not None and ds.boxes[q1.members[3]] == (1.0, 1.0, 8.0, 8.0)
    objs = read_genecis_task(genecis, "focus_object")
    assert objs.boxes is None and objs.queries[0].reference_box is None
    assert objs.image_paths[objs.queries[0].target].name == "000000000102.jpg"
    with pytest.raises(UserError, match="focus_attribute.json not found"):
        read_genecis(genecis, "all")  # only two of the four sub-tasks exist in this fixture


def _expected_recalls(enc, ds, phi) -> dict[str, float]:
    """Independent: crop every image by hand, encode, rank the target within the query's own gallery."""
    from calibclip.cir import encode_composed

    def load(path, box):
        img = Image.open(path).convert("RGB")
        return crop_instance(img, box) if box is not None else img

    boxes = ds.boxes or [None] * len(ds.image_paths)
    g = enc.encode_images([load(p, b) for p, b in zip(ds.image_paths, boxes)])
    q = encode_composed(enc, [load(x.reference_path, x.reference_box) for x in ds.queries],
                        [x.captions[0] for x in ds.queries], phi)
    ranks = []
    for i, x in enumerate(ds.queries):
        s = g[x.members] @ q[i]
        ranks.append(int((s > s[0]).sum()))  # target is member 0
    return {f"R@{k}": 100.0 * float(np.mean([r < k for r in ranks])) for k in (1, 2, 3)}


def test_cli_eval_genecis_matches_an_independent_computation(genecis, tmp_path, tiny_encoder, tiny_model_dir,
                                                             phi_path):
    from calibclip.cir import load_phi

    res = CliRunner().invoke(app, ["eval", "genecis", "--root", str(genecis), "--split", "change_attribute",
                                   "--model", str(tiny_model_dir), "--phi", str(phi_path), "--device", "cpu",
                                   "--results-dir", str(tmp_path / "res"), "--no-cache", "-q"])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("genecis*.json")
    got = json.loads(path.read_text())["metrics"]
    expected = _expected_recalls(tiny_encoder, read_genecis_task(genecis, "change_attribute"), load_phi(phi_path))
    for k, v in expected.items():
        assert got[f"change_attribute/{k}"] == pytest.approx(v, abs=1e-3)
    assert got["avg/R@1"] == pytest.approx(expected["R@1"], abs=1e-3)
    assert got["avg_R@1"] == got["avg/R@1"] and "avg" not in got
    assert got["change_attribute/R@1"] <= got["change_attribute/R@2"] <= got["change_attribute/R@3"]


def test_calibrated_genecis_runs_and_reports_the_same_metrics(genecis, tmp_path, tiny_model_dir, phi_path):
    from calibclip.eval.runner import EvalSpec, evaluate_many

    spec = EvalSpec(dataset="genecis", root=genecis, split="focus_object", model=str(tiny_model_dir), phi=phi_path,
                    device="cpu", results_dir=None, progress=False)
    base, calib = evaluate_many(spec, ["base", "calib"])
    assert set(base.metrics) == set(calib.metrics) >= {"focus_object/R@1", "focus_object/R@3", "avg_R@1"}
    assert all(0 <= v <= 100 for v in calib.metrics.values())


def test_bad_genecis_files_give_one_clear_line(genecis, tmp_path, tiny_model_dir, phi_path):
    args = ["eval", "genecis", "--root", str(genecis), "--split", "change_attribute", "--model",
            str(tiny_model_dir), "--phi", str(phi_path), "--device", "cpu", "--no-cache", "-q"]
    ann = genecis / "genecis" / "change_attribute.json"
    records = json.loads(ann.read_text())
    ann.write_text(json.dumps([{k: v for k, v in records[0].items() if k != "condition"}]))
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "change_attribute.json" in res.output and "'condition'" in res.output
    assert "Traceback" not in res.output
    ann.write_text(json.dumps(records))
    (genecis / "VG_100K" / "3.jpg").unlink()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "3.jpg not found" in res.output and "Visual Genome" in res.output
    res = CliRunner().invoke(app, [*args[:4], "--split", "nope", *args[6:]])
    assert res.exit_code == 2 and "change_attribute" in res.output


def test_split_all_reports_each_sub_task_and_their_average(genecis, tmp_path, tiny_encoder, tiny_model_dir,
                                                           phi_path):
    from calibclip.cir import load_phi

    # the two missing sub-tasks, in the official format too; VG images also found in the official VG_100K_all
    vg_all = genecis / "vg" / "VG_100K_all"
    vg_all.mkdir(parents=True)
    (genecis / "VG_100K" / "8.jpg").rename(vg_all / "8.jpg")
    attr = json.loads((genecis / "genecis" / "change_attribute.json").read_text())
    obj = json.loads((genecis / "genecis" / "focus_object.json").read_text())
    (genecis / "genecis" / "focus_attribute.json").write_text(json.dumps([{**r, "condition": "shape"} for r in attr]))
    (genecis / "genecis" / "change_object.json").write_text(json.dumps(obj[::-1]))
    res = CliRunner().invoke(app, ["eval", "genecis", "--root", str(genecis), "--model", str(tiny_model_dir),
                                   "--phi", str(phi_path), "--device", "cpu", "--results-dir",
                                   str(tmp_path / "res"), "--no-cache", "-q"])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("genecis*.json")
    got = json.loads(path.read_text())["metrics"]
    phi = load_phi(phi_path)
    per_task = {t: _expected_recalls(tiny_encoder, read_genecis_task(genecis, t), phi)
                for t in ("change_attribute", "focus_attribute", "change_object", "focus_object")}
    for t, exp in per_task.items():
        for k, v in exp.items():
            assert got[f"{t}/{k}"] == pytest.approx(v, abs=1e-3), (t, k)
    for k in ("R@1", "R@2", "R@3"):
        assert got[f"avg/{k}"] == pytest.approx(np.mean([m[k] for m in per_task.values()]), abs=1e-3)
    # Issue 15.10: the headline is the paper's "GeneCIS Avg. Recall @ 1": the unweighted mean of the 4 R@1.
    assert list(got)[0] == "avg_R@1" and "avg" not in got
    assert got["avg_R@1"] == pytest.approx(np.mean([per_task[t]["R@1"] for t in per_task]), abs=1e-3)
    # 2 queries per sub-task: every recall is 0, 50 or 100 %
    assert all(v in (0.0, 50.0, 100.0) for t in per_task for v in per_task[t].values())
    assert vg_all / "8.jpg" in read_genecis_task(genecis, "change_attribute").image_paths


@pytest.mark.parametrize(("task", "entry", "needle"), [
    ("change_attribute", {"image_id": 1, "instance_bbox": ["a", 4, 12, 10]},
     "'target.instance_bbox': expected [x, y, w, h]"),
    ("change_attribute", {"image_id": 1, "instance_bbox": [5, 4, 0, 10]}, "w, h > 0"),
    ("change_attribute", {"image_id": 1}, "has no 'target.instance_bbox' field"),
    ("focus_object", {"val_image_id": "abc"}, "'target.val_image_id': expected a non-negative integer id"),
    ("focus_object", {"val_image_id": "\u00b2"}, "'target.val_image_id': expected a non-negative integer id"),
    ("focus_object", {"image_id": 101}, "has no 'target.val_image_id' field"),
])
def test_bad_image_entries_name_the_file_and_the_field(genecis, task, entry, needle):
    ann = genecis / "genecis" / f"{task}.json"
    records = json.loads(ann.read_text())
    records[0]["target"] = entry
    ann.write_text(json.dumps(records))
    with pytest.raises(UserError) as err:
        read_genecis_task(genecis, task)
    msg = str(err.value)
    assert str(ann) in msg and "record 0 " in msg and needle in msg and "\n" not in msg


def test_every_record_is_kept_and_a_gallery_of_another_length_is_an_error(genecis):
    """Issue 15.10: nothing is dropped silently. The official COCOValSubset/VAWValSubset keep every record and
    batch [target] + gallery with torch's default collate, which needs one gallery length: by hand, that is
    "every record's gallery has the first record's length"; a file breaking it is an error naming the record."""
    ann = genecis / "genecis" / "change_attribute.json"
    records = json.loads(ann.read_text())
    official_ok = len({len(r["gallery"]) for r in records}) == 1
    assert official_ok and len(read_genecis_task(genecis, "change_attribute").queries) == len(records)
    records.append({**records[0], "gallery": records[0]["gallery"][:2], "condition": "size"})
    ann.write_text(json.dumps(records))
    with pytest.raises(UserError, match=r"change_attribute.json: record 2 has 2 gallery images but record 0 has 3"):
        read_genecis_task(genecis, "change_attribute")


def test_cli_errors_are_one_line_exit_2(genecis, tmp_path, tiny_model_dir, phi_path):
    base = ["eval", "genecis", "--model", str(tiny_model_dir), "--phi", str(phi_path), "--device", "cpu",
            "--no-cache", "-q"]
    res = CliRunner().invoke(app, [*base, "--root", str(tmp_path / "nowhere"), "--split", "focus_object"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "nowhere" in res.output
    res = CliRunner().invoke(app, [*base, "--root", str(genecis), "--split", "focus_attribute"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "focus_attribute.json not found" in res.output
    ann = genecis / "genecis" / "focus_object.json"
    ann.write_text(json.dumps([{"reference": {"val_image_id": 101}, "target": {"val_image_id": 102},
                                "gallery": {"val_image_id": 103}, "condition": "dog"}]))
    res = CliRunner().invoke(app, [*base, "--root", str(genecis), "--split", "focus_object"])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert str(ann) in res.output and "record 0 field 'gallery': input should be a valid list" in res.output
