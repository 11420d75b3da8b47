"""Validation during RTD training: ``--val NAME:ROOT`` → a callable enc → metrics.

The trainer only needs ``Callable[[Encoder], dict[str, float]]`` (see ``train_rtd``). The CLI
builds it from the evaluation runner in ``calibclip.eval``; this module is the single hook where
that runner is wired (integrator: adapt ``_runner`` if the runner's name/signature differs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from calibclip.errors import UserError

DATASETS = ("cirr", "fashioniq", "circo", "genecis")


def parse_val(spec: str) -> tuple[str, Path]:
    """'cirr:/data/cirr' → ('cirr', Path('/data/cirr')), with a UserError naming the option."""
    name, sep, root = spec.partition(":")
    name = name.strip().lower()
    if not sep or name not in DATASETS or not root:
        raise UserError(f"--val {spec}: expected NAME:ROOT with NAME one of {', '.join(DATASETS)} "
                        "(e.g. --val cirr:/data/cirr).")
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"--val {spec}: no such folder {path}.")
    return name, path


def _runner() -> Callable[..., dict[str, float]]:
    try:
        from calibclip.eval import evaluate_cir  # type: ignore[attr-defined]
    except ImportError:
        raise UserError("--val: validation needs the composed-retrieval evaluation runner "
                        "(calibclip.eval.evaluate_cir), which this install does not have yet; "
                        "train without --val and evaluate the checkpoint with `calibclip eval`.") from None
    return evaluate_cir


def build_validator(spec: str, phi: Any, split: str = "val") -> Callable[[Any], dict[str, float]]:
    """Validator for ``train_rtd``: evaluates the encoder (running the current tower) on NAME's split."""
    name, root = parse_val(spec)
    run = _runner()

    def validate(enc: Any) -> dict[str, float]:
        return dict(run(enc, name, root, phi=phi, split=split))

    return validate
