"""`calibclip train-phi`: LinCIR-style φ training from captions."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli import common
from calibclip.cli.common import console, escape
from calibclip.errors import UserError


def train_phi_cmd(
    model: str = typer.Option(..., "--model", "-m", help="CLIP model (HF id or local directory) φ is trained for."),
    captions: Path = typer.Option(..., "--captions", help="Text file with one caption per line."),
    out: Path = typer.Option(..., "--out", "-o", help="φ checkpoint to write (e.g. phi.pt); the resumable "
                             "training state goes beside it with .train.pt for the suffix (phi.train.pt)."),
    steps: int = typer.Option(20_000, "--steps", min=1),
    batch_size: int = typer.Option(512, "--batch-size", min=1),
    lr: float = typer.Option(1e-4, "--lr", min=0.0),
    wd: float = typer.Option(0.01, "--wd", min=0.0),
    sigma: float = typer.Option(1.0, "--sigma", min=0.0, help="Noise scale σ on the caption embedding."),
    save_every: int = typer.Option(0, "--save-every", min=0, help="Write φ and a resumable state every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT's saved training state."),
    seed: int = typer.Option(0, "--seed"),
    kind: str = typer.Option("lincir", "--kind", help="φ architecture: lincir or pic2word (searle = the lincir architecture; training is "
                                                   "always LinCIR's, so the φ fills every $)."),
    tagger: str = typer.Option("auto", "--tagger",
                               help="POS tagger of the keyword masking: auto (spaCy en_core_web_sm if installed, "
                                    "else rules), spacy, rules."),
    masking: str = typer.Option("official", "--masking",
                                help="Keyword masking: official (the official LinCIR loader exactly, incl. its "
                                     "substring replacement) or words (whole words only)."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision: off (default, float32), fp16 (CUDA, with a "
                                                 "GradScaler: the official run's), bf16. φ keeps float32 weights."),
    val: str = typer.Option(None, "--val", help="Validate on NAME:ROOT[:SPLIT] (official: cirr:/data/cirr) and keep "
                                                "the best φ (strictly higher --val-metric) as OUT stem + .best.pt."),
    val_every: int = typer.Option(1000, "--val-every", min=1, help="Validate every N steps, at step 50 and at the end (official: 1000)."),
    val_metric: str = typer.Option("R@1", "--val-metric", help="Metric that picks the best φ."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train φ the LinCIR way, from captions only (text tower frozen); --out phi.pt writes phi.pt and phi.train.pt."""
    from calibclip.cir.keywords import get_tagger
    from calibclip.cir.train_phi import PhiTrainConfig, read_captions, train_phi

    if kind.lower() not in ("lincir", "searle", "pic2word"):
        raise UserError(f"--kind {kind!r}: use lincir, searle or pic2word.")
    caps = read_captions(captions)
    cfg = PhiTrainConfig(steps=steps, batch_size=batch_size, lr=lr, wd=wd, sigma=sigma, seed=seed,
                         kind="lincir" if kind.lower() == "searle" else kind.lower(), masking=masking, amp=amp)
    tag = get_tagger(tagger)
    validate = None
    if val:
        from calibclip.eval.validate import build_phi_validator

        validate = build_phi_validator(val, model, out.parent / f".{out.stem}.val-cache")
    enc = common.load_encoder(model, device)
    console.print(f"training φ ({cfg.kind}, {enc.dim} → {enc.token_dim}) on {len(caps)} captions, "
                  f"{cfg.masking} keyword masking with the {tag.name} tagger")
    res = train_phi(enc, caps, out, cfg, save_every=save_every, resume=resume, progress=not quiet, tagger=tag,
                    validate=validate, val_every=val_every, val_metric=val_metric)
    last = f", last loss {res.losses[-1]:.4g}" if res.losses else ""
    console.print(f"[green]wrote[/green] {escape(str(res.out))} (state: {escape(str(res.state_path))}){last}")
    if res.best is not None:
        console.print(f"best {escape(res.best['metric'])} = {res.best['value']:.4f} at step {res.best['step']}: "
                      f"{escape(str(res.best_path))} (the official scripts report this one; OUT is the last step)")
