"""Resolve a model name (HF hub id or local directory) to an Encoder, failing fast offline."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

from calibclip.errors import ModelNotAvailableError, UserError

if TYPE_CHECKING:
    from calibclip.backends.base import Encoder


def pick_device(device: str = "auto") -> str:
    """'auto' → cuda if available else cpu; anything else is passed through after a check."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a device name; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available on this machine; use --device cpu.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"numbered 0..{torch.cuda.device_count() - 1}.")
    return device


def _network_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def offline_hint(model: str) -> str:
    """The message for a model that is neither cached nor downloadable: how to fetch it elsewhere.

    Only an id of the form ORG/NAME gets a download command (``hf download``, the CLI of current
    huggingface_hub); anything else is not a hub id, so the user is asked for a local folder.
    """
    msg = f"model '{model}' is not in the local Hugging Face cache and the hub cannot be reached (offline). "
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
        name = model.split("/")[-1]
        return msg + (f"Download it on a connected machine (`hf download {model} --local-dir ./{name}`), copy "
                      f"the folder here and pass it with --model ./{name}.")
    return msg + ("Pass a local model folder (saved with CLIPModel.save_pretrained) with --model, or a hub id "
                  "of the form ORG/NAME such as openai/clip-vit-base-patch16.")


def _from_pretrained(source: str, local_only: bool) -> tuple[CLIPModel, Any, Any]:
    model = CLIPModel.from_pretrained(source, local_files_only=local_only, attn_implementation="sdpa")
    tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_only)
    processor = CLIPImageProcessorPil.from_pretrained(source, local_files_only=local_only)
    return model, tokenizer, processor


def load_hf_parts(model: str) -> tuple[CLIPModel, Any, Any]:
    """Load (CLIPModel, tokenizer, image processor) from a local dir or the HF cache/hub."""
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise UserError(f"--model {model}: the directory has no config.json; point --model at a folder "
                            "saved with CLIPModel.save_pretrained (config.json, weights, tokenizer files).")
        try:
            return _from_pretrained(str(path), local_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"--model {model}: could not load a CLIP model from this directory ({exc}).") from exc
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise UserError(f"--model {model}: no such directory.")
    try:
        return _from_pretrained(model, local_only=True)
    except (OSError, ValueError):
        pass
    if not _network_reachable():
        raise ModelNotAvailableError(offline_hint(model))
    try:
        return _from_pretrained(model, local_only=False)
    except (OSError, ValueError) as exc:
        raise ModelNotAvailableError(f"model '{model}' could not be loaded from the hub: {exc}") from exc


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAMPLES, _SAMPLE_BYTES = 16, 4096


def model_fingerprint(folder: str | Path) -> str:
    """Identity of a model folder, cheap enough to compute on every load (a few dozen KiB read).

    SHA-1 over: config.json's bytes, then for each weight file (sorted by name) its name, size,
    its safetensors header (tensor names, dtypes, shapes, offsets; the first 64 KiB of other
    formats) and 16 samples of 4 KiB at evenly spaced offsets. Two different trainings of the same
    architecture differ in every sample, so they never collide in practice; a copy of the folder
    elsewhere has the same fingerprint.
    """
    import hashlib
    import struct

    folder = Path(folder)
    h = hashlib.sha1((folder / "config.json").read_bytes())
    for f in sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if f.suffix == ".safetensors" and len(head) == 8 else 0
            h.update(head + fh.read(min(n, 1 << 24) if n else 65536 - 8))
            for i in range(_SAMPLES):
                fh.seek(max(0, (size - _SAMPLE_BYTES) * i // max(1, _SAMPLES - 1)))
                h.update(fh.read(_SAMPLE_BYTES))
    return "sha1-sampled:" + h.hexdigest()


def model_folder(model: str) -> Path | None:
    """The folder holding ``model``: a local directory (resolved), or an HF id's snapshot in the local cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached / not an id: no fingerprint, identity by name only
        return None


SHIPPED_MODEL_WARNING = ("this is the shipped synthetic demo model, trained on generated shapes and figures, not "
                         "photos: its results on real images mean nothing; pass --model with a real CLIP "
                         "(e.g. openai/clip-vit-base-patch16 or a local folder)")


def is_shipped_model(encoder: Any) -> bool:
    """Is ``encoder`` the synthetic CLIP that ships with calibclip (``calibclip.data.synth.SHIPPED_MODEL``)?"""
    from calibclip.data.synth import SHIPPED_MODEL

    if not (SHIPPED_MODEL / "config.json").exists():
        return False
    if getattr(encoder, "fingerprint", None):
        return encoder.fingerprint == model_fingerprint(SHIPPED_MODEL)
    return getattr(encoder, "source", None) == str(SHIPPED_MODEL.resolve())


def load(model: str, device: str = "auto", calibration: Any = None) -> Encoder:
    """Load an encoder by HF id (e.g. ``openai/clip-vit-base-patch16``) or local directory.

    ``calibration``: a ``calibclip.CalibConfig`` to enable CalibCLIP, or None for the plain model.
    """
    from calibclip.backends.hf_clip import HFClipEncoder

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would drown our own progress output
    hf_logging.set_verbosity_error()
    parts = load_hf_parts(str(model))
    enc = HFClipEncoder(*parts, name=str(model), device=pick_device(device))
    folder = model_folder(str(model))
    # what an index records: where the model is (absolute for a local folder) and what it is
    enc.source = str(folder) if folder is not None and Path(model).expanduser().is_dir() else str(model)
    enc.fingerprint = model_fingerprint(folder) if folder is not None else None
    if calibration is not None:
        enc.calibration = calibration
    return enc
