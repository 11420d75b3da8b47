"""A seeded synthetic world: captioned shape scenes (TIR), person figures (TBPR), edit triples (CIR).

Written in the official formats of Flickr30K (Karpathy), CUHK-PEDES and CIRR so the ordinary
benchmark readers evaluate on it; ``shipped_model_dir()`` is a small CLIP trained on it
(``scripts/train_synth_clip.py``).
"""

from __future__ import annotations

from pathlib import Path

from calibclip.atomic import atomic_write
from calibclip.data.synth.items import cir_item, tbpr_item, tir_item
from calibclip.data.synth.writers import TASK_DIRS, TASKS, generate, generate_all

ASSETS = Path(__file__).resolve().parents[2] / "assets"
SHIPPED_MODEL = ASSETS / "synth-clip"
SHIPPED_PHI = ASSETS / "synth-phi.pt"  # LinCIR φ trained for SHIPPED_MODEL (scripts/train_synth_cir.py)
SHIPPED_RTD = ASSETS / "synth-rtd.pt"  # RTD text tower for SHIPPED_MODEL + SHIPPED_PHI (same script)

# Sizes of the demo world: small enough to write in about a second.
DEMO_GALLERY = {"scenes": 120, "people": 30, "edits": 20}  # people: identities (2–4 images); edits: CIR sets of 6
DEMO_SPLITS = {"test": 300}


def shipped_model_dir() -> Path:
    """Directory of the CLIP trained on the synthetic world (HF format). FileNotFoundError if absent."""
    if not (SHIPPED_MODEL / "config.json").exists():
        raise FileNotFoundError(f"the shipped synthetic CLIP is missing at {SHIPPED_MODEL}; "
                                "run scripts/train_synth_clip.py to rebuild it.")
    return SHIPPED_MODEL


def shipped_phi_path() -> Path | None:
    """The LinCIR φ shipped for the synthetic CLIP, or None if this checkout lacks it."""
    return SHIPPED_PHI if SHIPPED_PHI.is_file() else None


def shipped_rtd_path() -> Path | None:
    """The RTD text-tower checkpoint shipped for the synthetic CLIP, or None if absent."""
    return SHIPPED_RTD if SHIPPED_RTD.is_file() else None


def make_demo_world(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write a small gallery folder plus the three test splits in official formats.

    Layout: ``gallery/scenes/*.png``, ``gallery/people/*.png``, ``gallery/edits/set_III_K.png`` (member K
    of CIR set III; member 0 is the reference of its edits) — a mixed folder to index —
    ``flickr30k/``, ``cuhk-pedes/``, ``cirr/`` (test splits only). Returns name → path.
    The gallery uses a different split key ('demo') so it does not repeat the test images.
    """
    out = Path(out_dir)
    gallery = out / "gallery"
    for d in ("scenes", "people", "edits"):
        (gallery / d).mkdir(parents=True, exist_ok=True)
    for i in range(DEMO_GALLERY["scenes"]):
        _save(tir_item(seed, "demo", i).image, gallery / "scenes" / f"scene_{i:04d}.png")
    for i in range(DEMO_GALLERY["people"]):
        for k, shot in enumerate(tbpr_item(seed, "demo", i).shots):
            _save(shot.image, gallery / "people" / f"person_{i:03d}_{k}.png")
    for i in range(DEMO_GALLERY["edits"]):
        for k, img in enumerate(cir_item(seed, "demo", i).images):
            _save(img, gallery / "edits" / f"set_{i:03d}_{k}.png")
    paths = {"gallery": gallery}
    for task in TASKS:
        generate(out / TASK_DIRS[task], task, DEMO_SPLITS, seed, progress=False)
        paths[task] = out / TASK_DIRS[task]
    return paths


def _save(img, path: Path) -> None:
    atomic_write(path, lambda fh: img.save(fh, format="PNG"))


__all__ = ["TASKS", "cir_item", "generate", "generate_all", "make_demo_world", "shipped_model_dir", "shipped_phi_path",
           "shipped_rtd_path", "tbpr_item",
           "tir_item"]
