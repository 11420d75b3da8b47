"""HF transformers CLIP backend.

We run the towers ourselves over the HF modules (embeddings, encoder layers, LNs, projections)
instead of calling ``CLIPModel.get_*_features``, because later stages need what HF does not
expose: the hidden states entering the last block (CalibCLIP's CVE recomputes the CLS row of
that block), a pseudo token spliced into the token embeddings (composed retrieval), and keys
blocked in every layer (DCC). With none of these, the computation is the same sequence of module
calls as HF's, so the features equal ``get_image_features`` / ``get_text_features``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel

from calibclip.backends.base import Encoder, TextOutput, VisionOutput
from calibclip.tokenizer import clip_normalize


def additive_mask(attention_mask: torch.Tensor | None, key_mask: torch.Tensor | None, causal: bool,
                  length: int, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """(B, 1, T, T) additive mask: causal, padding keys and DCC-blocked keys get the dtype's minimum."""
    blocked = torch.zeros(batch, 1, length, length, dtype=torch.bool, device=device)
    if causal:
        blocked |= torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    if attention_mask is not None:
        blocked |= (attention_mask == 0)[:, None, None, :].to(device)
    if key_mask is not None:
        blocked |= key_mask.bool()[:, None, None, :].to(device)
    if not blocked.any():
        return None
    mask = torch.zeros(blocked.shape, dtype=dtype, device=device)
    return mask.masked_fill(blocked, torch.finfo(dtype).min)


class HFClipEncoder(Encoder):
    """Encoder over a ``transformers.CLIPModel`` with its tokenizer and image processor."""

    def __init__(self, model: CLIPModel, tokenizer: Any, processor: Any, name: str = "clip",
                 device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.processor = processor
        self.name = name
        self.device = torch.device(device)
        tcfg, vcfg = model.config.text_config, model.config.vision_config
        self.dim = model.config.projection_dim
        self.token_dim = tcfg.hidden_size
        self.context_length = tcfg.max_position_embeddings
        self.eot_id = tcfg.eos_token_id
        self.placeholder_id = tokenizer.convert_tokens_to_ids("$</w>")
        side = vcfg.image_size // vcfg.patch_size
        self.grid = (side, side)
        self.num_heads = vcfg.num_attention_heads
        self.calibration = None

    # ---- inputs ---------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The image processor's pixel values, bit for bit, with its rescale and normalisation done once
        for the whole batch in torch instead of per image in numpy (~7 % of indexing a small model)."""
        proc = self.processor
        if not (getattr(proc, "do_rescale", False) and getattr(proc, "do_normalize", False)):
            return proc(images=list(images), return_tensors="pt")["pixel_values"]
        raw = proc(images=list(images), do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        if raw.dtype != torch.uint8 or raw.ndim != 4:  # a processor that does more than resize and crop
            return proc(images=list(images), return_tensors="pt")["pixel_values"]
        # the processor's arithmetic: float32(float64(x) * factor), then (x - mean) / std in float32
        x = (raw.double() * proc.rescale_factor).float()
        mean = torch.from_numpy(np.asarray(proc.image_mean, np.float32)).view(1, -1, 1, 1)
        std = torch.from_numpy(np.asarray(proc.image_std, np.float32)).view(1, -1, 1, 1)
        return (x - mean) / std

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of the texts after OpenAI CLIP's cleaning (``clip_normalize``)."""
        enc = self.tokenizer([clip_normalize(t) for t in texts], padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def token_count(self, text: str) -> int:
        """Number of tokens of ``text`` with SOT/EOT, before truncation."""
        return len(self.tokenizer(clip_normalize(text), truncation=False)["input_ids"])

    # ---- towers -------------------------------------------------------------------------
    def image_tower(self, pixel_values: torch.Tensor) -> VisionOutput:
        vm = self.model.vision_model
        h = vm.pre_layrnorm(vm.embeddings(pixel_values.to(self.device, self.model.dtype)))
        layers = vm.encoder.layers
        for layer in layers[:-1]:
            h = layer(h, None)
        last_in = h
        h = layers[-1](h, None)
        embeds = self.model.visual_projection(vm.post_layernorm(h[:, 0, :]))
        return VisionOutput(embeds=embeds, last_in=last_in)

    def eot_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Position of the pooling token, with the same rule as HF's CLIPTextModel."""
        if self.eot_id == 2:  # legacy configs: EOT has the highest id
            return input_ids.to(torch.int).argmax(dim=-1)
        return (input_ids.to(torch.int) == self.eot_id).int().argmax(dim=-1)

    def text_tower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   pseudo_tokens: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                   text_model: Any = None, pseudo_slots: torch.Tensor | None = None) -> TextOutput:
        tm = text_model if text_model is not None else self.model.text_model
        projection = getattr(text_model, "text_projection", None) or self.model.text_projection
        input_ids = input_ids.to(self.device)
        tok = tm.embeddings.token_embedding(input_ids)
        if pseudo_tokens is not None:
            slot = (input_ids == self.placeholder_id) if pseudo_slots is None else pseudo_slots.to(self.device)
            slot = slot.unsqueeze(-1)
            tok = torch.where(slot, pseudo_tokens.to(tok.dtype)[:, None, :].expand_as(tok), tok)
        h = tm.embeddings(inputs_embeds=tok)
        b, t = input_ids.shape
        mask = additive_mask(attention_mask, key_mask, True, t, b, h.dtype, self.device)
        layers = tm.encoder.layers
        for layer in layers[:-1]:
            h = layer(h, mask)
        last_in = h
        h = tm.final_layer_norm(layers[-1](h, mask))
        eot = self.eot_positions(input_ids)
        pooled = h[torch.arange(b, device=h.device), eot]
        return TextOutput(embeds=projection(pooled), last_in=last_in, eot=eot)

    def last_block_attention(self, tower: str, last_in: torch.Tensor,
                             attention_mask: torch.Tensor | None = None,
                             key_mask: torch.Tensor | None = None) -> torch.Tensor:
        mod = self.model.vision_model if tower == "vision" else self.model.text_model
        layer = mod.encoder.layers[-1]
        attn = layer.self_attn
        x = layer.layer_norm1(last_in)
        b, t, _ = x.shape
        q = attn.q_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * attn.scale
        mask = additive_mask(attention_mask, key_mask, tower == "text", t, b, scores.dtype, scores.device)
        if mask is not None:
            scores = scores + mask
        return scores.softmax(dim=-1)
