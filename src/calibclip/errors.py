"""User-facing errors: raised for bad input, printed by the CLI as one line (never a traceback)."""


class UserError(Exception):
    """A problem the user can fix (bad path, missing weights, bad argument). The message says how."""


class ModelNotAvailableError(UserError):
    """The requested model weights are not on disk and cannot be downloaded."""
