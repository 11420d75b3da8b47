"""Every constant of RTD training in one dataclass (method: docs/methods/rtd.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class RTDConfig:
    """Hyper-parameters and switches of RTD post-hoc text-encoder fine-tuning.

    Defaults are the spec's: AdamW lr 1e-5, wd 0.01, constant lr, 2000 steps, effective batch
    512 as 4 micro-batches of 128 (each micro-batch has its own loss), σ = 0.5, τ = 0.07, seed 12345.
    """

    steps: int = 2000
    batch_size: int = 128  # triplets per micro-batch (B); the loss sees N = 2B pairs with the refined batch
    accum: int = 4  # micro-batches per optimisation step, each with its own contrastive loss
    lr: float = 1e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    tau: float = 0.07  # fixed temperature of the symmetric NT-Xent loss
    sigma: float = 0.5  # noise scale on r_i before φ: s_i = φ(r_i + σ·u_i·ε_i)
    seed: int = 12345
    prompt: str = "a photo of $ that {}"  # q_i: refined concatenation with the pseudo token
    ref_prompt: str = "a photo of $"  # q_{B+i}: the refined-batch hard negative query
    naive_prompt: str = "a photo of {} that {}"  # --naive-concat: "a photo of {T_r} that {T_c}", no φ
    naive_ref_prompt: str = "a photo of {}"  # --naive-concat with the refined batch: "a photo of {T_r}"
    anchor: bool = True  # False = --no-anchor: ψ_T^θ also encodes the targets k
    refined_batch: bool = True  # False = --no-refined-batch: only q_i / k_i
    naive_concat: bool = False  # True = --naive-concat
    amp: str = "off"  # "off" | "fp16" (CUDA, GradScaler: the official run) | "bf16"; see calibclip.cir.precision
    cond_dollar: str = "pseudo"  # a '$' in T_c: "pseudo" (official: it also takes the pseudo token) | "drop"
    anchor_cache_mb: float = 2048.0  # frozen anchor features of all texts are precomputed when they fit
    cache_batch_size: int = 256  # batch size of the one-off anchor feature precomputation
    max_grad_norm: float = 0.0  # 0 = no clipping (the spec does not clip)

    def __post_init__(self) -> None:
        from calibclip.cir.precision import normalise_amp

        self.amp = normalise_amp(self.amp)  # the old bool (True/False) still works
        if self.cond_dollar not in ("pseudo", "drop"):
            from calibclip.errors import UserError

            raise UserError(f"--cond-dollar {self.cond_dollar!r}: use pseudo (official) or drop.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict (tuples become lists)."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RTDConfig":
        """Inverse of ``to_dict``; unknown keys are ignored so old checkpoints keep loading."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "betas" in kw:
            kw["betas"] = tuple(kw["betas"])
        return cls(**kw)
