"""Mixed precision of the trainers (``rtd train --amp``, ``train-phi --amp``): one rule for both.

- The trained module (RTD's ψ_T^θ, LinCIR's φ) always keeps float32 master weights, whatever
  dtype the base checkpoint was saved in (both trainers call ``.float()`` on it).
- ``amp="off"`` (default): no autocast, float32 (or the base model's dtype for the frozen parts).
- ``amp="fp16"``: ``torch.autocast(float16)`` around the forward passes and a ``GradScaler``, as the
  official RTD and LinCIR runs (``accelerate --mixed_precision fp16``). CUDA only: on CPU it is
  refused with one line (float16 autocast on CPU is neither what the official run did nor fast).
- ``amp="bf16"``: ``torch.autocast(bfloat16)``, no scaler (bf16 has float32's range); works on
  CUDA (when the GPU supports bf16) and on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from calibclip.errors import UserError

AMP_MODES = ("off", "fp16", "bf16")

AutocastFactory = Callable[[], contextlib.AbstractContextManager]


def normalise_amp(amp: Any) -> str:
    """``"off"|"fp16"|"bf16"``; the old boolean ``amp`` is accepted (True → "fp16", False → "off")."""
    if isinstance(amp, bool) or amp is None:
        return "fp16" if amp else "off"
    mode = str(amp).lower()
    if mode not in AMP_MODES:
        raise UserError(f"--amp {amp!r}: use off, fp16 or bf16.")
    return mode


def autocast_for(device: torch.device | str, amp: Any) -> tuple[AutocastFactory, torch.amp.GradScaler | None]:
    """(autocast context factory, GradScaler or None) for ``amp`` on ``device``; UserError when unsupported."""
    mode = normalise_amp(amp)
    dev = torch.device(device)
    if mode == "off":
        return contextlib.nullcontext, None
    if mode == "fp16":
        if dev.type != "cuda":
            raise UserError("--amp fp16 needs a CUDA device (float16 mixed precision is GPU-only here); "
                            "use --amp bf16 or --amp off on CPU, or --device cuda.")
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")
    if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--amp bf16: this GPU does not support bfloat16; use --amp fp16.")
    if dev.type not in ("cuda", "cpu"):
        raise UserError(f"--amp bf16: not supported on device {dev.type}; use --amp off.")
    return (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)), None
