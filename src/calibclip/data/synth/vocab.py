"""Attribute vocabularies of the synthetic world: RGB values and the words (with synonyms) for each.

Captions draw a synonym at random for every mention, so a model has to learn that "big" and
"large" mean the same thing instead of matching strings.
"""

from __future__ import annotations

# Object / clothing colours: name → RGB. Chosen to stay distinct at 64 px under ±12 jitter.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 75, 215),
    "yellow": (240, 215, 35),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
    "black": (22, 22, 22),
}
COLOUR_WORDS: dict[str, list[str]] = {c: [c] for c in COLOURS}
COLOUR_WORDS["purple"] = ["purple", "violet"]

SHAPES = ["circle", "square", "triangle", "diamond", "cross"]
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "disc", "round shape"],
    "square": ["square", "box", "block"],
    "triangle": ["triangle"],
    "diamond": ["diamond", "rhombus"],
    "cross": ["cross", "plus sign"],
}

SIZES = ["small", "large"]
SIZE_WORDS: dict[str, list[str]] = {"small": ["small", "little", "tiny"], "large": ["large", "big", "huge"]}
BIGGER = ["bigger", "larger"]
SMALLER = ["smaller", "tinier"]

TEXTURES = ["plain", "striped", "dotted"]
TEXTURE_WORDS: dict[str, list[str]] = {"plain": [""], "striped": ["striped"], "dotted": ["dotted", "spotted"]}

# Positions are cells of a 3×3 grid: (row, col). Phrases say where the object sits in the image.
CELL_PHRASES: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the top left corner", "at the upper left", "in the top left"],
    (0, 1): ["at the top", "at the top center", "in the upper middle"],
    (0, 2): ["in the top right corner", "at the upper right", "in the top right"],
    (1, 0): ["on the left", "at the left side", "on the left side"],
    (1, 1): ["in the center", "in the middle"],
    (1, 2): ["on the right", "at the right side", "on the right side"],
    (2, 0): ["in the bottom left corner", "at the lower left", "in the bottom left"],
    (2, 1): ["at the bottom", "at the bottom center", "in the lower middle"],
    (2, 2): ["in the bottom right corner", "at the lower right", "in the bottom right"],
}
# Short adjectival forms used in referring expressions ("the left square").
COL_ADJ = {0: "left", 1: "middle", 2: "right"}
ROW_ADJ = {0: "top", 1: "middle", 2: "bottom"}

SCENE_PREFIXES = ["", "a picture of ", "an image with ", "a drawing of ", "there is ", "a grey background with ",
                  "this image shows ", "a simple scene with "]
COUNT_WORDS = {1: ["one shape:", "a single object:"], 2: ["two shapes:", "two objects:"],
               3: ["three shapes:", "three objects:"]}

# ---- people ---------------------------------------------------------------------------------
SKIN = [(240, 200, 170), (200, 150, 110), (130, 90, 60)]
HAIR: dict[str, tuple[int, int, int]] = {"black": (20, 20, 20), "brown": (110, 65, 30), "blond": (235, 205, 110)}
HAIR_WORDS = {"black": ["black", "dark"], "brown": ["brown"], "blond": ["blond", "fair"]}
SHOE_COLOURS = ["black", "white"]
LOWER_TYPES = ["trousers", "shorts", "skirt"]
SLEEVES = ["long", "short"]

PERSON_SUBJECTS = ["a person", "a pedestrian", "someone", "the person", "this pedestrian",
                   "a young person"]
UPPER_WORDS = {"long": ["jacket", "long-sleeved shirt", "sweater", "coat"],
               "short": ["t-shirt", "short-sleeved shirt", "tee", "top"]}
LOWER_WORDS = {"trousers": ["trousers", "pants", "jeans"], "shorts": ["shorts"], "skirt": ["skirt"]}
WEAR_VERBS = ["wearing", "dressed in", "who wears", "in"]
HAT_WORDS = ["hat", "cap"]
BAG_WORDS = ["bag", "handbag", "shoulder bag"]
BACKPACK_WORDS = ["backpack", "rucksack"]
CARRY_VERBS = ["carrying", "with", "holding"]
SHOE_WORDS = ["shoes", "sneakers"]
