"""Out of device memory at indexing / eval time: the batch is halved and retried with one line of notice.

The OOM is injected on CPU by making the feature function raise ``torch.cuda.OutOfMemoryError``
for batches above a size, as a GPU with too little free memory would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from calibclip.oom import Halving, is_oom


def _oom_above(limit, fn, sizes):
    def run(*args):
        x = args[1] if len(args) > 1 else args[0]  # (batch) or (encoder, batch, cfg)
        sizes.append(len(x))
        if len(x) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return fn(*args)
    return run


def test_halving_splits_until_it_fits_and_remembers():
    notes, sizes = [], []
    h = Halving("batch", notes.append)
    x = torch.arange(10.0)
    out = h(_oom_above(3, lambda t: {"a": t * 2}, sizes), x)
    assert torch.equal(out["a"], x * 2)  # same result, in order
    assert sizes == [10, 5, 2, 2, 2, 2, 2]  # 10 → 5 fail, then chunks of 2
    assert len(notes) == 2 and "retrying with 2" in notes[-1]
    sizes.clear()
    assert torch.equal(h(_oom_above(3, lambda t: t, sizes), x), x)
    assert sizes == [2] * 5 and len(notes) == 2  # the next batch starts at the size that fit: no new notice


def test_halving_reraises_other_errors_and_oom_at_one():
    h = Halving(notify=lambda _: None)
    with pytest.raises(ValueError):
        h(lambda x: (_ for _ in ()).throw(ValueError("bad")), [1, 2])
    with pytest.raises(torch.cuda.OutOfMemoryError):
        h(_oom_above(0, lambda x: x, []), np.zeros(4))
    assert is_oom(RuntimeError("CUDA error: out of memory")) and not is_oom(RuntimeError("shape mismatch"))


def test_indexing_survives_an_oom(tmp_path, tiny_encoder, monkeypatch, caplog):
    import calibclip.index.embed as embed
    from calibclip.index import Index

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.fromarray((np.random.RandomState(i).rand(20, 20, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
    ref = Index.build(folder, tiny_encoder, out=tmp_path / "a.idx", batch_size=8, num_workers=0, progress=False,
                      dtype="float32")
    sizes: list[int] = []
    monkeypatch.setattr(embed, "image_feature_sets", _oom_above(2, embed.image_feature_sets, sizes))
    idx = Index.build(folder, tiny_encoder, out=tmp_path / "b.idx", batch_size=8, num_workers=0, progress=False,
                      dtype="float32")
    assert sizes[:3] == [8, 4, 2] and max(sizes[3:]) == 2
    assert len(idx) == 8
    by_path = dict(zip(ref.paths, ref.embeddings()))
    # same model, same pixels, only the batch split differs: per-row fp32 results agree to rounding
    np.testing.assert_allclose(np.stack([by_path[p] for p in idx.paths]), idx.embeddings(), atol=1e-5)
    notices = [r.getMessage() for r in caplog.records if "out of device memory" in r.getMessage()]
    assert len(notices) == 2  # one line per halving, not one per batch


def test_eval_query_encoding_survives_an_oom(tiny_encoder, monkeypatch):
    import calibclip.eval.runner as runner

    texts = [f"a photo of a red car number {i}" for i in range(12)]
    ref = runner.encode_texts(tiny_encoder, texts, 12, progress=False)
    sizes: list[int] = []
    monkeypatch.setattr(runner, "text_feature_sets", _oom_above(3, runner.text_feature_sets, sizes))
    got = runner.encode_texts(tiny_encoder, texts, 12, progress=False)
    assert sizes[:3] == [12, 6, 3]
    np.testing.assert_allclose(got["plain"], ref["plain"], atol=1e-5)
