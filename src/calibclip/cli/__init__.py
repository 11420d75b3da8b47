"""The `calibclip` command: assembles the typer app from one module per verb group.

Each verb module imports only typer/rich and :mod:`calibclip.cli.common` at import time; the library
modules (torch, transformers, faiss …) load when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from calibclip.cli import cir, demo, eval, explain, index, reproduce, rtd, serve
from calibclip.cli.common import user_errors

# rich_markup_mode=None: help text is plain text, so "calibclip[ray]" or "NAME:ROOT[:SPLIT]" keep their brackets
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="calibclip: search images with text (CLIP, CalibCLIP, composed retrieval, evaluation).")

app.command("index")(user_errors(index.index_cmd))
app.command("search")(user_errors(index.search_cmd))
app.command("serve")(user_errors(serve.serve_cmd))
app.add_typer(rtd.rtd_app, name="rtd")
app.command("train-phi")(user_errors(cir.train_phi_cmd))
app.command("eval")(user_errors(eval.eval_cmd))
app.command("explain")(user_errors(explain.explain_cmd))
app.command("reproduce")(user_errors(reproduce.reproduce_cmd))
app.command("synth")(user_errors(demo.synth_cmd))
app.command("demo")(user_errors(demo.demo_cmd))


def main() -> None:
    """Entry point of the `calibclip` console script."""
    app(prog_name="calibclip")


if __name__ == "__main__":
    sys.exit(main())
