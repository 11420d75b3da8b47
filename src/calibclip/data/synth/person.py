"""Person-like figures for text-based person retrieval: identities, views, rendering, captions, edits.

An identity (``Person``) fixes what a description can say: clothing colours and types, hair,
shoes, hat, bag, backpack. A ``View`` fixes how one photo of that identity looks: front/back/side,
standing or walking, scale, horizontal offset and background. Several views of one identity share
its id, as in CUHK-PEDES.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

from calibclip.data.synth import vocab as V

IMAGE_SIZE = 64
BACKGROUNDS = [(150, 150, 150), (170, 195, 160), (200, 185, 155), (160, 180, 205), (120, 125, 130)]


@dataclass(frozen=True)
class Person:
    """What stays the same across photos of one identity. Accessories are a colour name or None."""

    upper: str
    sleeve: str
    lower: str
    lower_type: str
    shoes: str
    hair: str
    skin: int
    hat: str | None = None
    bag: str | None = None
    backpack: str | None = None


@dataclass(frozen=True)
class View:
    """One photo's viewpoint and pose."""

    view: str  # front | back | side
    facing: int  # +1 right, -1 left (side view)
    walking: bool
    scale: float
    dx: int
    style: int


def sample_person(rng: random.Random) -> Person:
    """A random identity; each accessory present with probability ~1/3."""
    colours = list(V.COLOURS)
    return Person(
        upper=rng.choice(colours), sleeve=rng.choice(V.SLEEVES), lower=rng.choice(colours),
        lower_type=rng.choice(V.LOWER_TYPES), shoes=rng.choice(V.SHOE_COLOURS), hair=rng.choice(list(V.HAIR)),
        skin=rng.randrange(len(V.SKIN)),
        hat=rng.choice(colours) if rng.random() < 0.35 else None,
        bag=rng.choice(colours) if rng.random() < 0.3 else None,
        backpack=rng.choice(colours) if rng.random() < 0.3 else None,
    )


def sample_view(rng: random.Random) -> View:
    return View(view=rng.choice(["front", "front", "back", "side"]), facing=rng.choice([-1, 1]),
                walking=rng.random() < 0.5, scale=rng.uniform(0.82, 1.0), dx=rng.randint(-9, 9),
                style=rng.getrandbits(32))


def _j(rgb: tuple[int, int, int], rng: random.Random, a: int = 12) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + rng.randint(-a, a))) for v in rgb)  # type: ignore[return-value]


def render_person(p: Person, v: View, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the figure: head, hair/hat, torso with arms, legs (trousers/shorts/skirt), shoes, bag/backpack."""
    rng = random.Random(v.style)
    img = Image.new("RGB", (size, size), _j(rng.choice(BACKGROUNDS), rng, 15))
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(size * 0.86), size, size], fill=_j((95, 95, 95), rng, 15))  # ground
    col = {c: _j(rgb, rng) for c, rgb in V.COLOURS.items()}
    skin = _j(V.SKIN[p.skin], rng, 8)
    h = size * 0.86 * v.scale
    cx = size / 2 + v.dx
    top = size * 0.93 - h
    side = v.view == "side"
    hr = h * 0.09
    torso_w = h * (0.17 if side else 0.30)
    t0, t1 = top + 2 * hr + h * 0.02, top + 2 * hr + h * 0.38
    feet = top + h
    leg_w = h * 0.11
    arm_w = h * 0.075

    # backpack behind the body (back view: drawn over the torso, later)
    if p.backpack and side:
        bx = cx - v.facing * (torso_w / 2 + h * 0.07)
        d.rectangle([bx - h * 0.08, t0 + h * 0.03, bx + h * 0.08, t0 + h * 0.27], fill=col[p.backpack])

    # legs
    spread = h * 0.1 if v.walking else 0.0
    hips = [cx - (0 if side else leg_w * 0.55), cx + (0 if side else leg_w * 0.55)]
    foot_x = [hips[0] - spread, hips[1] + spread]
    lower_rgb = col[p.lower]
    cover = {"trousers": 1.0, "shorts": 0.42, "skirt": 0.0}[p.lower_type]
    for hx, fx in zip(hips, foot_x):
        knee_y = t1 + (feet - t1) * cover
        kx = hx + (fx - hx) * cover
        if cover > 0:
            d.line([(hx, t1), (kx, knee_y)], fill=lower_rgb, width=max(2, round(leg_w)))
        d.line([(kx, knee_y), (fx, feet - 2)], fill=skin, width=max(2, round(leg_w * 0.85)))
        d.rectangle([fx - leg_w * 0.6 + (leg_w * 0.3 * v.facing if side else 0), feet - 3,
                     fx + leg_w * 0.6 + (leg_w * 0.3 * v.facing if side else 0), feet], fill=col[p.shoes])
    if p.lower_type == "skirt":
        sk = t1 + (feet - t1) * 0.5
        d.polygon([(cx - torso_w / 2, t1 - 1), (cx + torso_w / 2, t1 - 1), (cx + torso_w * 0.75, sk),
                   (cx - torso_w * 0.75, sk)], fill=lower_rgb)

    # arms then torso
    upper_rgb = col[p.upper]
    arm_len = h * 0.36
    arms = [cx] if side else [cx - torso_w / 2 - arm_w / 2, cx + torso_w / 2 + arm_w / 2]
    swing = h * 0.08 if v.walking else 0.0
    sleeve = 1.0 if p.sleeve == "long" else 0.4
    for i, ax in enumerate(arms):
        hand = (ax + (swing if i else -swing) * (v.facing if side else 1), t0 + arm_len)
        mid = (ax + (hand[0] - ax) * sleeve, t0 + arm_len * sleeve)
        d.line([(ax, t0 + 1), mid], fill=upper_rgb, width=max(2, round(arm_w)))
        if sleeve < 1:
            d.line([mid, hand], fill=skin, width=max(2, round(arm_w * 0.85)))
    d.rectangle([cx - torso_w / 2, t0, cx + torso_w / 2, t1], fill=upper_rgb)
    if side:  # the near arm over the torso
        d.line([(cx, t0 + 1), (cx + swing * v.facing * sleeve, t0 + arm_len * sleeve)], fill=upper_rgb,
               width=max(2, round(arm_w)))
    if p.backpack and v.view == "back":
        d.rectangle([cx - torso_w * 0.38, t0 + h * 0.03, cx + torso_w * 0.38, t1 - h * 0.04], fill=col[p.backpack])
    if p.backpack and v.view == "front":  # straps
        for sx in (cx - torso_w * 0.28, cx + torso_w * 0.28):
            d.line([(sx, t0), (sx, t0 + h * 0.2)], fill=col[p.backpack], width=max(1, round(h * 0.04)))
    if p.bag:
        bx = cx + (torso_w / 2 + h * 0.05) * (v.facing if side else 1)
        d.rectangle([bx - h * 0.07, t1 - h * 0.08, bx + h * 0.07, t1 + h * 0.08], fill=col[p.bag])
        d.line([(bx, t1 - h * 0.08), (cx, t0)], fill=col[p.bag], width=1)

    # head, hair, hat
    hy = top + hr
    d.ellipse([cx - hr, hy - hr, cx + hr, hy + hr], fill=skin)
    hair = _j(V.HAIR[p.hair], rng, 8)
    if v.view == "back":
        d.ellipse([cx - hr, hy - hr, cx + hr, hy + hr], fill=hair)
    else:
        d.chord([cx - hr, hy - hr, cx + hr, hy + hr], 180, 360, fill=hair)
    if v.view == "front":
        for ex in (cx - hr * 0.4, cx + hr * 0.4):
            d.point((ex, hy + hr * 0.2), fill=(20, 20, 20))
    if p.hat:
        d.rectangle([cx - hr * 0.9, hy - hr * 1.6, cx + hr * 0.9, hy - hr * 0.3], fill=col[p.hat])
        d.rectangle([cx - hr * 1.4, hy - hr * 0.5, cx + hr * 1.4, hy - hr * 0.2], fill=col[p.hat])
    return img


# ---- captions ---------------------------------------------------------------------------------

def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _upper(p: Person, rng: random.Random) -> str:
    return _a(f"{rng.choice(V.COLOUR_WORDS[p.upper])} {rng.choice(V.UPPER_WORDS[p.sleeve])}")


def _lower(p: Person, rng: random.Random) -> str:
    word = f"{rng.choice(V.COLOUR_WORDS[p.lower])} {rng.choice(V.LOWER_WORDS[p.lower_type])}"
    return _a(word) if p.lower_type == "skirt" else word


def _accessories(p: Person, rng: random.Random) -> list[str]:
    out = []
    if p.hat:
        out.append(rng.choice(["wearing ", "with ", "who has on "]) +
                   _a(f"{rng.choice(V.COLOUR_WORDS[p.hat])} {rng.choice(V.HAT_WORDS)}"))
    if p.bag:
        out.append(f"{rng.choice(V.CARRY_VERBS)} " + _a(f"{rng.choice(V.COLOUR_WORDS[p.bag])} {rng.choice(V.BAG_WORDS)}"))
    if p.backpack:
        out.append(f"{rng.choice(V.CARRY_VERBS)} "
                   + _a(f"{rng.choice(V.COLOUR_WORDS[p.backpack])} {rng.choice(V.BACKPACK_WORDS)}"))
    rng.shuffle(out)
    return out


def caption_person(p: Person, rng: random.Random) -> str:
    """A CUHK-PEDES-style description; template, clause order and synonyms vary."""
    subj = rng.choice(V.PERSON_SUBJECTS)
    clothes = [_upper(p, rng), _lower(p, rng)]
    if rng.random() < 0.3:
        clothes.reverse()
    extras = []
    if rng.random() < 0.5:
        extras.append(f"{p.shoes} {rng.choice(V.SHOE_WORDS)}")
    acc = _accessories(p, rng)
    t = rng.random()
    if t < 0.4:
        text = f"{subj} {rng.choice(V.WEAR_VERBS)} {', '.join(clothes[:-1] + extras)} and {clothes[-1]}"
        if acc:
            text += ", " + " and ".join(acc)
    elif t < 0.7:
        text = f"{subj} {' and '.join(acc) + ' ' if acc else ''}{rng.choice(['wearing', 'dressed in'])} " \
               f"{' and '.join(clothes)}"
        if extras:
            text += f" with {extras[0]}"
    else:
        parts = [f"{subj} has {rng.choice(V.HAIR_WORDS[p.hair])} hair",
                 f"wears {clothes[0]}", f"also {clothes[1]}"]
        parts += acc
        text = ", ".join(parts[:-1]) + " and " + parts[-1]
    return text + rng.choice([".", "", "."])


def person_captions(p: Person, rng: random.Random, k: int = 2) -> list[str]:
    out: list[str] = []
    for _ in range(k * 20):
        c = caption_person(p, rng)
        if c not in out:
            out.append(c)
        if len(out) == k:
            break
    return out


# ---- edits (composed retrieval) --------------------------------------------------------------

def edit_person(p: Person, rng: random.Random) -> tuple[Person, str]:
    """One clothing/accessory edit with its modification text."""
    colours = list(V.COLOURS)
    kinds = ["upper", "lower", "hat", "bag", "backpack"]
    kind = rng.choice(kinds)
    if kind == "upper":
        c = rng.choice([x for x in colours if x != p.upper])
        w = rng.choice(V.UPPER_WORDS[p.sleeve] + ["shirt", "top"])
        return replace(p, upper=c), rng.choice([f"change the {w} to {c}", f"make the {w} {c}",
                                                f"the {w} should be {c}", f"wearing a {c} {w} instead"])
    if kind == "lower":
        c = rng.choice([x for x in colours if x != p.lower])
        w = rng.choice(V.LOWER_WORDS[p.lower_type])
        return replace(p, lower=c), rng.choice([f"change the {w} to {c}", f"make the {w} {c}",
                                                f"with {c} {w} instead"])
    words = {"hat": V.HAT_WORDS, "bag": V.BAG_WORDS, "backpack": V.BACKPACK_WORDS}[kind]
    w = rng.choice(words)
    if getattr(p, kind) is not None:
        return replace(p, **{kind: None}), rng.choice([f"remove the {w}", f"take off the {w}", f"without the {w}",
                                                       f"no {w}"])
    c = rng.choice(colours)
    return replace(p, **{kind: c}), rng.choice([f"add {_a(c + ' ' + w)}", f"give the person {_a(c + ' ' + w)}",
                                                f"with {_a(c + ' ' + w)}"])
