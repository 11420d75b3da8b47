"""calibclip: text-driven image retrieval with CLIP-family models.

The top-level names load on first use (module ``__getattr__``), so ``import calibclip`` and the
command line's ``--help`` do not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load": "calibclip.backends.loading",
    "CalibConfig": "calibclip.calib.config",
    "UserError": "calibclip.errors",
    "Hit": "calibclip.index.index",
    "Index": "calibclip.index.index",
    "HFClipEncoder": "calibclip.backends.hf_clip",
}
_SUBMODULES = {"backends", "calib", "cir", "data", "eval", "index", "serve"}

__all__ = ["CalibConfig", "HFClipEncoder", "Hit", "Index", "load", "UserError", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"calibclip.{name}")
    raise AttributeError(f"module 'calibclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
