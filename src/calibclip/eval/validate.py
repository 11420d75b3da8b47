"""Validation during training: ``--val NAME:ROOT`` → a callable (RTD: enc → metrics; train-phi:
(enc, φ) → metrics), used to keep the best checkpoint as the official scripts do (CIRR val R@1).

The trainer only needs ``Callable[[Encoder], dict[str, float]]`` (see ``train_rtd``). The CLI
builds it over the evaluation runner (``calibclip.eval.runner.evaluate``): the encoder passed in
runs the current trained tower, queries are composed with φ exactly as at inference, and gallery
features are cached on disk (the image tower never changes during RTD, so they are encoded once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from calibclip.errors import UserError


def parse_val(spec: str) -> tuple[str, Path, str | None]:
    """'cirr:/data/cirr' or 'cirr:/data/cirr:val' → (dataset, root, split or None = its default)."""
    name, sep, rest = spec.partition(":")
    root, split = rest, None
    if rest.count(":") and not Path(rest).exists():
        root, _, split = rest.rpartition(":")
    if not sep or not root:
        raise UserError(f"--val {spec}: expected NAME:ROOT[:SPLIT], e.g. --val cirr:/data/cirr.")
    from calibclip.data import DATASETS, canonical

    try:
        key = canonical(name)
    except UserError as exc:
        raise UserError(f"--val {spec}: {exc}") from None
    if DATASETS[key][0] != "cir":
        raise UserError(f"--val {spec}: RTD validates on a composed-retrieval benchmark (cirr, fashioniq, circo).")
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"--val {spec}: no such folder {path}.")
    return key, path, split


def build_validator(spec: str, phi_path: Path | None, model: str, cache_dir: Path | None = None,
                    batch_size: int = 64, prompt: str = "a photo of $ that {}") -> Callable[[Any], dict[str, float]]:
    """Validator for ``train_rtd`` evaluating the encoder (running the current tower) on the benchmark."""
    parse_val(spec)  # a bad --val fails before training starts
    if phi_path is None:
        raise UserError("--val needs --phi: validation queries are composed with φ as at inference "
                        "(also with --naive-concat, which only changes training).")

    def validate(enc: Any) -> dict[str, float]:
        return _metrics(spec, enc, phi_path, model, cache_dir, batch_size, prompt)

    return validate


def build_phi_validator(spec: str, model: str, cache_dir: Path, batch_size: int = 64,
                        prompt: str = "a photo of $ that {}") -> Callable[[Any, Any], dict[str, float]]:
    """Validator for ``train_phi``: evaluates the current φ (written to ``cache_dir``/current-phi.pt)
    with the frozen encoder on the benchmark; gallery features are cached in ``cache_dir``."""
    parse_val(spec)  # a bad --val fails before training starts
    from calibclip.cir.phi import save_phi

    def validate(enc: Any, phi: Any) -> dict[str, float]:
        cache_dir.mkdir(parents=True, exist_ok=True)
        phi_file = save_phi(phi, cache_dir / "current-phi.pt")
        return _metrics(spec, enc, phi_file, model, cache_dir, batch_size, prompt)

    return validate


def _metrics(spec: str, enc: Any, phi: Path, model: str, cache_dir: Path | None, batch_size: int,
             prompt: str) -> dict[str, float]:
    """Evaluate ``enc`` (its current text tower) with φ on the --val benchmark, as at inference."""
    from calibclip.eval.runner import EvalSpec, evaluate

    name, root, split = parse_val(spec)
    res = evaluate(EvalSpec(dataset=name, root=root, model=model, mode="base", split=split, phi=phi, prompt=prompt,
                            batch_size=batch_size, device=str(enc.device), cache_dir=cache_dir, results_dir=None,
                            progress=False), enc=enc)
    if not res.metrics:
        raise UserError(f"--val {spec}: this split has no ground truth to validate on; use a labelled split.")
    return dict(res.metrics)
