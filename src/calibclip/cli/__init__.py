"""The `calibclip` command: assembles the typer app from one module per verb group.

Each verb module imports only typer/rich and :mod:`calibclip.cli.common` at import time; the library
modules (torch, transformers, faiss …) load when a command runs, so `--help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from calibclip.cli import cir, demo, eval, explain, index, manage, reproduce, rtd, serve
from calibclip.cli.common import hide_flag_types, user_errors

hide_flag_types()
# rich_markup_mode=None: help text is plain text, so "calibclip[ray]" or "NAME:ROOT[:SPLIT]" keep their brackets
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="calibclip: search images with text (CLIP, CalibCLIP, composed retrieval, evaluation).")


def _show_version(value: bool) -> None:
    if value:
        from calibclip import __version__

        typer.echo(f"calibclip {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_show_version,
                                       help="Print the version and exit.")) -> None:
    pass


app.command("index")(user_errors(index.index_cmd))
app.command("search")(user_errors(index.search_cmd))
app.command("serve")(user_errors(serve.serve_cmd))
app.command("info")(user_errors(manage.info_cmd))
app.command("ls")(user_errors(manage.ls_cmd))
app.command("rm")(user_errors(manage.rm_cmd))
app.command("export")(user_errors(manage.export_cmd))
app.add_typer(rtd.rtd_app, name="rtd")
app.command("train-phi")(user_errors(cir.train_phi_cmd))
app.add_typer(eval.eval_app, name="eval")
app.command("explain")(user_errors(explain.explain_cmd))
app.command("reproduce")(user_errors(reproduce.reproduce_cmd))
app.command("synth")(user_errors(demo.synth_cmd))
app.command("demo")(user_errors(demo.demo_cmd))


def main() -> None:
    """Entry point of the `calibclip` console script."""
    app(prog_name="calibclip")


if __name__ == "__main__":
    sys.exit(main())
