"""Numeric precision of an evaluation run (`calibclip eval --precision`), defaulting to each benchmark's official one.

- ``fp32``: weights and compute in float32.
- ``fp16`` / ``bf16``: ``torch.autocast`` mixed precision (matmuls in half, softmax/norms in fp32), as
  CLIP_benchmark runs by default (``torch.autocast(device)``; ``--no_amp`` turns it off).
- ``fp16-weights``: every weight rounded to float16, compute in float32: what the official RTD and
  LinCIR CIR evaluation scripts do (HF model loaded with ``torch_dtype=float16``, then ``.float()``;
  an RTD text checkpoint is loaded into that fp16 model first). The rounding is undone afterwards,
  so an encoder shared with a training loop keeps its exact weights.

``auto`` (the default) picks, on CUDA, the official evaluation's precision of that benchmark
(``OFFICIAL``), and fp32 on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from calibclip.errors import UserError
from calibclip.eval.choices import PRECISIONS

# Official evaluation precision on CUDA, per benchmark (canonical dataset names).
OFFICIAL = {
    "flickr30k": "fp16",  # CLIP_benchmark: autocast on by default
    "mscoco": "fp16",
    "cirr": "fp16-weights",  # RTD / LinCIR validate.py and generate_test_submission.py
    "fashioniq": "fp16-weights",
    "circo": "fp16-weights",
    "genecis": "fp32",  # LinCIR eval_genecis builds fp32 towers
    "cuhk-pedes": "fp32",  # IRRA keeps CLIP in fp32 (its fp16 conversion is commented out)
    "icfg-pedes": "fp32",
    "rstpreid": "fp32",
}

_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(precision: str, dataset: str, device: torch.device | str) -> str:
    """The concrete precision of a run: ``auto`` → the benchmark's official one on CUDA, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}.")
    dev = torch.device(device).type
    if precision == "auto":
        return OFFICIAL.get(dataset, "fp32") if dev == "cuda" else "fp32"
    if precision == "fp16" and dev == "cpu":
        raise UserError("--precision fp16 needs a CUDA device (CPU half-precision autocast is not supported "
                        "for every op); use bf16, fp16-weights or fp32 on CPU.")
    return precision


@contextlib.contextmanager
def _rounded_to_fp16(model: torch.nn.Module) -> Iterator[None]:
    params = [p for p in model.parameters() if p.dtype == torch.float32]
    saved = [p.detach().to("cpu", copy=True) for p in params]  # host copy: no extra device memory
    try:
        with torch.no_grad():
            for p in params:
                p.copy_(p.half().float())
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s.to(p.device))


@contextlib.contextmanager
def precision_context(enc: Any, precision: str) -> Iterator[None]:
    """Run the encoder's towers in ``precision`` (a resolved value, not ``auto``) inside the block."""
    if precision == "fp32":
        yield
    elif precision == "fp16-weights":
        with _rounded_to_fp16(enc.model):
            yield
    elif precision in _AUTOCAST:
        with torch.autocast(device_type=torch.device(enc.device).type, dtype=_AUTOCAST[precision]):
            yield
    else:
        raise UserError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}.")
