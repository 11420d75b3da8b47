"""Published table rows of the papers as data (one TOML per paper) and the runner that reproduces them.

``load_rows()`` reads the shipped presets; ``check_inputs`` says what a row still needs under a data root
and a weights folder; ``reproduce`` runs the rows through the ordinary eval runner and compares each
metric with the published number.
"""

from __future__ import annotations

from calibclip.reproduce.presets import Row, load_rows, select_rows
from calibclip.reproduce.run import RowOutcome, check_inputs, reproduce, write_report

__all__ = ["Row", "RowOutcome", "check_inputs", "load_rows", "reproduce", "select_rows", "write_report"]
