"""Read a TOML file into a dict, with one-line errors that name the file, and write a flat one
(layer 1: imports only errors)."""

from __future__ import annotations

import json
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


def flat_toml(data: dict[str, Any]) -> str:
    """``key = value`` lines of a flat dict (booleans as true/false, numbers and strings as JSON), which
    ``read_toml`` reads back."""
    return "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else json.dumps(v)}\n" for k, v in data.items())
