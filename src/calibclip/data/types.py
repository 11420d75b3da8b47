"""Plain dataclasses the benchmark readers return: a gallery of images, queries and ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RetrievalSet:
    """Text → image retrieval data (TIR, TBPR, generic pairs).

    ``text_image[t]`` is the gallery index of text t's own image; for TBPR the ground truth is by
    person id (``text_pids[t]`` against ``image_pids``), so every image of that person is a positive.
    """

    name: str
    split: str
    task: str  # "tir" or "tbpr"
    image_paths: list[Path]
    image_ids: list[str]
    texts: list[str]
    text_image: list[int]
    image_pids: list[int] | None = None
    text_pids: list[int] | None = None
    files: list[Path] = field(default_factory=list)  # annotation files read (for the data fingerprint)


@dataclass
class ComposedQuery:
    """One composed query: a reference image and its modification text(s), with its ground truth.

    ``reference`` is the reference's gallery index (-1 if it is not in the gallery, e.g. FashionIQ);
    ``target`` the main target (None on test splits without labels); ``positives`` every ground-truth
    gallery index (CIRCO's ``gt_img_ids``; else ``[target]``); ``members`` CIRR's ``img_set``.
    """

    qid: str
    reference_path: Path
    reference: int
    captions: list[str]
    target: int | None = None
    positives: list[int] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    reference_box: tuple[float, float, float, float] | None = None  # GeneCIS attribute tasks: crop the instance


@dataclass
class ComposedSet:
    """Composed image retrieval data (CIRR, FashionIQ per category, CIRCO)."""

    name: str
    split: str
    image_paths: list[Path]
    image_ids: list[str]
    queries: list[ComposedQuery]
    category: str | None = None
    files: list[Path] = field(default_factory=list)
    task: str = "cir"
    boxes: list[tuple[float, float, float, float] | None] | None = None  # per image: crop box (GeneCIS), or None

    @property
    def labelled(self) -> bool:
        """True when every query has a ground truth (metrics computable, not only a submission)."""
        return bool(self.queries) and all(q.positives for q in self.queries)
