"""Items of the three synthetic benchmarks, each a pure function of (seed, split, index).

Every item draws from its own ``random.Random`` keyed by ``seed:task:split:index``, so item i is
the same whatever the split size, and the trainer can rebuild the training split in memory with
exactly the pixels and captions that ``generate`` writes to disk.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image

from calibclip.data.synth import person as P
from calibclip.data.synth import scene as S

TIR_CAPTIONS = 5  # Flickr30K has 5 captions per image
TBPR_CAPTIONS = 2  # CUHK-PEDES has ~2 captions per image
CIR_SET_SIZE = 6  # CIRR image sets have 6 members
CIR_PAIRS = 2  # queries per set (reference = member 0)
CIR_PERSON_SHARE = 0.3  # share of CIR sets built from people instead of shape scenes


def item_rng(seed: int, task: str, split: str, index: int) -> random.Random:
    """The item's private generator (string seeds are hashed with SHA-512: stable across runs)."""
    return random.Random(f"{seed}:{task}:{split}:{index}")


@dataclass
class TirItem:
    image: Image.Image
    captions: list[str]


@dataclass
class PersonShot:
    image: Image.Image
    captions: list[str]
    view: str


@dataclass
class TbprItem:
    person: P.Person
    shots: list[PersonShot]


@dataclass
class CirItem:
    images: list[Image.Image]  # the image set; member 0 is the reference of every pair
    captions: list[str]  # one plain description per member (used for training the model)
    pairs: list[tuple[int, int, str]]  # (reference member, target member, modification text)
    kind: str  # "scene" | "person"


def tir_item(seed: int, split: str, index: int) -> TirItem:
    """One scene image with 5 distinct captions."""
    rng = item_rng(seed, "tir", split, index)
    scene = S.sample_scene(rng)
    return TirItem(S.render_scene(scene), S.captions(scene, rng, TIR_CAPTIONS))


def tbpr_item(seed: int, split: str, index: int) -> TbprItem:
    """One identity with 2–4 shots (different view/pose/background), 2 captions each."""
    rng = item_rng(seed, "tbpr", split, index)
    person = P.sample_person(rng)
    shots = []
    for _ in range(rng.choice([2, 3, 3, 4])):
        view = P.sample_view(rng)
        shots.append(PersonShot(P.render_person(person, view), P.person_captions(person, rng, TBPR_CAPTIONS),
                                view.view))
    return TbprItem(person, shots)


def _cir_set(seed: int, split: str, index: int) -> tuple[list, list[str], list[str], str, object]:
    """The unrendered image set of a CIR item: members, edit texts, member captions, kind, renderer."""
    rng = item_rng(seed, "cir", split, index)
    if rng.random() < CIR_PERSON_SHARE:
        base, view = P.sample_person(rng), P.sample_view(rng)
        edit, render, describe = P.edit_person, (lambda p: P.render_person(p, view)), P.caption_person
        kind = "person"
    else:
        base = S.sample_scene(rng)
        edit, render, describe, kind = S.edit_scene, S.render_scene, S.caption_scene, "scene"
    members, texts = [base], []
    for _ in range(200):
        if len(members) == CIR_SET_SIZE:
            break
        new, text = edit(base, rng)
        if new not in members:
            members.append(new)
            texts.append(text)
    return members, texts, [describe(m, rng) for m in members], kind, render


def cir_item(seed: int, split: str, index: int) -> CirItem:
    """An image set: a reference and 5 distinct single-edit variants; the first CIR_PAIRS are queried."""
    members, texts, captions, kind, render = _cir_set(seed, split, index)
    pairs = [(0, k + 1, texts[k]) for k in range(CIR_PAIRS)]
    return CirItem([render(m) for m in members], captions, pairs, kind)


def cir_text_triplets(seed: int, split: str, index: int) -> list[tuple[str, str, str]]:
    """(reference caption, modification, target caption) for every edit of a CIR set, without rendering.

    The text-only triplets RTD trains on (the synthetic stand-in for the paper's LLM-written ones).
    """
    members, texts, captions, _, _ = _cir_set(seed, split, index)
    return [(captions[0], texts[k], captions[k + 1]) for k in range(len(members) - 1)]
