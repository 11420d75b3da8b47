"""`calibclip rtd make-triplets` and `calibclip rtd train`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import typer

from calibclip.cli import common
from calibclip.cli.common import console, escape, print_warnings, user_errors
from calibclip.errors import UserError

rtd_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                      help="RTD: fine-tune the text encoder for composed retrieval on text triplets.")


@rtd_app.command("make-triplets")
@user_errors
def make_triplets_cmd(
    captions: Path = typer.Argument(..., help="Text file with one caption per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Triplet file to write (JSON lines)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the keyword/template choices."),
    per_caption: int = typer.Option(1, "--per-caption", min=1, help="Triplets to make from each caption."),
) -> None:
    """Rule-based triplets: swap a noun/adjective keyword of each caption, describe the swap."""
    from calibclip.cir.rtd.triplets import make_triplets, write_triplets
    if not captions.is_file():
        raise UserError(f"CAPTIONS {captions}: no such file (one caption per line).")
    try:
        lines = captions.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"CAPTIONS {captions}: not UTF-8 text.") from None
    triplets, skipped = make_triplets(lines, seed=seed, per_caption=per_caption)
    if not triplets:
        raise UserError(f"CAPTIONS {captions}: no caption contains a keyword the generator can swap "
                        "(colours, sizes, materials, common objects/animals/people).")
    n = write_triplets(triplets, out)
    console.print(f"[green]wrote[/green] {n} triplets to {escape(str(out))} ({skipped} caption(s) without a swappable keyword)")


def _load_phi(path: Path, enc: Any) -> Any:
    """φ from a checkpoint (any supported format), checked against the encoder's sizes before it runs."""
    from calibclip.cir import load_phi
    from calibclip.cir.compose import check_phi

    if not path.is_file():
        raise UserError(f"--phi {path}: no such file.")
    phi = load_phi(path)
    try:
        check_phi(enc, phi)
    except UserError as exc:
        raise UserError(f"--phi {path}: {exc}") from None
    return phi.to(enc.device).eval()


@rtd_app.command("train")
@user_errors
def train_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Base CLIP model (HF id or local directory)."),
    phi: Path = typer.Option(None, "--phi", help="φ checkpoint of the base method (frozen), or `synth` for the one "
                             "shipped with the synthetic CLIP."),
    triplets: Path = typer.Option(..., "--triplets", help="Triplet file (JSON lines)."),
    out: Path = typer.Option(..., "--out", "-o", help="Trained text tower to write (e.g. rtd_text.pt)."),
    steps: int = typer.Option(2000, "--steps", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=2, help="Triplets per micro-batch."),
    accum: int = typer.Option(4, "--accum", min=1, help="Micro-batches per step, each with its own loss."),
    lr: float = typer.Option(1e-5, "--lr", min=0.0),
    wd: float = typer.Option(0.01, "--wd", min=0.0),
    sigma: float = typer.Option(0.5, "--sigma", min=0.0, help="Noise scale on r before φ."),
    seed: int = typer.Option(12345, "--seed"),
    save_every: int = typer.Option(0, "--save-every", min=0, help="Save a resumable state every N steps."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT's saved training state."),
    val: str = typer.Option(None, "--val", help="Validate on NAME:ROOT[:SPLIT] (e.g. cirr:/data/cirr)."),
    val_every: int = typer.Option(100, "--val-every", min=1,
                                  help="Validate every N steps, at step 50 and at the end (official: 100)."),
    val_metric: str = typer.Option("R@1", "--val-metric", help="Metric that picks the best checkpoint."),
    amp: str = typer.Option("off", "--amp", help="Mixed precision: off (default, float32), fp16 (CUDA, with a "
                                                 "GradScaler: the official run's), bf16. The trained tower keeps "
                                                 "float32 weights."),
    cond_dollar: str = typer.Option("pseudo", "--cond-dollar",
                                    help="A '$' inside the conditioning text: pseudo (official: it also takes "
                                         "the pseudo token) or drop (deleted)."),
    no_anchor: bool = typer.Option(False, "--no-anchor", help="Ablation: the trained tower also encodes targets."),
    no_refined_batch: bool = typer.Option(False, "--no-refined-batch", help="Ablation: only q_i/k_i pairs."),
    naive_concat: bool = typer.Option(False, "--naive-concat",
                                      help="Ablation: 'a photo of {T_r} that {T_c}' as text, no φ."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Fine-tune the text encoder with RTD (AdamW, constant lr); --out rtd.pt writes rtd.pt, rtd.train.pt and
    rtd.loss.png (and rtd.best.pt with --val)."""
    from calibclip.cir.rtd.config import RTDConfig
    from calibclip.cir.rtd.train import train_rtd
    from calibclip.cir.rtd.triplets import read_triplets
    from calibclip.eval.validate import build_validator
    if phi is None and not naive_concat:
        raise UserError("--phi is required (the base method's φ checkpoint), or use --naive-concat.")
    phi = common.shipped_or_path(phi, "--phi")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = read_triplets(triplets)
    print_warnings(caught)
    cfg = RTDConfig(steps=steps, batch_size=batch_size, accum=accum, lr=lr, weight_decay=wd, sigma=sigma,
                    seed=seed, amp=amp, cond_dollar=cond_dollar, anchor=not no_anchor, refined_batch=not no_refined_batch,
                    naive_concat=naive_concat)
    validate = None
    if val:
        cache = out.parent / f".{out.stem}.val-cache"  # gallery features: the image tower never changes
        validate = build_validator(val, phi, model, cache_dir=cache)
    enc = common.load_encoder(model, device)
    phi_mod = None if naive_concat else _load_phi(phi, enc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = train_rtd(enc, phi_mod, data, out, cfg, save_every=save_every, resume=resume, validate=validate,
                            val_every=val_every, val_metric=val_metric, progress=not quiet)
        finally:  # also on Ctrl-C: the warning says where the state was saved
            print_warnings(caught)
    last = f"{res.losses[-1]:.4f}" if res.losses else "n/a"
    console.print(f"[green]trained[/green] {escape(str(out))} ({len(res.losses)} steps, final loss {last}, "
                  f"{res.triplets_per_second:.1f} triplets/s); state {escape(str(res.state_path))}; "
                  f"curve {escape(str(res.plot_path))}")
    if res.best is not None:
        console.print(f"best {res.best['metric']} = {res.best['value']:.4f} at step {res.best['step']}: "
                      f"{escape(str(res.best_path))} (the official scripts report this one; {escape(str(out))} is the last step)")


@rtd_app.command("export")
@user_errors
def export_cmd(
    src: Path = typer.Argument(..., help="RTD checkpoint to read (calibclip's or official RTD's format)."),
    dst: Path = typer.Argument(..., help="File to write."),
    fmt: str = typer.Option(..., "--format", help="official ({'epoch', 'CLIPTextModelWithProjection'}, as official "
                                                   "RTD's save_text_encoder) or calibclip."),
    model: str = typer.Option(None, "--model", "-m", help="Base model (needed for --format calibclip)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Convert an RTD text-tower checkpoint between calibclip's format and the official RTD format."""
    from calibclip.cir.rtd.tower import export_rtd

    if fmt not in ("official", "calibclip"):
        raise UserError(f"--format {fmt!r}: use official or calibclip.")
    enc = common.load_encoder(model, device) if model and fmt == "calibclip" else None
    meta = export_rtd(src, dst, fmt, enc)
    console.print(f"[green]wrote[/green] {escape(str(dst))} ({fmt} format, from a {meta['source']} checkpoint, "
                  f"step {meta.get('step')})")
