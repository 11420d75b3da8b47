"""The feature sets the index, eval and serve layers store and query: plain, or plain + calibrated.

Functions *of* an encoder (the encoder itself knows nothing of calibration): with ``cfg=None`` they
return only the plain CLIP features, with a CalibConfig also the CVE image / DCC text features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from calibclip.calib.config import CalibConfig
from calibclip.calib.cve import image_feature_set
from calibclip.calib.dcc import text_feature_set


def image_feature_sets(enc: Any, pixel_values: torch.Tensor, cfg: CalibConfig | None = None
                       ) -> dict[str, torch.Tensor]:
    """Named normalised image features for a batch: always "plain"; "cve" too when ``cfg`` is given."""
    with torch.inference_mode():
        if cfg is None:
            return {"plain": enc.image_features(pixel_values)}
        return image_feature_set(enc, pixel_values.to(enc.device), cfg)


def text_feature_sets(enc: Any, texts: Sequence[str], cfg: CalibConfig | None = None) -> dict[str, torch.Tensor]:
    """Named normalised query features: "plain", plus "dcc" (t̃) when ``cfg`` is given."""
    with torch.inference_mode():
        if cfg is None:
            return {"plain": enc.text_features(texts)}
        return text_feature_set(enc, texts, cfg)
