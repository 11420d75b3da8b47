"""Sources (folder, manifests, fsspec URLs) and the Ray pipeline against the single-process indexer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from calibclip.errors import UserError
from calibclip.index.sources import list_manifest, list_source, list_url, read_bytes

# Ray Data's own DataContext emits DeprecationWarnings about its internal flags
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")


def _images(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        arr = (np.random.RandomState(i).rand(20 + i % 3, 24, 3) * 255).astype("uint8")
        Image.fromarray(arr).save(folder / f"img{i:03d}.png")
    return sorted(str(p.resolve()) for p in folder.glob("*.png"))


# ---- sources ----------------------------------------------------------------------------------
def test_manifests_csv_jsonl_headerless_and_relative(tmp_path):
    paths = _images(tmp_path / "photos", 3)
    (tmp_path / "m.csv").write_text("id,path\n1,photos/img000.png\n2," + paths[1] + "\n")
    assert [s.path for s in list_source(str(tmp_path / "m.csv"))] == paths[:2]
    (tmp_path / "bare.csv").write_text("photos/img002.png\nphotos/img000.png\n")  # no header
    assert [s.path for s in list_source(str(tmp_path / "bare.csv"))] == [paths[2], paths[0]]
    (tmp_path / "m.jsonl").write_text('{"url": "photos/img001.png"}\n\n"photos/img002.png"\n')
    stats = list_manifest(tmp_path / "m.jsonl")
    assert [s.path for s in stats] == paths[1:]
    assert stats[0].size == (tmp_path / "photos/img001.png").stat().st_size


def test_manifest_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    paths = _images(tmp_path / "photos", 2)
    pq.write_table(pa.table({"caption": ["a", "b"], "image_path": ["photos/img001.png", paths[0]]}),
                   tmp_path / "m.parquet")
    assert [s.path for s in list_source(str(tmp_path / "m.parquet"))] == [paths[1], paths[0]]


def test_manifest_errors(tmp_path):
    _images(tmp_path / "photos", 1)
    (tmp_path / "m.csv").write_text("path\nphotos/img000.png\nphotos/nope.png\n")
    with pytest.raises(UserError, match=r"1 listed file\(s\) do not exist.*nope.png"):
        list_source(str(tmp_path / "m.csv"))
    (tmp_path / "m.jsonl").write_text('{"caption": "x"}\n')
    with pytest.raises(UserError, match="m.jsonl:1: no path field"):
        list_source(str(tmp_path / "m.jsonl"))
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(UserError, match="bad.jsonl:1: not JSON"):
        list_source(str(tmp_path / "bad.jsonl"))
    with pytest.raises(UserError, match="no such manifest"):
        list_source(str(tmp_path / "missing.csv"))
    with pytest.raises(UserError, match="not a directory, manifest"):
        list_source(str(tmp_path / "nothing"))


def test_fsspec_urls(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    png = (tmp_path / "x.png")
    Image.new("RGB", (9, 7), (200, 10, 10)).save(png)
    for name in ("b/2.png", "a/1.png", "a/notes.txt", "a/.hidden.png"):
        fs.pipe(f"/bucket/{name}", png.read_bytes())
    stats = list_url("memory://bucket/")
    assert [s.path for s in stats] == ["memory://bucket/a/1.png", "memory://bucket/b/2.png"]
    assert stats[0].size == png.stat().st_size
    assert read_bytes(stats[1].path) == png.read_bytes()
    local = _images(tmp_path / "photos", 2)
    assert [s.path for s in list_source("file://" + str(tmp_path / "photos"))] == local


# ---- Ray --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install 'calibclip[ray]'")
    from calibclip.index.distributed import RayConfig, connect

    owns = connect("local", RayConfig(local_cpus=2))  # the --ray local path, 2 CPU workers
    yield ray
    if owns:
        ray.shutdown()


def _by_path(index):
    ids, emb, paths = index.store.load_matrix("plain")
    return dict(zip(paths, emb)), dict(zip(paths, ids.tolist()))


def test_ray_local_cli_equals_single_process(tmp_path, tiny_encoder, tiny_model_dir, ray_cluster):
    from typer.testing import CliRunner

    from calibclip.cli import app
    from calibclip.index import Index

    _images(tmp_path / "photos", 11)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    single = Index.build(tmp_path / "photos", tiny_encoder, out=tmp_path / "single.idx", batch_size=4,
                         num_workers=0, dtype="float32", progress=False)
    r = CliRunner().invoke(app, ["index", str(tmp_path / "photos"), "--model", str(tiny_model_dir), "--out",
                                 str(tmp_path / "ray.idx"), "-q", "--ray", "local", "--device", "cpu",
                                 "--batch-size", "4", "--dtype", "float32"])
    assert r.exit_code == 0, r.output
    assert "11 added" in r.output and "1 skipped" in r.output and "broken.jpg" in r.output
    dist = Index.open(tmp_path / "ray.idx", tiny_encoder)
    assert dist.store.rows() == single.store.rows()  # same ids, paths, shard/row layout
    emb_s, _ = _by_path(single)
    emb_d, _ = _by_path(dist)
    assert emb_s.keys() == emb_d.keys()
    for path in emb_s:
        np.testing.assert_allclose(emb_d[path], emb_s[path], atol=1e-5)
    assert dist.store.info()["model"] == str(tiny_model_dir) and dist.store.failures() == single.store.failures()
    q = tiny_encoder.encode_texts(["a red car"])
    np.testing.assert_array_equal(dist.search_vectors(q, 5)[1], single.search_vectors(q, 5)[1])
    r = CliRunner().invoke(app, ["index", str(tmp_path / "photos"), "--out", str(tmp_path / "ray.idx"), "-q",
                                 "--ray", "nowhere"])
    assert r.exit_code == 2 and "--ray nowhere: use local, auto" in r.output and "Traceback" not in r.output


def test_ray_worker_crash_is_retried_and_run_resumes(tmp_path, tiny_encoder, tiny_model_dir, ray_cluster):
    from calibclip.index import Index
    from calibclip.index.distributed import RayConfig, index_distributed

    paths = _images(tmp_path / "photos", 10)
    (tmp_path / "first.csv").write_text("path\n" + "\n".join(paths[:6]) + "\n")
    marker = tmp_path / "crashed"
    cfg = RayConfig(num_actors=1, crash_marker=str(marker))
    first = index_distributed(str(tmp_path / "first.csv"), tiny_encoder, model=str(tiny_model_dir),
                              out=tmp_path / "r.idx", batch_size=4, dtype="float32", progress=False, config=cfg)
    assert marker.exists()  # one decode worker died mid-run …
    assert first.last_summary.added == 6 and len(first) == 6  # … and its batch was re-run
    (tmp_path / "all.jsonl").write_text("".join(json.dumps({"path": p}) + "\n" for p in paths))
    second = index_distributed(str(tmp_path / "all.jsonl"), tiny_encoder, model=str(tiny_model_dir),
                               out=tmp_path / "r.idx", batch_size=4, dtype="float32", progress=False,
                               config=RayConfig(num_actors=1), index_type="ivf-flat", nlist=2)
    s = second.last_summary
    assert (s.added, s.unchanged, s.removed) == (4, 6, 0)  # resumed: only the missing files embedded
    assert second.ann_report.kind == "ivf-flat" and (tmp_path / "r.idx" / "ann.faiss").exists()
    single = Index.build(tmp_path / "photos", tiny_encoder, out=tmp_path / "s.idx", batch_size=4, num_workers=0,
                         dtype="float32", progress=False)
    emb_s, ids_s = _by_path(single)
    emb_d, ids_d = _by_path(second)
    assert emb_s.keys() == emb_d.keys() and sorted(ids_d.values()) == list(range(1, 11))
    for path in emb_s:
        np.testing.assert_allclose(emb_d[path], emb_s[path], atol=1e-5)
