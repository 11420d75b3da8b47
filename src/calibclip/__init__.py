"""calibclip: text-driven image retrieval with CLIP-family models."""

from calibclip.backends.loading import load
from calibclip.calib import CalibConfig
from calibclip.errors import UserError
from calibclip.index import Hit, Index
from calibclip import cir  # noqa: F401  (calibclip.cir.load_phi after `import calibclip`)

__version__ = "0.1.0"

__all__ = ["CalibConfig", "Hit", "Index", "load", "UserError", "__version__"]
