"""The evaluation runner end to end on a Flickr-format fixture with the tiny encoder; reports; submissions."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibclip.data import ComposedQuery, ComposedSet, fingerprint
from calibclip.eval import metrics as M
from calibclip.eval.report import append_markdown, results_table
from calibclip.eval.runner import EvalSpec, _submission, evaluate, submission_paths
from calibclip.eval.scoring import CalibratedSims, FeatureSims, FullSortSims

def png(path: Path, color: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (color, 255 - color, 0)).save(path)
    return path


def dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


WORDS = ["red", "blue", "green", "circle", "square", "dog", "cat", "tree"]


def write_flickr(root: Path, n_test: int = 6) -> Path:
    """A Flickr30K Karpathy fixture: n_test test images (+1 train), 5 captions each, tiny PNGs."""
    rng = np.random.default_rng(0)
    images, sentid = [], 0
    for i in range(n_test + 1):
        name = f"{1000 + i}.jpg"
        arr = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        (root / "flickr30k-images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / "flickr30k-images" / name, format="JPEG")
        sents = []
        for k in range(5):
            raw = f"a {WORDS[(i + k) % 8]} {WORDS[(3 * i + k) % 8]} near a {WORDS[(i * k) % 8]}"
            sents.append({"tokens": raw.split(), "raw": raw, "imgid": i, "sentid": sentid})
            sentid += 1
        images.append({"sentids": [s["sentid"] for s in sents], "imgid": i, "sentences": sents,
                       "split": "train" if i == n_test else "test", "filename": name})
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": images, "dataset": "flickr30k"}))
    return root


@pytest.fixture
def flickr(tmp_path):
    return write_flickr(tmp_path / "flickr30k")


def test_evaluate_flickr_end_to_end(flickr, tmp_path, tiny_encoder, tiny_model_dir):
    spec = EvalSpec(dataset="flickr30k", root=flickr, model=str(tiny_model_dir), batch_size=4,
                    cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", progress=False)
    res = evaluate(spec, enc=tiny_encoder)
    path = tmp_path / "results" / f"flickr30k-{Path(tiny_model_dir).name}-base.json"
    assert res.path == path
    saved = json.loads(path.read_text())
    # Metrics recomputed independently: full similarity matrix from the encoder's numpy API.
    from calibclip.data import read_karpathy

    ds = read_karpathy(flickr, "flickr30k", "test")
    g = tiny_encoder.encode_images([Image.open(p).convert("RGB") for p in ds.image_paths])
    t = tiny_encoder.encode_texts(ds.texts)
    expected = M.tir_metrics(t @ g.T, ds.text_image)
    assert set(saved["metrics"]) == {"t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1", "i2t_R@5", "i2t_R@10", "rsum"}
    for k, v in expected.items():
        assert saved["metrics"][k] == pytest.approx(v, abs=1e-3)
    assert saved["metrics"]["t2i_R@10"] == 100.0  # only 6 images: every caption's image is in the top 10
    assert saved["dataset"] == "flickr30k" and saved["split"] == "test" and saved["config"] == "base"
    assert saved["counts"] == {"images": 6, "queries": 30}
    assert saved["data_fingerprint"] == fingerprint(ds.files, ds.image_paths)
    assert saved["settings"]["mode"] == "base" and saved["settings"]["calibration"] is None
    assert saved["settings"]["gallery_cached"] is False
    assert set(saved["timing"]) == {"gallery_s", "queries_s", "metrics_s", "total_s"}
    assert len(list((tmp_path / "cache").glob("*.plain-plain.npy"))) == 1

    again = evaluate(spec, enc=tiny_encoder)  # gallery from the cache, identical numbers
    assert again.settings["gallery_cached"] is True and again.metrics == res.metrics
    # Changing an annotation changes the data fingerprint → the cache is not reused.
    ann = flickr / "dataset_flickr30k.json"
    ann.write_text(ann.read_text().replace("a red", "one red"))
    third = evaluate(spec, enc=tiny_encoder)
    assert third.data_fingerprint != res.data_fingerprint and third.settings["gallery_cached"] is False


def test_cli_eval_writes_json_and_markdown(flickr, tmp_path, tiny_model_dir):
    from calibclip.cli import app

    md = tmp_path / "table.md"
    args = ["eval", "flickr30k", "--root", str(flickr), "--model", str(tiny_model_dir), "--results-dir",
            str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--markdown", str(md), "-q",
            "--device", "cpu"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "t2i_R@1" in out.output
    saved = json.loads(next((tmp_path / "res").glob("flickr30k-*-base.json")).read_text())
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| dataset | split | model | config | t2i_R@1 |")
    assert lines[2].startswith(f"| flickr30k | test | {tiny_model_dir} | base | {saved['metrics']['t2i_R@1']:.2f} |")
    CliRunner().invoke(app, args)
    assert len(md.read_text().splitlines()) == 4  # same columns: one more row under the same header

    bad = CliRunner().invoke(app, ["eval", "flickr30k", "--root", str(tmp_path / "nope"), "--model", "x"])
    assert bad.exit_code == 2 and "no such folder" in bad.output
    wrong = CliRunner().invoke(app, ["eval", "imagenet", "--root", str(flickr), "--model", "x"])
    assert wrong.exit_code == 2 and "unknown dataset" in wrong.output


def test_markdown_new_header_when_columns_differ(tmp_path):
    from calibclip.eval.runner import EvalResult

    def row(metrics, cfg="base"):
        return EvalResult("cirr", "val", "m", cfg, metrics, {}, "fp", {}, {})

    md = tmp_path / "r.md"
    append_markdown(md, row({"R@1": 10.0}))
    append_markdown(md, row({"R@1": 12.5}, "calib"))
    append_markdown(md, row({"mAP@5": 3.0}))
    text = md.read_text()
    assert text.count("| dataset |") == 2 and "| cirr | val | m | calib | 12.50 |" in text


def test_compare_table_shows_delta():
    from rich.console import Console

    from calibclip.eval.runner import EvalResult

    a = EvalResult("flickr30k", "test", "m", "base", {"t2i_R@1": 50.0}, {}, "fp", {}, {})
    b = EvalResult("flickr30k", "test", "m", "calib", {"t2i_R@1": 62.5}, {}, "fp", {}, {})
    console = Console(record=True, width=100)
    console.print(results_table([a, b]))
    text = console.export_text()
    assert "Δ" in text and "+12.50" in text


def _cirr_set(tmp_path: Path) -> ComposedSet:
    names = ["dev-1-0-img0", "dev-1-0-img1", "dev-1-0-img2", "dev-2-0-img0"]
    paths = [tmp_path / f"{n}.png" for n in names]
    qs = [ComposedQuery("101", paths[0], 0, ["x"], 2, [2], [0, 1, 2]),
          ComposedQuery("102", paths[3], 3, ["y"], None, [], [3, 1])]
    return ComposedSet("cirr", "test", paths, names, qs)


def test_cirr_submission_format(tmp_path):
    ds = _cirr_set(tmp_path)
    q = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    g = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]], np.float32)
    sub = _submission(ds, FeatureSims(q, g))
    # query 101: scores 1, .6, .8, 0 → reference 0 removed → img2, img1, dev-2; subset {1, 2} → img2, img1
    assert sub["recall"] == {"version": "rc2", "metric": "recall",
                             "101": ["dev-1-0-img2", "dev-1-0-img1", "dev-2-0-img0"],
                             "102": ["dev-1-0-img1", "dev-1-0-img2", "dev-1-0-img0"]}
    assert sub["recall_subset"] == {"version": "rc2", "metric": "recall_subset", "101": ["dev-1-0-img2",
                                    "dev-1-0-img1"], "102": ["dev-1-0-img1"]}
    assert submission_paths(tmp_path / "out.json")["recall_subset"] == tmp_path / "out_subset.json"
    circo = ComposedSet("circo", "test", ds.image_paths, ["1", "2", "3", "4"], ds.queries)
    assert _submission(circo, FeatureSims(q, g))["recall"]["101"] == [1, 3, 2, 4]  # CIRCO ids: JSON integers


def test_calibrated_sims_follow_discriminative_order(monkeypatch):
    def discriminative_scores(q_plain, q_dcc, g_plain, g_cve, cfg, k):
        s = q_plain @ g_plain.T + cfg * (q_dcc @ g_cve.T)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(s, order, 1), order

    fake = types.SimpleNamespace(discriminative_scores=discriminative_scores)
    monkeypatch.setitem(sys.modules, "calibclip.calib", fake)
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]], np.float32)
    cve = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]], np.float32)
    src = FullSortSims(CalibratedSims(q, q, g, cve, 1.0))  # s = [.9, .5 + 2, .1] → order 1, 0, 2
    assert src.rows(0, 1).tolist() == [[2.0, 3.0, 1.0]]
    assert M.ranks_for(src, np.array([[1]])).tolist() == [[0]]


def test_compare_base_calib_encodes_gallery_once(flickr, tmp_path, tiny_model_dir):
    if not hasattr(pytest.importorskip("calibclip.calib"), "discriminative_scores"):
        pytest.skip("calibclip.calib not written yet")
    from calibclip.eval.runner import evaluate_many

    spec = EvalSpec(dataset="flickr30k", root=flickr, model=str(tiny_model_dir), cache_dir=tmp_path / "cache",
                    results_dir=tmp_path / "results", progress=False, device="cpu")
    base, calib = evaluate_many(spec, ["base", "calib"])
    assert calib.settings["gallery_cached"] is False and base.settings["gallery_cached"] is True
    assert base.config == "base" and calib.config == "calib" and calib.settings["calibration"] is not None
    assert (tmp_path / "results" / f"flickr30k-{Path(tiny_model_dir).name}-calib.json").exists()
    # Independent check of the calibrated t2i recall: position of each caption's image in the ids list
    # returned by discriminative_scores over the whole gallery.
    import calibclip
    from calibclip.calib import CalibConfig, discriminative_scores, image_feature_sets, text_feature_sets
    from calibclip.data import read_karpathy

    enc = calibclip.load(str(tiny_model_dir), device="cpu", calibration=CalibConfig())
    ds = read_karpathy(flickr, "flickr30k", "test")
    g = image_feature_sets(enc, enc.preprocess([Image.open(p).convert("RGB") for p in ds.image_paths]), enc.calibration)
    t = text_feature_sets(enc, ds.texts, enc.calibration)
    g = {k: v.cpu().numpy() for k, v in g.items()}
    t = {k: v.cpu().numpy() for k, v in t.items()}
    _, ids = discriminative_scores(t["plain"], t["dcc"], g["plain"], g.get("cve", g["plain"]), CalibConfig(),
                                   len(ds.image_paths))
    pos = np.argmax(ids == np.asarray(ds.text_image)[:, None], axis=1)
    for k in (1, 5):
        assert calib.metrics[f"t2i_R@{k}"] == pytest.approx(100 * float(np.mean(pos < k)), abs=1e-3)
    assert "i2t uses plain features (CalibCLIP re-ranks text→image only)" in calib.notes
    assert calib.metrics["i2t_R@1"] == base.metrics["i2t_R@1"]


def write_cirr(tmp_path: Path) -> Path:
    """A CIRR rc2 fixture: val (2 queries, one target outside its img_set) and an unlabelled test1."""
    root = tmp_path / "cirr"
    names = [f"dev-147-1-img{k}" for k in range(4)] + ["dev-980-0-img0"]
    for k, n in enumerate(names):
        png(root / "dev" / f"{n}.png", 50 * k)
    dump(root / "image_splits" / "split.rc2.val.json", {n: f"./dev/{n}.png" for n in names})
    dump(root / "captions" / "cap.rc2.val.json", [
        {"pairid": 1, "reference": names[1], "target_hard": names[3], "target_soft": {names[3]: 1.0},
         "caption": "make it red", "img_set": {"id": 183, "members": names[:4]}},
        {"pairid": 2, "reference": names[0], "target_hard": names[4], "target_soft": {names[4]: 1.0},
         "caption": "more dogs", "img_set": {"id": 183, "members": names[:4]}}])
    dump(root / "image_splits" / "split.rc2.test1.json", {"test1-1-0-img0": "./test1/test1-1-0-img0.png",
                                                         "test1-1-0-img1": "./test1/test1-1-0-img1.png"})
    dump(root / "captions" / "cap.rc2.test1.json", [
        {"pairid": 1, "reference": "test1-1-0-img0", "caption": "x",
         "img_set": {"id": 1, "members": ["test1-1-0-img0", "test1-1-0-img1"]}}])
    png(root / "test1" / "test1-1-0-img0.png")
    png(root / "test1" / "test1-1-0-img1.png", 99)
    return root


def test_evaluate_cirr_val_and_test_submission(tmp_path, tiny_encoder, tiny_model_dir, phi_path):
    from calibclip.cir import encode_composed, load_phi
    from calibclip.data import read_cirr

    root = write_cirr(tmp_path)
    spec = EvalSpec(dataset="cirr", root=root, model=str(tiny_model_dir), phi=phi_path, split="val",
                    results_dir=tmp_path / "res", progress=False)
    res = evaluate(spec, enc=tiny_encoder)
    ds = read_cirr(root, "val")
    g = tiny_encoder.encode_images([Image.open(p).convert("RGB") for p in ds.image_paths])
    refs = [Image.open(x.reference_path).convert("RGB") for x in ds.queries]
    q = encode_composed(tiny_encoder, refs, [x.captions[0] for x in ds.queries], load_phi(phi_path))
    expected = M.cirr_metrics(q @ g.T, [x.reference for x in ds.queries], [x.target for x in ds.queries],
                              [x.members for x in ds.queries])
    assert res.metrics == pytest.approx({k: round(v, 4) for k, v in expected.items()}, abs=1e-3)
    assert res.config == "base+phi" and res.path.name == f"cirr-{Path(tiny_model_dir).name}-base+phi.json"

    test = evaluate(EvalSpec(**{**spec.__dict__, "split": "test"}), enc=tiny_encoder)
    assert test.metrics == {} and len(test.submission) == 2  # unlabelled: the server files by default
    recall = json.loads(Path(test.submission[0]).read_text())
    assert recall["version"] == "rc2" and recall["metric"] == "recall" and recall["1"] == ["test1-1-0-img1"]
    subset = json.loads(Path(test.submission[1]).read_text())
    assert subset["metric"] == "recall_subset" and subset["1"] == ["test1-1-0-img1"]


def test_compare_base_rtd_calib_on_cirr(tmp_path, tiny_encoder, tiny_model_dir, phi_path):
    from calibclip.cir.rtd import make_trainable_tower, save_rtd
    from calibclip.eval.runner import evaluate_many

    root = write_cirr(tmp_path)
    ckpt = save_rtd(tiny_encoder, make_trainable_tower(tiny_encoder), tmp_path / "untrained.pt")
    spec = EvalSpec(dataset="cirr", root=root, model=str(tiny_model_dir), phi=phi_path, rtd=ckpt, device="cpu",
                    cache_dir=tmp_path / "cache", results_dir=tmp_path / "res", progress=False)
    base, rtd, calib = evaluate_many(spec, ["base", "rtd", "calib"])
    assert (base.config, rtd.config, calib.config) == ("base+phi", "rtd-untrained+phi", "calib+phi")
    assert rtd.metrics == base.metrics  # an untrained copy of the text tower changes nothing
    assert rtd.settings["gallery_cached"] and base.settings["gallery_cached"]  # RTD keeps the image side
    assert calib.settings["gallery_cached"] is False and set(calib.metrics) == set(base.metrics)


def test_evaluate_fashioniq_averages_both_caption_orders(tmp_path, tiny_encoder, tiny_model_dir, phi_path):
    from calibclip.cir import encode_composed, load_phi
    from calibclip.data import read_fashioniq

    for cat in ("dress", "shirt", "toptee"):
        names = [f"{cat}{k}" for k in range(3)]
        for k, n in enumerate(names):
            png(tmp_path / "images" / f"{n}.png", 40 * k)
        dump(tmp_path / "image_splits" / f"split.{cat}.val.json", names)
        dump(tmp_path / "captions" / f"cap.{cat}.val.json",
             [{"candidate": names[0], "target": names[1], "captions": ["is red.", "has a dog?"]}])
    res = evaluate(EvalSpec(dataset="fashioniq", root=tmp_path, model=str(tiny_model_dir), phi=phi_path,
                            results_dir=None, progress=False), enc=tiny_encoder)
    # Independent: normalize(n(q("is red and has a dog")) + n(q("has a dog and is red"))) for the dress query.
    dress = read_fashioniq(tmp_path, "val", ("dress",))[0]
    ref = [Image.open(dress.queries[0].reference_path).convert("RGB")]
    phi = load_phi(phi_path)
    f1 = encode_composed(tiny_encoder, ref, ["is red and has a dog"], phi)
    f2 = encode_composed(tiny_encoder, ref, ["has a dog and is red"], phi)
    q = (f1 + f2) / np.linalg.norm(f1 + f2)
    from calibclip.eval.runner import encode_composed_queries

    ours = encode_composed_queries(tiny_encoder, dress, phi, "a photo of $ that {}", 8, False)["plain"]
    np.testing.assert_allclose(ours, q, atol=1e-5)
    assert set(res.metrics) == {f"{c}/R@{k}" for c in ("dress", "shirt", "toptee", "avg") for k in (10, 50)} | {"avg"}
    assert res.metrics["avg/R@10"] == 100.0  # 3-image galleries: the target is always within the top 10


def test_evaluate_tbpr_on_synthetic_cuhk_pedes(tmp_path, tiny_encoder, tiny_model_dir):
    synth = pytest.importorskip("calibclip.data.synth")
    root = tmp_path / "cuhk-pedes"
    synth.generate(root, "tbpr", {"test": 12}, seed=0, progress=False)
    res = evaluate(EvalSpec(dataset="cuhk-pedes", root=root, model=str(tiny_model_dir), results_dir=tmp_path,
                            progress=False), enc=tiny_encoder)
    from calibclip.data import read_irra

    ds = read_irra(root, "cuhk-pedes", "test")
    g = tiny_encoder.encode_images([Image.open(p).convert("RGB") for p in ds.image_paths])
    t = tiny_encoder.encode_texts(ds.texts)
    expected = M.tbpr_metrics(t @ g.T, ds.text_pids, ds.image_pids)
    assert set(res.metrics) == {"R@1", "R@5", "R@10", "mAP", "mINP"}
    assert res.metrics == pytest.approx({k: round(v, 4) for k, v in expected.items()}, abs=1e-3)
    assert json.loads(res.path.read_text())["counts"]["images"] == len(ds.image_paths)


def clip_benchmark_recall(scores: np.ndarray, owner: list[int], k: int) -> tuple[float, float]:
    """CLIP_benchmark zeroshot_retrieval.recall_at_k, by hand (in %): text→image = share of captions whose
    image is in their top-k; image→text = share of images with ANY of their captions in their top-k."""
    pos = np.zeros(scores.shape, dtype=bool)
    pos[np.arange(len(owner)), owner] = True
    top_t = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    t2i = np.mean([pos[i, top_t[i]].any() for i in range(len(owner))])
    top_i = np.argsort(-scores.T, axis=1, kind="stable")[:, :k]
    i2t = np.mean([pos.T[j, top_i[j]].any() for j in range(scores.shape[1])])
    return 100 * float(t2i), 100 * float(i2t)


def test_every_caption_is_a_query_as_in_clip_benchmark(flickr, tiny_encoder, tiny_model_dir, tmp_path):
    """Issue 15.9: images with 6 and 7 captions give 6 and 7 queries (no cap at 5); counts.queries says so."""
    ann = flickr / "dataset_flickr30k.json"
    doc = json.loads(ann.read_text())
    for img, extra in ((doc["images"][0], ["a dog in red", "two cats"]), (doc["images"][1], ["a tree"])):
        img["sentences"] += [{"tokens": t.split(), "raw": t, "imgid": img["imgid"], "sentid": 900 + n}
                             for n, t in enumerate(extra)]
    ann.write_text(json.dumps(doc))
    res = evaluate(EvalSpec(dataset="flickr30k", root=flickr, model=str(tiny_model_dir), results_dir=tmp_path,
                            progress=False), enc=tiny_encoder)
    saved = json.loads(res.path.read_text())
    assert saved["counts"] == {"images": 6, "queries": 33}  # 30 + 3 (before: 30)
    texts = [s["raw"] for e in doc["images"] if e["split"] == "test" for s in e["sentences"]]
    owner = [i for i, e in enumerate(x for x in doc["images"] if x["split"] == "test") for _ in e["sentences"]]
    g = tiny_encoder.encode_images([Image.open(flickr / "flickr30k-images" / e["filename"]).convert("RGB")
                                    for e in doc["images"] if e["split"] == "test"])
    scores = tiny_encoder.encode_texts(texts) @ g.T
    for k in (1, 5):
        t2i, i2t = clip_benchmark_recall(scores, owner, k)
        assert saved["metrics"][f"t2i_R@{k}"] == pytest.approx(t2i, abs=1e-3)
        assert saved["metrics"][f"i2t_R@{k}"] == pytest.approx(i2t, abs=1e-3)
