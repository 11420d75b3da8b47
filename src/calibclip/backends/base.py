"""The Encoder interface every backend implements (see docs/ARCHITECTURE.md).

High-level methods return L2-normalised float32 numpy arrays; tensor-level methods return
un-normalised torch tensors so methods (CalibCLIP, φ injection, RTD) can work on them.

The encoder is a pure encoder: calibration (``calibclip.calib.image_feature_sets``) and composition
(``calibclip.cir.encode_composed``) are functions *of* an encoder, in the layers above this one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from calibclip.tensors import l2n


@dataclass
class VisionOutput:
    """Image tower result: projected (un-normalised) embeddings and the input of the last block."""

    embeds: torch.Tensor  # (B, D)
    last_in: torch.Tensor  # (B, 1 + N, W)


@dataclass
class TextOutput:
    """Text tower result: projected (un-normalised) EOT embeddings, last-block input, EOT positions."""

    embeds: torch.Tensor  # (B, D)
    last_in: torch.Tensor  # (B, T, W)
    eot: torch.Tensor  # (B,) long


class Encoder(ABC):
    """A CLIP-style dual encoder. Subclasses implement the tensor-level methods."""

    name: str
    dim: int
    token_dim: int
    context_length: int
    placeholder_id: int
    eot_id: int
    device: torch.device
    calibration: Any = None
    source: str | None = None       # where it was loaded from: absolute folder, or HF id (set by load())
    fingerprint: str | None = None  # backends.loading.model_fingerprint of that folder, None when unknown

    # ---- tensor level -------------------------------------------------------------------
    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → pixel values (B, 3, S, S) on CPU."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts → (input_ids, attention_mask), padded to the longest, truncated to the context."""

    @abstractmethod
    def image_tower(self, pixel_values: torch.Tensor) -> VisionOutput:
        """Run the image tower."""

    @abstractmethod
    def text_tower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   pseudo_tokens: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
                   text_model: Any = None, pseudo_slots: torch.Tensor | None = None) -> TextOutput:
        """Run the text tower, optionally with pseudo tokens spliced in and keys masked.

        ``pseudo_slots`` (B, T) bool: the positions that take the row's pseudo token; default every
        placeholder (``$``) token (LinCIR/RTD/Pic2Word); SEARLE passes only the first ``$`` of a row.
        """

    @abstractmethod
    def last_block_attention(self, tower: str, last_in: torch.Tensor,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax attention probabilities (B, H, T, T) of the last block of ``tower``."""

    # ---- numpy level --------------------------------------------------------------------
    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised image features (B, D) for a batch of pixel values."""
        return l2n(self.image_tower(pixel_values.to(self.device)).embeds)

    @torch.inference_mode()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised text features (B, D) for a batch of texts."""
        ids, mask = self.tokenize(texts)
        return l2n(self.text_tower(ids.to(self.device), mask.to(self.device)).embeds)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """(n, D) float32 L2-normalised image embeddings."""
        chunks = [self.image_features(self.preprocess(images[i:i + batch_size])).cpu().numpy()
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(m, D) float32 L2-normalised text embeddings."""
        if isinstance(texts, str):
            texts = [texts]
        chunks = [self.text_features(texts[i:i + batch_size]).cpu().numpy()
                  for i in range(0, len(texts), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)
