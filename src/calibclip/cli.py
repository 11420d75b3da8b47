"""Command-line interface: a thin typer layer over the library modules."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from calibclip.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="calibclip: search images with text (CLIP, CalibCLIP, composed retrieval, evaluation).")
console = Console()
err_console = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: a UserError becomes one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: everything written so far is kept; run the same command to resume.")
            raise typer.Exit(130) from None

    return wrapper


def main() -> None:
    """Entry point of the `calibclip` console script."""
    app(prog_name="calibclip")


if __name__ == "__main__":
    sys.exit(main())
