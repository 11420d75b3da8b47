"""Scenes of 1–3 coloured shapes on a 3×3 grid: sampling, rendering, captions and edits.

A scene is a plain value (``Scene``): the same scene always renders to the same pixels, because
every random choice of the renderer (jitter, background) is drawn from the scene's own ``style``
seed. Captions are drawn from templates with synonyms and varying word order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from PIL import Image, ImageDraw

from calibclip.data.synth import vocab as V

IMAGE_SIZE = 64


@dataclass(frozen=True)
class Obj:
    """One shape: attributes plus its grid cell (row, col)."""

    shape: str
    colour: str
    size: str
    cell: tuple[int, int]
    texture: str = "plain"


@dataclass(frozen=True)
class Scene:
    """A set of objects in distinct cells; ``style`` seeds background and jitter."""

    objects: tuple[Obj, ...]
    style: int = 0
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def sample_obj(rng: random.Random, cell: tuple[int, int]) -> Obj:
    """A random object in ``cell``; only large objects carry a texture (small ones would not show it)."""
    size = rng.choice(V.SIZES)
    texture = rng.choice(["striped", "dotted"]) if size == "large" and rng.random() < 0.2 else "plain"
    return Obj(rng.choice(V.SHAPES), rng.choice(list(V.COLOURS)), size, cell, texture)


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """A random scene of 1–3 objects in distinct cells."""
    n = n_objects or rng.choice([1, 2, 2, 3, 3])
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n)
    return Scene(tuple(sample_obj(rng, cell) for cell in cells), style=rng.getrandbits(32))


# ---- rendering --------------------------------------------------------------------------------

def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in rgb)  # type: ignore[return-value]


def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Outline of a polygonal shape centred at (cx, cy) with half-size r; None for circles."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r * 1.15), (cx + r * 1.15, cy), (cx, cy + r * 1.15), (cx - r * 1.15, cy)]
    if shape == "cross":
        t = r * 0.4
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t),
                (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t),
                (cx - r, cy - t), (cx - t, cy - t)]
    return None


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    """Draw one filled shape (works for both RGB and L/mask images)."""
    poly = shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def _texture_fill(size: int, rgb: tuple[int, int, int], texture: str) -> Image.Image:
    """A square patch of colour ``rgb`` with stripes or dots in a contrasting shade."""
    patch = Image.new("RGB", (size, size), rgb)
    contrast = tuple(max(0, v - 110) if sum(rgb) > 300 else min(255, v + 120) for v in rgb)
    d = ImageDraw.Draw(patch)
    if texture == "striped":
        for y in range(0, size, 4):
            d.rectangle([0, y, size, y + 1], fill=contrast)
    elif texture == "dotted":
        for y in range(1, size, 4):
            for x in range(1 + (y // 4) % 2 * 2, size, 4):
                d.rectangle([x, y, x + 1, y + 1], fill=contrast)
    return patch


def render_scene(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene: grey-ish background, each object centred (with jitter) in its cell."""
    rng = random.Random(scene.style)
    g = rng.randint(105, 160)
    img = Image.new("RGB", (size, size), _jitter((g, g, g), rng, 10))
    draw = ImageDraw.Draw(img)
    cell = size / 3
    for o in scene.objects:
        rng = random.Random(scene.style * 16 + o.cell[0] * 3 + o.cell[1])  # per cell: edits keep the rest fixed
        big = o.size == "large"
        r = cell * (0.42 if big else 0.25) + rng.uniform(-0.5, 0.5)
        slack = cell / 2 - r - 0.5
        cx = cell * (o.cell[1] + 0.5) + rng.uniform(-slack, slack)
        cy = cell * (o.cell[0] + 0.5) + rng.uniform(-slack, slack)
        rgb = _jitter(V.COLOURS[o.colour], rng)
        if o.texture == "plain":
            draw_shape(draw, o.shape, cx, cy, r, rgb)
        else:
            mask = Image.new("L", (size, size), 0)
            draw_shape(ImageDraw.Draw(mask), o.shape, cx, cy, r, 255)
            img.paste(_texture_fill(size, rgb, o.texture), (0, 0), mask)
            draw = ImageDraw.Draw(img)
    return img


# ---- captions ---------------------------------------------------------------------------------

def obj_phrase(o: Obj, rng: random.Random, article: bool = True) -> str:
    """'a big striped red square' with random synonyms."""
    words = [rng.choice(V.SIZE_WORDS[o.size])]
    tex = rng.choice(V.TEXTURE_WORDS[o.texture])
    colour = rng.choice(V.COLOUR_WORDS[o.colour])
    words += [tex, colour] if rng.random() < 0.5 else [colour, tex]
    words.append(rng.choice(V.SHAPE_WORDS[o.shape]))
    text = " ".join(w for w in words if w)
    if article:
        text = ("an " if text[0] in "aeiou" else "a ") + text
    return text


def _relation(a: Obj, b: Obj, rng: random.Random) -> str:
    """Spatial relation of a with respect to b, in words."""
    dr, dc = a.cell[0] - b.cell[0], a.cell[1] - b.cell[1]
    options = []
    if dc < 0:
        options += ["to the left of", "left of"]
    if dc > 0:
        options += ["to the right of", "right of"]
    if dr < 0:
        options += ["above", "over"]
    if dr > 0:
        options += ["below", "under", "beneath"]
    return rng.choice(options)


def caption_scene(scene: Scene, rng: random.Random) -> str:
    """One caption: objects in random order, each with its place or a relation, varied templates."""
    objs = list(scene.objects)
    rng.shuffle(objs)
    style = rng.random()
    if len(objs) == 2 and style < 0.3:
        a, b = objs
        body = f"{obj_phrase(a, rng)} {_relation(a, b, rng)} {obj_phrase(b, rng)}"
    else:
        parts = []
        for o in objs:
            place = rng.choice(V.CELL_PHRASES[o.cell])
            if rng.random() < 0.5:
                parts.append(f"{obj_phrase(o, rng)} {place}")
            else:
                parts.append(f"{place} {obj_phrase(o, rng)}")
        body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + rng.choice([" and ", ", "]) + parts[-1]
    if rng.random() < 0.2:
        return f"{rng.choice(V.COUNT_WORDS[len(objs)])} {body}"
    return rng.choice(V.SCENE_PREFIXES) + body


def captions(scene: Scene, rng: random.Random, k: int) -> list[str]:
    """``k`` distinct captions (distinct unless the template space is exhausted)."""
    out: list[str] = []
    for _ in range(k * 20):
        c = caption_scene(scene, rng)
        if c not in out:
            out.append(c)
        if len(out) == k:
            break
    while len(out) < k:
        out.append(caption_scene(scene, rng))
    return out


# ---- edits (composed retrieval) --------------------------------------------------------------

def refer(scene: Scene, o: Obj, rng: random.Random) -> str:
    """Shortest unambiguous noun phrase for ``o`` in ``scene``: 'the circle', 'the red square', 'the left box'."""
    others = [x for x in scene.objects if x is not o]
    shape = rng.choice(V.SHAPE_WORDS[o.shape])
    if all(x.shape != o.shape for x in others):
        return f"the {shape}"
    if all((x.shape, x.colour) != (o.shape, o.colour) for x in others):
        return f"the {rng.choice(V.COLOUR_WORDS[o.colour])} {shape}"
    same = [x for x in others if x.shape == o.shape]
    if all(x.cell[1] != o.cell[1] for x in same):
        return f"the {V.COL_ADJ[o.cell[1]]} {shape}"
    if all(x.cell[0] != o.cell[0] for x in same):
        return f"the {V.ROW_ADJ[o.cell[0]]} {shape}"
    return f"the {shape} {rng.choice(V.CELL_PHRASES[o.cell])}"


def _swap(scene: Scene, old: Obj, new: Obj | None) -> Scene:
    objs = tuple(x for x in (new if x is old else x for x in scene.objects) if x is not None)
    return replace(scene, objects=objs)


def edit_scene(scene: Scene, rng: random.Random) -> tuple[Scene, str]:
    """Apply one random edit; return (edited scene, modification text). Same style → same background."""
    kinds = ["colour", "colour", "shape", "size"]
    if len(scene.objects) >= 2:
        kinds.append("remove")
    if len(scene.objects) <= 2:
        kinds.append("add")
    kind = rng.choice(kinds)
    o = rng.choice(scene.objects)
    ref = refer(scene, o, rng)
    if kind == "colour":
        c = rng.choice([c for c in V.COLOURS if c != o.colour])
        word = rng.choice(V.COLOUR_WORDS[c])
        text = rng.choice([f"make {ref} {word}", f"change {ref} to {word}", f"paint {ref} {word}",
                           f"{ref} should be {word}", f"turn {ref} {word}"])
        return _swap(scene, o, replace(o, colour=c)), text
    if kind == "shape":
        s = rng.choice([s for s in V.SHAPES if s != o.shape])
        word = rng.choice(V.SHAPE_WORDS[s])
        art = "an" if word[0] in "aeiou" else "a"
        text = rng.choice([f"turn {ref} into {art} {word}", f"replace {ref} with {art} {word} of the same colour",
                           f"change {ref} into {art} {word}"])
        return _swap(scene, o, replace(o, shape=s)), text
    if kind == "size":
        if o.size == "small":
            text = rng.choice([f"make {ref} {rng.choice(V.BIGGER)}", f"enlarge {ref}", f"{ref} should be bigger"])
            return _swap(scene, o, replace(o, size="large")), text
        text = rng.choice([f"make {ref} {rng.choice(V.SMALLER)}", f"shrink {ref}", f"{ref} should be smaller"])
        return _swap(scene, o, replace(o, size="small", texture="plain")), text
    if kind == "remove":
        text = rng.choice([f"remove {ref}", f"take away {ref}", f"delete {ref}", f"without {ref}"])
        return _swap(scene, o, None), text
    free = [(r, c) for r in range(3) for c in range(3) if all(x.cell != (r, c) for x in scene.objects)]
    new = sample_obj(rng, rng.choice(free))
    text = rng.choice([f"add {obj_phrase(new, rng)} {rng.choice(V.CELL_PHRASES[new.cell])}",
                       f"{rng.choice(V.CELL_PHRASES[new.cell])} add {obj_phrase(new, rng)}",
                       f"also put {obj_phrase(new, rng)} {rng.choice(V.CELL_PHRASES[new.cell])}"])
    return replace(scene, objects=scene.objects + (new,)), text
