"""What every command shares: the consoles, one-line error handling, model and calibration options.

Only typer and rich are imported here, so `calibclip --help` stays fast; each command imports the
library modules it needs when it runs.
"""

from __future__ import annotations

import errno
import functools
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from calibclip.errors import UserError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: a UserError becomes one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            error_line(str(exc))
            raise typer.Exit(2) from None
        except (OSError, sqlite3.OperationalError) as exc:
            if not disk_full(exc):
                raise
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            error_line(f"no space left on the device{where}; free some space and run the same command again "
                       "(everything committed so far is kept).")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: everything written so far is kept; run the same command to resume.")
            raise typer.Exit(130) from None

    return wrapper


def disk_full(exc: BaseException) -> bool:
    """ENOSPC / EDQUOT from the OS, or SQLite's "database or disk is full"."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "disk is full" in str(exc)


def error_line(message: str) -> None:
    """One red ``error:`` line on stderr; the message is printed as text, never as rich markup."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def warn(message: str) -> None:
    """One yellow ``warning:`` line on stderr (message escaped: brackets in paths stay as they are)."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False)


def print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Caught Python warnings as yellow lines on stderr."""
    for w in caught:
        warn(str(w.message))


def calibration(calib: bool, calib_config: Path | None) -> Any:
    """--calib / --calib-config → CalibConfig or None."""
    if calib_config is not None:
        from calibclip.calib import CalibConfig

        if not calib_config.exists():
            raise UserError(f"--calib-config {calib_config}: no such file.")
        return CalibConfig.from_toml(calib_config)
    if calib:
        from calibclip.calib import CalibConfig

        return CalibConfig()
    return None


def load_encoder(model: str, device: str, calibration: Any = None) -> Any:
    """Load a model (HF id or local directory) with a spinner."""
    from calibclip.backends.loading import load

    with console.status(f"loading {escape(str(model))}"):
        return load(model, device=device, calibration=calibration)


def note_shipped_model(encoder: Any) -> None:
    """Every run on the shipped synthetic model says so (it silently answered "a cat" with a brick)."""
    from calibclip.backends.loading import SHIPPED_MODEL_WARNING, is_shipped_model

    if is_shipped_model(encoder):
        warn(SHIPPED_MODEL_WARNING + ".")


def default_model() -> str:
    """The shipped demo model when present, else a clear error asking for --model."""
    try:
        from calibclip.data.synth import shipped_model_dir

        return str(shipped_model_dir())
    except (ImportError, FileNotFoundError, AttributeError):
        raise UserError("no --model given; pass an HF id (e.g. openai/clip-vit-base-patch16) or a local "
                        "model directory.") from None


def print_hits(hits: list, as_json: bool, title: "str | Text") -> None:
    """Print hits as a rich table or JSON lines (path, score, rank); a str title is plain text, a Text keeps its styles."""
    if as_json:
        import json

        typer.echo(json.dumps([h.to_dict() for h in hits], indent=1))
        return
    from rich.table import Table

    table = Table(title=escape(title) if isinstance(title, str) else title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", escape(h.path))
    console.print(table)
