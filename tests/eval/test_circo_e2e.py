"""`calibclip eval circo` end to end on a fixture in the official CIRCO layout (val metrics, test submission)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibclip.cli import app
from calibclip.eval import metrics as M

N_IMAGES = 60  # > 50 so the top-50 submission is a strict subset of the gallery


def write_circo(root: Path) -> Path:
    """CIRCO: annotations/{val,test}.json + COCO2017_unlabeled/{annotations/image_info_unlabeled2017.json, unlabeled2017/}."""
    coco = root / "COCO2017_unlabeled"
    (coco / "unlabeled2017").mkdir(parents=True)
    (coco / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in range(N_IMAGES):
        img_id = 1000 + 7 * i  # COCO ids are not positions
        name = f"{img_id:012d}.jpg"
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(coco / "unlabeled2017" / name)
        images.append({"id": img_id, "file_name": name, "width": 20, "height": 20})
    (coco / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps({"images": images}))
    ids = [m["id"] for m in images]
    val = [{"id": q, "reference_img_id": ids[q], "target_img_id": ids[q + 10], "relative_caption": cap,
            "shared_concept": "thing", "gt_img_ids": [ids[q + 10], ids[q + 20], ids[q + 30]][: 1 + q % 3]}
           for q, cap in enumerate(["is red", "has two dogs", "is at night", "shows more trees"])]
    test = [{"id": q, "reference_img_id": ids[40 + q], "relative_caption": cap, "shared_concept": "thing"}
            for q, cap in enumerate(["is blue", "has a cat"])]
    (root / "annotations").mkdir()
    (root / "annotations" / "val.json").write_text(json.dumps(val))
    (root / "annotations" / "test.json").write_text(json.dumps(test))
    return root


@pytest.fixture
def circo(tmp_path):
    return write_circo(tmp_path / "circo")


def _sims(enc, root: Path, split: str, phi_path: Path) -> tuple[np.ndarray, object]:
    """Independent similarity matrix: the encoder's own composed features against the gallery."""
    from calibclip.cir import encode_composed, load_phi
    from calibclip.data import read_circo

    ds = read_circo(root, split)
    g = enc.encode_images([Image.open(p).convert("RGB") for p in ds.image_paths])
    refs = [Image.open(q.reference_path).convert("RGB") for q in ds.queries]
    q = encode_composed(enc, refs, [x.captions[0] for x in ds.queries], load_phi(phi_path))
    return q @ g.T, ds


def test_cli_eval_circo_val_metrics_match_an_independent_computation(circo, tmp_path, tiny_encoder, tiny_model_dir,
                                                                      phi_path):
    res = CliRunner().invoke(app, ["eval", "circo", "--root", str(circo), "--model", str(tiny_model_dir),
                                   "--phi", str(phi_path), "--device", "cpu", "--results-dir",
                                   str(tmp_path / "res"), "--no-cache", "-q"])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "res").glob("circo*.json")
    got = json.loads(path.read_text())
    sims, ds = _sims(tiny_encoder, circo, "val", phi_path)
    assert [len(q.positives) for q in ds.queries] == [1, 2, 3, 1]
    expected = M.circo_metrics(sims, [q.positives for q in ds.queries])
    assert set(got["metrics"]) == {"mAP@5", "mAP@10", "mAP@25", "mAP@50"}
    assert got["metrics"] == pytest.approx({k: round(v, 4) for k, v in expected.items()}, abs=1e-3)
    assert got["metrics"]["mAP@50"] >= got["metrics"]["mAP@5"]  # AP@K cannot drop as K grows here
    assert "mAP@10" in res.output


def test_cli_eval_circo_test_writes_the_server_submission(circo, tmp_path, tiny_encoder, tiny_model_dir, phi_path):
    sub = tmp_path / "out" / "circo_test.json"
    res = CliRunner().invoke(app, ["eval", "circo", "--root", str(circo), "--split", "test", "--model",
                                   str(tiny_model_dir), "--phi", str(phi_path), "--device", "cpu",
                                   "--submission", str(sub), "--results-dir", str(tmp_path / "res"), "--no-cache",
                                   "-q"])
    assert res.exit_code == 0, res.output
    assert sorted(sub.parent.glob("*.json")) == [sub]  # CIRCO: one file, {query id: [50 image ids]}
    body = json.loads(sub.read_text())
    sims, ds = _sims(tiny_encoder, circo, "test", phi_path)
    # query ids as strings → ranked COCO image ids (JSON integers, as in the server's example)
    assert set(body) == {"0", "1"}
    for qi, qid in enumerate(["0", "1"]):
        ranked = body[qid]
        assert len(ranked) == 50 and len(set(ranked)) == 50 and all(type(x) is int for x in ranked)
        expected = [int(ds.image_ids[j]) for j in np.argsort(-sims[qi], kind="stable")[:50]]
        assert ranked == expected


def test_cli_eval_circo_bad_annotation_is_one_clear_line(circo, tmp_path, tiny_model_dir, phi_path):
    (circo / "annotations" / "val.json").write_text(json.dumps([{"id": 0, "relative_caption": "x"}]))
    res = CliRunner().invoke(app, ["eval", "circo", "--root", str(circo), "--model", str(tiny_model_dir),
                                   "--phi", str(phi_path), "--device", "cpu", "--no-cache", "-q"])
    assert res.exit_code == 2
    assert "val.json" in res.output and "reference_img_id" in res.output and "Traceback" not in res.output
