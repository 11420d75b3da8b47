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
import typer.core
from rich.console import Console
from rich.markup import escape

from calibclip.errors import UserError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def hide_flag_types() -> None:
    """Help without ``<bool>`` after on/off flags.

    typer ≥0.25 prints every option's type in the rich help, which for a flag (it takes no value)
    is only noise; the value types of other options (``<path>``, ``<int>``) stay.
    """
    option = getattr(typer.core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if original is None or getattr(original, "_calibclip", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._calibclip = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


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


def shipped_or_path(path: Path | None, flag: str) -> Path | None:
    """``--phi synth`` / ``--rtd synth`` → the checkpoint shipped for the synthetic CLIP; a path is checked."""
    if path is None:
        return None
    if str(path) == "synth" and not path.exists():
        from calibclip.data.synth import shipped_phi_path, shipped_rtd_path

        shipped = shipped_phi_path() if flag == "--phi" else shipped_rtd_path()
        if shipped is None:
            raise UserError(f"{flag} synth: this install lacks the shipped checkpoint; pass a file.")
        return shipped
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file (or use `{flag} synth` for the shipped one).")
    return path


def print_hits(hits: list, as_json: bool, title: str, paths_only: bool = False, table: bool | None = None,
               title_markup: bool = False) -> None:
    """Print hits: JSON (path, score, rank, id), bare paths, a rich table on a terminal (or when
    ``table``), else tab-separated ``score<TAB>path`` lines that pipe cleanly into other tools.

    ``title`` is plain text unless ``title_markup`` (the caller escaped what it took from users)."""
    if as_json:
        import json

        typer.echo(json.dumps([h.to_dict() for h in hits], indent=1))
        return
    if paths_only:
        for h in hits:
            typer.echo(h.path)
        return
    if not (console.is_terminal if table is None else table):
        for h in hits:
            typer.echo(f"{h.score:.4f}\t{h.path}")
        return
    from rich.table import Table

    grid = Table(title=title if title_markup else escape(title), title_justify="left")
    grid.add_column("rank", justify="right")
    grid.add_column("score", justify="right")
    grid.add_column("path", overflow="fold")
    for h in hits:
        grid.add_row(str(h.rank), f"{h.score:.4f}", escape(h.path))
    console.print(grid)
    if not hits:
        console.print("no results", style="yellow")
