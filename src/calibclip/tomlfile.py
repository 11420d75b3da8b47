"""Read a TOML file into a dict, with one-line errors that name the file (layer 1: imports only errors)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from calibclip.errors import UserError


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed file; a missing file or invalid TOML is a UserError naming ``what`` it should be."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc}).") from None
