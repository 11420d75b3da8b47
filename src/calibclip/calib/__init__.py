"""CalibCLIP: training-free calibration of dominant tokens (method: docs/methods/calibclip.md).

CVE re-weights the image tower's last-block [CLS] attention (``image_feature_set``), DCC re-encodes
the query with its general words masked (``text_feature_set``), and ``discriminative_scores``
re-ranks the top-K plain candidates with the discriminative similarity.
"""

from calibclip.calib.config import DCC_MASK_MODES, CalibConfig
from calibclip.calib.cve import (
    CVEResult,
    cls_patch_attention,
    cve_analysis,
    cve_weights,
    dominance_score,
    image_feature_set,
    local_deviation,
    neighbour_mean,
    recompute_cls,
    reweight_cls_attention,
    target_region,
    treatment_weights,
)
from calibclip.calib.dcc import (
    DCCResult,
    dcc_analysis,
    delete_tokens,
    eot_attention,
    select_general,
    text_feature_set,
    word_token_mask,
    word_vocab,
)
from calibclip.calib.features import image_feature_sets, text_feature_sets
from calibclip.calib.rerank import (calibrated_positions, discriminative_matrix, discriminative_scores, ranking_scores,
                                   rerank_candidates, top_k_desc)

__all__ = [
    "CVEResult", "CalibConfig", "DCCResult", "DCC_MASK_MODES", "calibrated_positions", "cls_patch_attention",
    "cve_analysis", "cve_weights", "dcc_analysis", "delete_tokens", "discriminative_matrix", "discriminative_scores", "ranking_scores", "dominance_score",
    "eot_attention", "image_feature_set", "image_feature_sets", "local_deviation", "neighbour_mean", "recompute_cls",
    "rerank_candidates", "reweight_cls_attention", "select_general", "target_region", "text_feature_set", "text_feature_sets",
    "top_k_desc", "treatment_weights", "word_token_mask", "word_vocab",
]
