"""The trainable text tower ψ_T^θ and its checkpoint: make, save, load into an encoder, export.

ψ_T^θ is a deep copy of the encoder's ``model.text_model`` with a deep copy of
``model.text_projection`` attached as its ``text_projection`` submodule, so
``enc.text_tower(..., text_model=tower)`` runs it end to end and one ``state_dict`` holds every
trained parameter (embeddings, layers, final LN, projection).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch

from calibclip.atomic import atomic_torch_save
from calibclip.cir.trainstate import leading_values, same_values
from calibclip.errors import UserError

FORMAT = "calibclip-rtd-text-tower"
VERSION = 1
_PROJ = "text_projection."
OFFICIAL_KEY = "CLIPTextModelWithProjection"  # official RTD save_text_encoder: {"epoch", class name: state dict}
_HF_TEXT = "text_model."
_STALE_BUFFERS = ("text_model.embeddings.position_ids",)  # saved by transformers < 4.31, not a parameter


def make_trainable_tower(enc: Any) -> torch.nn.Module:
    """ψ_T^θ: a trainable deep copy of the encoder's text tower including its projection, in float32
    whatever dtype the base checkpoint has (the official trainable copy is loaded in float32 too)."""
    tower = copy.deepcopy(enc.model.text_model)
    tower.text_projection = copy.deepcopy(enc.model.text_projection)
    tower.float().requires_grad_(True)
    return tower


def text_signature(enc: Any) -> dict[str, int]:
    """Shapes that a checkpoint must match to load into ``enc``."""
    tc = enc.model.config.text_config
    return {"hidden_size": tc.hidden_size, "num_hidden_layers": tc.num_hidden_layers,
            "num_attention_heads": tc.num_attention_heads, "intermediate_size": tc.intermediate_size,
            "vocab_size": tc.vocab_size, "max_position_embeddings": tc.max_position_embeddings,
            "projection_dim": enc.model.config.projection_dim}


def image_fingerprint(enc: Any) -> list[float]:
    """Leading values of the image projection: identifies the base model (the image tower RTD keeps)
    independently of its path or dtype."""
    return leading_values(enc.model.visual_projection.weight)


def rtd_checkpoint(enc: Any, tower: torch.nn.Module, config: dict[str, Any] | None = None,
                   step: int | None = None) -> dict[str, Any]:
    """The saved object: trained tower state dict (CPU, float32) plus metadata."""
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in tower.state_dict().items()}
    return {"format": FORMAT, "version": VERSION, "base_model": str(enc.name), "signature": text_signature(enc),
            "image_fingerprint": image_fingerprint(enc), "config": config or {}, "step": step,
            "state_dict": state}


def save_rtd(enc: Any, tower: torch.nn.Module, path: str | Path, config: dict[str, Any] | None = None,
             step: int | None = None) -> Path:
    """Write the trained text tower checkpoint atomically; returns the path."""
    atomic_torch_save(rtd_checkpoint(enc, tower, config, step), path)
    return Path(path)


def to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tower state dict → HF ``CLIPTextModelWithProjection`` names (``text_model.`` prefix on all but
    ``text_projection.weight``), the names official RTD's ``save_text_encoder`` writes."""
    return {(k if k.startswith(_PROJ) else _HF_TEXT + k): v for k, v in state.items()}


def from_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of ``to_official`` (a stale ``position_ids`` buffer of old transformers is dropped)."""
    return {(k[len(_HF_TEXT):] if k.startswith(_HF_TEXT) else k): v for k, v in state.items()
            if k not in _STALE_BUFFERS}


def _is_official(obj: Any) -> bool:
    sd = obj.get(OFFICIAL_KEY) if isinstance(obj, dict) else None
    return isinstance(sd, dict) and bool(sd) and all(isinstance(v, torch.Tensor) for v in sd.values())


def read_rtd(path: str | Path) -> dict[str, Any]:
    """Load and check an RTD checkpoint file (UserError when it is not one).

    Two formats: ours (``save_rtd``, with the base model's signature) and official RTD's
    ``save_text_encoder`` output ``{"epoch": global_step, "CLIPTextModelWithProjection": HF state
    dict}``, returned converted to ours with ``"source": "official"`` and no signature (it has none).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--rtd {path}: no such file; train one with `calibclip rtd train`.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise UserError(f"--rtd {path}: not a readable RTD checkpoint ({type(exc).__name__}: {exc}).") from None
    if _is_official(ckpt):
        state = {k: v.float() for k, v in from_official(ckpt[OFFICIAL_KEY]).items()}
        return {"format": FORMAT, "version": VERSION, "source": "official", "base_model": None, "signature": None,
                "image_fingerprint": None, "config": {}, "step": ckpt.get("epoch"), "state_dict": state}
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"--rtd {path}: not an RTD text-tower checkpoint (written by `calibclip rtd train`, or "
                        f"official RTD's {{'epoch', '{OFFICIAL_KEY}'}}).")
    if ckpt.get("version", 0) > VERSION:
        raise UserError(f"--rtd {path}: written by a newer calibclip (format version {ckpt['version']}); upgrade.")
    ckpt.setdefault("source", "calibclip")
    return ckpt


def export_rtd(src: str | Path, dst: str | Path, fmt: str, enc: Any = None) -> dict[str, Any]:
    """Convert an RTD checkpoint (either format) to ``fmt``: "official" (``{"epoch", OFFICIAL_KEY}``,
    float32, loadable by official RTD's ``validate.py``) or "calibclip" (needs ``enc``, the base model:
    its signature and image fingerprint are recorded after checking the weights fit). Returns the
    read checkpoint's metadata."""
    ckpt = read_rtd(src)
    if fmt == "official":
        atomic_torch_save({"epoch": int(ckpt.get("step") or 0), OFFICIAL_KEY: to_official(ckpt["state_dict"])}, dst)
    elif fmt == "calibclip":
        if enc is None:
            raise UserError("--format calibclip: give --model, the base model the tower was trained from "
                            "(its image tower is recorded so that a wrong model is refused later).")
        tower = make_trainable_tower(enc)
        try:
            tower.load_state_dict(ckpt["state_dict"], strict=True)
        except RuntimeError as exc:
            raise UserError(f"{src}: weights do not fit model '{enc.name}' ({str(exc).splitlines()[0]}).") from None
        save_rtd(enc, tower, dst, ckpt.get("config") or {}, ckpt.get("step"))
    else:
        raise UserError(f"--format {fmt!r}: use official or calibclip.")
    return {k: v for k, v in ckpt.items() if k != "state_dict"}


def load_rtd(enc: Any, ckpt_path: str | Path) -> dict[str, Any]:
    """Replace the encoder's text tower (text_model + text_projection) by the trained one, in place.

    Reads both formats of ``read_rtd``; an official file carries no base-model record, so only its
    shapes are checked (and a warning says so).

    The image tower is untouched, so gallery indexes built with the base model stay valid. Raises
    UserError when the checkpoint was trained from a different base model. Returns its metadata.
    """
    ckpt = read_rtd(ckpt_path)
    official = ckpt["source"] == "official"  # no signature: only the strict load below checks the shapes
    sig = text_signature(enc)
    if not official and ckpt.get("signature") != sig:
        diff = {k: (ckpt.get("signature", {}).get(k), v) for k, v in sig.items()
                if ckpt.get("signature", {}).get(k) != v}
        raise UserError(f"--rtd {ckpt_path}: trained for a different text tower than model '{enc.name}' "
                        f"(checkpoint vs model: {diff}); use the base model it was trained from "
                        f"('{ckpt.get('base_model')}').")
    if not official and not same_values(ckpt.get("image_fingerprint") or [], image_fingerprint(enc)):
        raise UserError(f"--rtd {ckpt_path}: trained from base model '{ckpt.get('base_model')}', whose image tower "
                        f"differs from model '{enc.name}'; use that base model (its gallery features match).")
    state = ckpt["state_dict"]
    proj = {k[len(_PROJ):]: v for k, v in state.items() if k.startswith(_PROJ)}
    text = {k: v for k, v in state.items() if not k.startswith(_PROJ)}
    try:
        enc.model.text_model.load_state_dict(text, strict=True)
        enc.model.text_projection.load_state_dict(proj, strict=True)
    except RuntimeError as exc:
        raise UserError(f"--rtd {ckpt_path}: weights do not fit model '{enc.name}' ({str(exc).splitlines()[0]}).") \
            from None
    if official:
        warnings.warn(f"RTD checkpoint {ckpt_path} is in the official format, which does not record its base "
                      f"model: make sure '{enc.name}' is the model it was trained from.", stacklevel=2)
    elif Path(str(ckpt.get("base_model", ""))).name != Path(str(enc.name)).name:
        warnings.warn(f"RTD checkpoint {ckpt_path} was trained from '{ckpt.get('base_model')}', loading into "
                      f"'{enc.name}' (same architecture and image tower).", stacklevel=2)
    enc.rtd = str(ckpt_path)
    return {k: v for k, v in ckpt.items() if k != "state_dict"}
