"""Semantics of the shipped synthetic CLIP: it retrieves the right scene and the right person.

Thresholds were measured on these exact galleries (seed 0, test split; see the report of
scripts/train_synth_clip.py) and set well below the measured values but far above chance.
Composed queries use the shipped LinCIR φ and RTD text tower (scripts/train_synth_cir.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import calibclip
from calibclip.cir import encode_composed, load_phi
from calibclip.cir.rtd import load_rtd
from calibclip.data.synth import cir_item, shipped_model_dir, shipped_phi_path, shipped_rtd_path, tbpr_item, tir_item

N_SCENES = 300  # TIR gallery: 300 images, 1500 captions
N_PEOPLE = 100  # TBPR gallery: 100 identities, ~300 images, ~600 captions
# Measured on these galleries: TIR R@1 0.772, R@10 1.000 (chance 0.0033 / 0.033);
# TBPR R@1 0.850, R@10 1.000 (chance 0.011 / 0.102). Asserted with margin:
TIR_MIN = {1: 0.65, 10: 0.97}
TBPR_MIN = {1: 0.70, 10: 0.95}


@pytest.fixture(scope="module")
def encoder():
    return calibclip.load(str(shipped_model_dir()), device="cpu")


def recall_at(sims: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Share of queries (rows) with a relevant gallery item (relevant[q, g]) among their top k."""
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(relevant, top, axis=1).any(axis=1).mean())


def test_shipped_model_files(encoder):
    d = shipped_model_dir()
    size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
    assert size < 20e6
    assert (d / "model.safetensors").is_file()
    assert encoder.placeholder_id == 259  # OpenAI layout: '$</w>' is the composed-query placeholder
    assert encoder.grid == (8, 8)
    ids, mask = encoder.tokenize(["remove the hat", "make the left square green"])
    # unknown pieces map to EOT (the unk token): exactly one EOT per text means every word is in the vocabulary
    assert ((ids == encoder.eot_id) & (mask == 1)).sum(1).tolist() == [1, 1]
    assert mask.sum(1).tolist() == [5, 7]  # SOT + one token per word + EOT: whole words are single tokens


def test_text_to_image_scenes(encoder):
    items = [tir_item(0, "test", i) for i in range(N_SCENES)]
    img = encoder.encode_images([it.image for it in items])
    texts = [c for it in items for c in it.captions]
    owner = np.repeat(np.arange(N_SCENES), 5)
    sims = encoder.encode_texts(texts) @ img.T
    relevant = owner[:, None] == np.arange(N_SCENES)[None, :]
    r1, r10 = recall_at(sims, relevant, 1), recall_at(sims, relevant, 10)
    chance1, chance10 = 1 / N_SCENES, 10 / N_SCENES  # 0.33 %, 3.3 %
    assert r1 >= TIR_MIN[1] and r1 > 20 * chance1, r1
    assert r10 >= TIR_MIN[10] and r10 > 10 * chance10, r10
    # a wrong caption (another scene's) scores lower than the right one for most images
    own = sims[np.arange(len(texts)), owner]
    other = sims[np.arange(len(texts)), (owner + 1) % N_SCENES]
    assert (own > other).mean() > 0.9


def test_person_queries_find_the_identity(encoder):
    shots, ids, texts, text_ids = [], [], [], []
    for pid in range(N_PEOPLE):
        for shot in tbpr_item(0, "test", pid).shots:
            shots.append(shot.image)
            ids.append(pid)
            texts += shot.captions
            text_ids += [pid] * len(shot.captions)
    ids, text_ids = np.array(ids), np.array(text_ids)
    sims = encoder.encode_texts(texts) @ encoder.encode_images(shots).T
    relevant = text_ids[:, None] == ids[None, :]
    r1, r10 = recall_at(sims, relevant, 1), recall_at(sims, relevant, 10)
    # chance of a random ranking putting one of the identity's ~3 shots in the top k
    chance10 = float(np.mean([1 - np.prod([(len(ids) - relevant[q].sum() - j) / (len(ids) - j) for j in range(10)])
                              for q in range(len(texts))]))
    assert r1 >= TBPR_MIN[1]
    assert r10 >= TBPR_MIN[10] and r10 > 3 * chance10, (r10, chance10)


N_SETS = 100  # CIR: 100 image sets of 6 (600 images), 2 queries each
# Measured (seed 0, test split): φ R@1 0.125, R@10 0.48, Rsubset@1 0.50; φ + RTD 0.445 / 0.93 / 0.77.
# Chance: R@10 10/599 = 0.017, Rsubset@1 1/5.
CIR_MIN = {"phi": (0.05, 0.35, 0.38), "rtd": (0.30, 0.80, 0.60)}


def composed_recalls(enc, phi, items) -> tuple[float, float, float]:
    """CIRR protocol on the sets: R@1, R@10 over all images (reference removed), Recall_subset@1 in the set."""
    size = len(items[0].images)
    gallery = enc.encode_images([im for it in items for im in it.images])
    ref = np.array([i * size for i, it in enumerate(items) for _ in it.pairs])
    tgt = np.array([i * size + t for i, it in enumerate(items) for _, t, _ in it.pairs])
    q = encode_composed(enc, [items[r // size].images[0] for r in ref], [t for it in items for *_, t in it.pairs], phi)
    sims = q @ gallery.T
    rows = np.arange(len(q))
    sims[rows, ref] = -np.inf
    rank = (sims > sims[rows, tgt][:, None]).sum(1)
    members = ref[:, None] + np.arange(1, size)[None, :]  # the set without its reference
    best = members[rows, np.argmax(np.take_along_axis(sims, members, 1), axis=1)]
    return float((rank < 1).mean()), float((rank < 10).mean()), float((best == tgt).mean())


def test_composed_queries_retrieve_the_target_and_rtd_helps():
    items = [cir_item(0, "test", i) for i in range(N_SETS)]
    phi = load_phi(shipped_phi_path())
    enc = calibclip.load(str(shipped_model_dir()), device="cpu")
    base = composed_recalls(enc, phi, items)
    load_rtd(enc, shipped_rtd_path())  # swaps the text tower in place
    rtd = composed_recalls(enc, phi, items)
    for got, floor in ((base, CIR_MIN["phi"]), (rtd, CIR_MIN["rtd"])):
        assert all(g >= f for g, f in zip(got, floor)), (got, floor)
    assert rtd[0] > base[0] + 0.15 and rtd[2] > base[2], (base, rtd)  # RTD's gain on this world
