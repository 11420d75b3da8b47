"""The accepted values of an evaluation row's configuration and precision, without importing torch
(``reproduce.presets`` checks preset rows with them when `calibclip reproduce list` runs)."""

MODES = ("base", "calib", "rtd")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "fp16-weights")
