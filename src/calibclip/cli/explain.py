"""`calibclip explain IMAGE "query"`: a picture of what CalibCLIP does to one image and one query."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli import common
from calibclip.cli.common import console, escape
from calibclip.errors import UserError


def explain_cmd(
    image: Path = typer.Argument(..., help="Image file to explain."),
    query: str = typer.Argument(..., help="Text query."),
    model: str = typer.Option(None, "--model", "-m", help="HF model id or local model directory "
                              "(default: the shipped demo model)."),
    out: Path = typer.Option(Path("explain.png"), "--out", "-o", help="PNG file to write."),
    calib_config: Path = typer.Option(None, "--calib-config", help="TOML file with CalibConfig fields."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Show CalibCLIP on one image and query: [CLS] attention before/after CVE and the DCC word weights."""
    from calibclip.explain import explain, plot_explanation
    from calibclip.images import BadImage, open_image

    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the picture is a PNG; give a file name ending in .png.")
    if not query.strip():
        raise UserError("QUERY is empty; give the text to explain.")
    try:
        img = open_image(image)
    except BadImage as exc:
        raise UserError(f"IMAGE: {exc}") from None
    cfg = common.calibration(True, calib_config)
    enc = common.load_encoder(model or common.default_model(), device)
    common.note_shipped_model(enc)
    ex = explain(enc, img, query, cfg)
    plot_explanation(ex, out, query)
    n_sup, n_dec = int((ex.weights == 0).sum()), int(((ex.weights > 0) & (ex.weights < 1)).sum())
    masked = [t for t, m in zip(ex.tokens, ex.masked) if m]
    console.print(f"[green]wrote[/green] {escape(str(out))}: {n_sup} suppressed, {n_dec} decayed patch tokens; "
                  f"masked words: {escape(', '.join(masked) or '(none)')}", highlight=False)
