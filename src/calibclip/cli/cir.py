"""`calibclip train-phi`: LinCIR-style φ training from captions."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli import common
from calibclip.cli.common import console
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
    kind: str = typer.Option("lincir", "--kind", help="φ architecture: lincir (= searle) or pic2word."),
    tagger: str = typer.Option("auto", "--tagger",
                               help="POS tagger of the keyword masking: auto (spaCy en_core_web_sm if installed, "
                                    "else rules), spacy, rules."),
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
                         kind="lincir" if kind.lower() == "searle" else kind.lower())
    tag = get_tagger(tagger)
    enc = common.load_encoder(model, device)
    console.print(f"training φ ({cfg.kind}, {enc.dim} → {enc.token_dim}) on {len(caps)} captions, "
                  f"keyword masking with the {tag.name} tagger")
    res = train_phi(enc, caps, out, cfg, save_every=save_every, resume=resume, progress=not quiet, tagger=tag)
    last = f", last loss {res.losses[-1]:.4g}" if res.losses else ""
    console.print(f"[green]wrote[/green] {res.out} (state: {res.state_path}){last}")
