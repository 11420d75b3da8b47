"""RTD: post-hoc fine-tuning of the CLIP text encoder for composed image retrieval (method: docs/methods/rtd.md).

Text triplets → a trainable copy ψ_T^θ of the text tower learns, against the frozen anchor ψ_T⁰
and a frozen φ, to map "a photo of $ that {T_c}" (with $ = φ(ψ_T⁰(T_r))) near ψ_T⁰(T_t). At
inference only the text tower is swapped (``load_rtd``); the image tower and indexes are reused.
"""

from calibclip.cir.rtd.config import RTDConfig
from calibclip.cir.rtd.loss import rtd_loss
from calibclip.cir.rtd.step import noise_for, queries_and_keys
from calibclip.cir.rtd.tower import export_rtd, load_rtd, make_trainable_tower, read_rtd, save_rtd
from calibclip.cir.rtd.train import TrainResult, output_paths, train_rtd
from calibclip.cir.rtd.triplets import (Triplet, TripletGenConfig, TripletWarning, make_triplets, read_triplets,
                                        scan_triplets, write_triplets)

__all__ = ["RTDConfig", "export_rtd", "TrainResult", "Triplet", "TripletGenConfig", "TripletWarning", "load_rtd",
           "make_trainable_tower", "make_triplets", "noise_for", "output_paths", "queries_and_keys", "read_rtd",
           "read_triplets", "rtd_loss", "save_rtd", "scan_triplets", "train_rtd", "write_triplets"]
