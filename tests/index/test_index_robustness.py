"""Index robustness (issue #16): one writer at a time, the symlink rule, retries, --verify, leftovers, umask."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibclip.errors import UserError
from calibclip.index import Index
from calibclip.testing import write_random_images as _write_images

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _build(folder, enc, out, **kw):
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_workers", 0)
    kw.setdefault("progress", False)
    return Index.build(folder, enc, out=out, **kw)


def _env():
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


# ---- 1. one writer at a time -------------------------------------------------------------------
HOLD = """import sys, time
from calibclip.index.store import EmbeddingStore
store = EmbeddingStore(sys.argv[1], create=True, writer=True)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
store.close()
"""


def _hold_lock(index, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(index), str(seconds)], stdout=subprocess.PIPE,
                         env=_env(), text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_fails_at_once_or_waits_while_readers_read(tmp_path, tiny_encoder, capfd):
    _write_images(tmp_path / "photos", 4)
    _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")
    holder = _hold_lock(tmp_path / "p.idx", 30)
    try:
        t0 = time.perf_counter()
        with pytest.raises(UserError, match="another `calibclip index` is writing"):
            _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx", wait=False)
        assert time.perf_counter() - t0 < 5
        # readers take no lock: search works while the writer holds it
        assert len(Index.open(tmp_path / "p.idx", tiny_encoder).search("a red car", k=2)) == 2
    finally:
        holder.kill()
        holder.wait()
    holder = _hold_lock(tmp_path / "p.idx", 1.5)
    try:
        capfd.readouterr()
        index = _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")  # waits, then runs
        assert "waiting for it to finish" in capfd.readouterr().err
        assert index.last_summary.unchanged == 4 and holder.wait(timeout=30) == 0
    finally:
        holder.kill()


def test_rm_waits_for_a_running_writer(tmp_path, tiny_encoder, capfd):
    from calibclip.index.manage import remove

    paths = _write_images(tmp_path / "photos", 3)
    _build(tmp_path / "photos", tiny_encoder, tmp_path / "p.idx")
    holder = _hold_lock(tmp_path / "p.idx", 1.5)
    try:
        capfd.readouterr()
        t0 = time.perf_counter()
        report = remove(tmp_path / "p.idx", [paths[0]])  # waits for the lock, then removes
        assert time.perf_counter() - t0 > 0.5 and holder.wait(timeout=30) == 0
        assert "waiting for it to finish" in capfd.readouterr().err
        assert report.removed == [str(Path(paths[0]).resolve())]
        assert len(Index.open(tmp_path / "p.idx", tiny_encoder)) == 2
    finally:
        holder.kill()


@pytest.mark.slow
def test_two_indexer_processes_give_every_image_its_own_vector(tmp_path, tiny_model_dir, tiny_encoder):
    folder = tmp_path / "photos"
    _write_images(folder, 40)
    cmd = [sys.executable, "-m", "calibclip.cli", "index", str(folder), "-o", str(tmp_path / "x.idx"),
           "--model", str(tiny_model_dir), "--num-workers", "0", "-q", "--dtype", "float32"]
    procs = [subprocess.Popen(cmd + ["--batch-size", bs], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for bs in ("4", "8")]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    index = Index.open(tmp_path / "x.idx", tiny_encoder)
    clean = _build(folder, tiny_encoder, tmp_path / "clean.idx", dtype="float32")
    assert len(index) == 40 and sorted(index.paths) == sorted(clean.paths)
    a, b = dict(zip(index.paths, index.embeddings())), dict(zip(clean.paths, clean.embeddings()))
    for p in a:  # same model, same image → the same float32 vector (bit-identical batches aside: 1e-5)
        np.testing.assert_allclose(a[p], b[p], atol=1e-5)


# ---- 2. symlinks ---------------------------------------------------------------------------------
def test_symlink_rule_inside_followed_outside_skipped_or_allowed(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    _write_images(folder, 3)
    _write_images(tmp_path / "outside", 1, start=50)
    (folder / "dup.png").symlink_to(folder / "img001.png")  # another name of an indexed image
    (folder / "out.png").symlink_to(tmp_path / "outside" / "img050.png")
    (folder / "broken.png").symlink_to(tmp_path / "nowhere.png")
    for _ in range(2):  # used to fail with "UNIQUE constraint failed: items.path" on every run
        index = _build(folder, tiny_encoder, tmp_path / "p.idx")
        assert sorted(Path(p).name for p in index.paths) == ["img000.png", "img001.png", "img002.png"]
        links = index.last_summary.links_skipped
        assert len(links) == 2 and any("out.png" in s and "--follow-symlinks" in s for s in links)
        assert any("broken.png" in s and "broken symlink" in s for s in links)
    followed = _build(folder, tiny_encoder, tmp_path / "f.idx", follow_symlinks=True)
    outside = str((tmp_path / "outside" / "img050.png").resolve())
    assert len(followed) == 4 and outside in followed.paths
    again = _build(folder, tiny_encoder, tmp_path / "f.idx")  # the choice is remembered
    assert len(again) == 4 and again.last_summary.unchanged == 4

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from calibclip.serve import create_app

    ids = dict(zip(followed.paths, followed.matrix()[0]))
    with TestClient(create_app(tmp_path / "f.idx", encoder=tiny_encoder), base_url="http://127.0.0.1") as c:
        resp = c.get(f"/images/{ids[outside]}")  # indexed with --follow-symlinks: served
        assert resp.status_code == 200 and resp.content == Path(outside).read_bytes()
        hit = c.post("/search/text", json={"query": "a red car", "k": 4}).json()["hits"]
        assert all(c.get(f"/images/{h['id']}?thumb=1").status_code == 200 for h in hit)


# ---- 4. --verify -------------------------------------------------------------------------------
def test_verify_reembeds_a_file_changed_with_same_size_and_mtime(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    _write_images(folder, 3)
    _build(folder, tiny_encoder, tmp_path / "p.idx", dtype="float32")
    target = folder / "img001.png"
    st = target.stat()
    data = bytearray(target.read_bytes())
    new = Image.new("RGB", (36, 44), (0, 200, 0))
    buf = io.BytesIO()
    new.save(buf, "PNG")
    payload = buf.getvalue()
    payload += b"\0" * (len(data) - len(payload))  # PNG ignores trailing bytes: same size, new picture
    assert len(payload) == len(data)
    target.write_bytes(payload)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    plain = _build(folder, tiny_encoder, tmp_path / "p.idx", dtype="float32")
    assert (plain.last_summary.added, plain.last_summary.unchanged) == (0, 3)  # size + mtime cannot tell
    verified = _build(folder, tiny_encoder, tmp_path / "p.idx", dtype="float32", verify=True)
    assert (verified.last_summary.added, verified.last_summary.unchanged) == (1, 2)
    row = dict(zip(verified.paths, verified.embeddings()))[str(target.resolve())]
    np.testing.assert_allclose(row, tiny_encoder.encode_images([new])[0], atol=1e-5)


# ---- 5. leftovers, umask, decoder workers --------------------------------------------------------
def test_leftovers_of_a_killed_run_are_removed_and_files_follow_the_umask(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    _write_images(folder, 5)
    old = os.umask(0o027)
    try:
        _build(folder, tiny_encoder, tmp_path / "p.idx")
        shards = tmp_path / "p.idx" / "shards"
        (shards / ".tmp-abc123.npy").write_bytes(b"half a shard")  # what kill -9 leaves
        (tmp_path / "p.idx" / ".tmp-xyz.faiss").write_bytes(b"half an index")
        np.save(shards / "plain-000777.npy", np.zeros((2, 16), np.float16))  # written, never committed
        _write_images(folder, 1, start=5)
        index = _build(folder, tiny_encoder, tmp_path / "p.idx")
    finally:
        os.umask(old)
    assert len(index) == 6
    names = {p.name for p in (tmp_path / "p.idx").rglob("*")}
    assert not any(n.startswith(".tmp-") for n in names) and "plain-000777.npy" not in names
    for p in (tmp_path / "p.idx").rglob("*"):
        if p.is_file():
            assert stat.S_IMODE(p.stat().st_mode) == 0o640, p


WORKERS = """import sys, time
import calibclip
from torch.utils.data import DataLoader
from calibclip.index.embed import _Collate, _DecodeDataset, _worker_init, scan
enc = calibclip.load(sys.argv[1], device="cpu")
loader = DataLoader(_DecodeDataset(scan(sys.argv[2])), batch_size=1, num_workers=2, collate_fn=_Collate(enc.preprocess, []),
                    worker_init_fn=_worker_init)
it = iter(loader)
next(it)
print(" ".join(str(w.pid) for w in it._workers), flush=True)
time.sleep(120)
"""


def test_decoder_workers_exit_with_their_parent(tmp_path, tiny_model_dir):
    _write_images(tmp_path / "photos", 20)
    p = subprocess.Popen([sys.executable, "-c", WORKERS, str(tiny_model_dir), str(tmp_path / "photos")],
                         stdout=subprocess.PIPE, env=_env(), text=True)
    pids = [int(x) for x in p.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 2.0  # without PR_SET_PDEATHSIG a worker lingers up to 5 s (its watchdog)
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)
