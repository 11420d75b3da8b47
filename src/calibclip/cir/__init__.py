"""Zero-shot composed image retrieval (method: docs/methods/zs-cir.md): φ projections and their checkpoint formats,
composed queries through pseudo-token injection (plain and CalibCLIP), LinCIR's text-only φ training.
RTD (§2) lives in ``calibclip.cir.rtd``.
"""

from calibclip.cir.compose import (DEFAULT_PROMPT, check_prompt, composed_feature_set, composed_text_embeds,
                                   composed_texts, cve_reference_embeds, encode_composed, fashioniq_feature_set,
                                   fashioniq_query, fashioniq_texts, pseudo_tokens, reference_embeds,
                                   symmetric_query)
from calibclip.cir.keywords import MaskConfig, RuleTagger, get_tagger, mask_keywords
from calibclip.cir.phi import (LinCIRPhi, Pic2WordPhi, PhiConfig, build_phi, load_phi, phi_from_checkpoint,
                               save_phi)
from calibclip.cir.train_phi import PhiTrainConfig, PhiTrainResult, read_captions, train_phi

__all__ = [
    "DEFAULT_PROMPT", "LinCIRPhi", "MaskConfig", "PhiConfig", "PhiTrainConfig", "PhiTrainResult", "Pic2WordPhi",
    "RuleTagger", "build_phi", "check_prompt", "composed_feature_set", "composed_text_embeds", "composed_texts",
    "cve_reference_embeds", "encode_composed", "fashioniq_feature_set", "fashioniq_query", "fashioniq_texts",
    "get_tagger", "load_phi", "mask_keywords", "phi_from_checkpoint", "pseudo_tokens", "read_captions",
    "reference_embeds", "save_phi", "symmetric_query", "train_phi",
]
