"""Indexing threads: decode workers only where a core is spare beside the model's threads."""

from __future__ import annotations

import os

from calibclip.index import embed
from calibclip.index.embed import thread_plan


def test_thread_plan_by_cores():
    assert thread_plan(1) == (0, 1)
    assert thread_plan(2) == (0, 2)  # no worker beside torch's threads on 2 cores
    assert thread_plan(3) == (1, 2)
    assert thread_plan(8) == (2, 6)
    assert thread_plan(64) == (4, 60)
    assert thread_plan(2, num_workers=1) == (1, 1) and thread_plan(1, num_workers=3) == (3, 1)


def test_usable_cores_follow_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 5}, raising=False)
    assert embed.usable_cores() == 3 and embed.default_workers() == 1


def test_index_folder_restores_torch_threads(tmp_path, tiny_encoder, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image

    from calibclip.index import Index

    (tmp_path / "p").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), "uint8")).save(tmp_path / "p" / "a.png")
    seen = []
    real = embed.embed_into
    monkeypatch.setattr(embed, "embed_into", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    monkeypatch.setattr(embed, "usable_cores", lambda: 1)
    before = torch.get_num_threads()
    Index.build(tmp_path / "p", tiny_encoder, out=tmp_path / "p.idx", progress=False)
    assert seen == [1] and torch.get_num_threads() == before


def test_batch_preprocess_failure_is_pinned_on_its_image():
    """One processor call per batch; an image it cannot take becomes that file's failure, the rest are kept."""
    import torch

    from calibclip.index.embed import _Collate

    calls = []

    def preprocess(images):
        calls.append(len(images))
        if "bad" in images:
            raise ValueError("unsupported mode")
        return torch.stack([torch.full((3, 2, 2), float(x)) for x in images])

    batch = [(0, 1, "sha0", None), (1, None, None, "f1: corrupt"), (2, "bad", "sha2", None), (3, 4, "sha3", None)]
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    idx, pixels, sha1s, bad = _Collate(preprocess, paths)(batch)
    assert idx == [0, 3] and sha1s == ["sha0", "sha3"]
    assert pixels[:, 0, 0, 0].tolist() == [1.0, 4.0]
    assert bad[0] == (1, "f1: corrupt") and bad[1][0] == 2 and bad[1][1].startswith("c.jpg: ") and "unsupported mode" in bad[1][1]
    assert calls[0] == 3  # the whole batch in one call first
    calls.clear()
    idx, pixels, _, bad = _Collate(preprocess, paths)([(0, 1, "a", None), (1, 2, "b", None)])
    assert calls == [2] and idx == [0, 1] and bad == []
