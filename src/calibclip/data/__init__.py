"""Readers of the official benchmark annotation formats (no downloads); ``synth/`` writes a generated world.

``read_dataset(name, root, split)`` returns a list of parts (one per FashionIQ category, else one).
"""

from __future__ import annotations

from pathlib import Path

from calibclip.data.cir import read_circo, read_cirr, read_fashioniq
from calibclip.data.common import fingerprint
from calibclip.data.genecis import read_genecis
from calibclip.data.tbpr import read_irra
from calibclip.data.tir import read_karpathy, read_pairs
from calibclip.data.types import ComposedQuery, ComposedSet, RetrievalSet
from calibclip.errors import UserError

# Dataset name → (task, default split).
DATASETS = {
    "flickr30k": ("tir", "test"), "mscoco": ("tir", "test"),
    "cuhk-pedes": ("tbpr", "test"), "icfg-pedes": ("tbpr", "test"), "rstpreid": ("tbpr", "test"),
    "cirr": ("cir", "val"), "fashioniq": ("cir", "val"), "circo": ("cir", "val"), "genecis": ("cir", "all"),
    "pairs": ("tir", "all"),
}
ALIASES = {"coco": "mscoco", "flickr": "flickr30k", "cuhk": "cuhk-pedes", "icfg": "icfg-pedes", "rstp": "rstpreid",
           "fiq": "fashioniq", "csv": "pairs", "jsonl": "pairs"}


def canonical(name: str) -> str:
    """Dataset name as the registry spells it, or a UserError listing the known ones."""
    key = name.lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}.")
    return key


def read_dataset(name: str, root: str | Path, split: str | None = None) -> list[RetrievalSet | ComposedSet]:
    """Read a benchmark by name; ``split`` None → its default (test for TIR/TBPR, val for CIR)."""
    key = canonical(name)
    split = split or DATASETS[key][1]
    if key in ("flickr30k", "mscoco"):
        return [read_karpathy(root, key, split)]
    if key in ("cuhk-pedes", "icfg-pedes", "rstpreid"):
        return [read_irra(root, key, split)]
    if key == "cirr":
        return [read_cirr(root, split)]
    if key == "fashioniq":
        return read_fashioniq(root, split)
    if key == "circo":
        return [read_circo(root, split)]
    if key == "genecis":
        return read_genecis(root, split)
    return [read_pairs(root)]


__all__ = ["ComposedQuery", "ComposedSet", "DATASETS", "RetrievalSet", "canonical", "fingerprint", "read_circo",
           "read_cirr", "read_dataset", "read_fashioniq", "read_genecis", "read_irra", "read_karpathy", "read_pairs"]
