"""LinCIR's text-only training of φ (method: docs/methods/zs-cir.md), with checkpoints and exact resume.

Per step, for a batch of captions c:
    e = ψ_T(c)            frozen text tower, un-normalised
    ẽ = e + σ·u·ε         u ~ U(0,1) per caption, ε ~ N(0, I), σ = 1.0
    s = φ(ẽ)
    c′ = c with its keywords replaced by `$` (see calibclip.cir.keywords; ``--masking``)
    loss = MSE(ψ_T(c′; s), e)     (every `$` of c′ takes s)
AdamW (lr 1e-4, wd 0.01), constant lr, only φ trains (float32 master weights; ``--amp``).

Text, as the official loader (navervision/lincir ``loader.py``): every caption is cleaned by
``calibclip.cir.textclean.clean_caption`` (``<PERSON>`` → person, lower-cased, ``$`` deleted, the
77-token cut); ``masking="official"`` (default) masks it exactly as the official ``CaptionDataset``
(``keywords.mask_official``: whole-string ``str.replace`` that also hits substrings, the random-word
fallback), ``masking="words"`` replaces whole keyword runs only (``keywords.mask_words``). In both,
a masked caption whose `$` does not survive the 77-token context becomes "a photo of $" (official).

Checkpoint selection (``validate``/``val_every``): like the official script, φ is validated every
``val_every`` steps and at step 50 (official: 1000, on CIRR val) and the φ with the strictly highest ``val_metric``
(R@1; ties keep the earlier step) is written to ``<out stem>.best.pt``; ``out`` is always the last φ.

Choices where the paper is silent (also in docs/methods/zs-cir.md):
- Data order: an endless stream of per-epoch permutations seeded by (seed, epoch); step t takes the
  next B positions. Noise u, ε, the random-word fallback of the masking and φ's dropout are drawn
  from generators seeded by (seed, step), so ``resume`` reproduces an uninterrupted run exactly.
- No lr warm-up (LinCIR's script defaults to a constant schedule), no gradient clipping, no EMA.
- The training state (φ, optimiser, RNG, step, losses, best-so-far, base-model identity) is one file
  written atomically; an optimiser step and its bookkeeping are never split by Ctrl-C
  (``calibclip.cir.trainstate.committed``), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from calibclip.cir.compose import eval_mode
from calibclip.cir.keywords import MASK, Tagged, Tagger, get_tagger, keyword_runs, mask_official, mask_words
from calibclip.cir.phi import build_phi, save_phi
from calibclip.cir.precision import autocast_for, normalise_amp
from calibclip.cir.textclean import clean_caption
from calibclip.cir.trainstate import (check_identity, committed, final_validation_due, model_identity, read_state,
                                      record_validation, restore, rng_state, set_rng_state, validation_due)
from calibclip.errors import UserError

MASKINGS = ("official", "words")
Validator = Callable[[Any, torch.nn.Module], dict[str, float]]

STATE_FORMAT = "calibclip-phi-train-state"
_RESUME_FREE = {"steps"}  # config fields a resumed run may change


@dataclass(frozen=True)
class PhiTrainConfig:
    """Hyper-parameters of LinCIR's φ training (defaults: the spec's)."""

    steps: int = 20_000
    batch_size: int = 512
    lr: float = 1e-4
    wd: float = 0.01
    sigma: float = 1.0
    seed: int = 0
    kind: str = "lincir"
    masking: str = "official"  # "official" (the official loader, substrings too) | "words" (whole words)
    amp: str = "off"  # "off" | "fp16" (CUDA + GradScaler, the official run) | "bf16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "amp", normalise_amp(self.amp))
        if self.masking not in MASKINGS:
            raise UserError(f"--masking {self.masking!r}: use official or words.")
        if self.steps < 1 or self.batch_size < 1:
            raise UserError("train-phi: --steps and --batch-size must be >= 1.")
        if self.lr <= 0 or self.wd < 0 or self.sigma < 0:
            raise UserError("train-phi: --lr must be > 0, --wd and --sigma >= 0.")


@dataclass
class PhiTrainResult:
    """What a training run produced."""

    losses: list[float]  # loss of every step from step 0
    out: Path
    state_path: Path
    phi: torch.nn.Module
    tagger: str
    seconds: float = 0.0
    val: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"step": t, **metrics}
    best: dict[str, Any] | None = None  # {"metric", "value", "step"}
    best_path: Path | None = None


def state_path_for(out: str | Path) -> Path:
    """Resumable training state written next to the φ checkpoint: ``phi.pt`` → ``phi.train.pt``."""
    out = Path(out)
    return out.with_name(out.stem + ".train.pt")


def best_path_for(out: str | Path) -> Path:
    """Best-by-validation φ next to the last one: ``phi.pt`` → ``phi.best.pt``."""
    out = Path(out)
    return out.with_name(out.stem + ".best.pt")


def _seed(seed: int, step: int, salt: int) -> int:
    return (seed * 1_000_003 + step * 1009 + salt) % (2 ** 63)


def batch_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    """Indices of step ``step``: positions step·B .. step·B+B−1 of per-epoch permutations of range(n)."""
    out: list[int] = []
    pos = step * batch
    while len(out) < batch:
        epoch, off = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch, 17))).tolist()
        chunk = perm[off:off + batch - len(out)]
        out += chunk
        pos += len(chunk)
    return out


def step_noise(seed: int, step: int, batch: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(u (B, 1) ~ U(0,1), ε (B, D) ~ N(0, I)) of a step, drawn on CPU from a (seed, step) generator."""
    g = torch.Generator().manual_seed(_seed(seed, step, 1))
    return torch.rand(batch, 1, generator=g), torch.randn(batch, dim, generator=g)


def lincir_loss(enc: Any, phi: torch.nn.Module, captions: Sequence[str], masked: Sequence[str],
                u: torch.Tensor, eps: torch.Tensor, sigma: float) -> torch.Tensor:
    """MSE(ψ_T(c′; φ(e + σ·u·ε)), e) with e = ψ_T(c) computed without a graph; a c′ whose `$` does not
    survive the tokenizer's truncation is "a photo of $" (``with_slot``, the official fallback)."""
    ids, mask = enc.tokenize(list(captions))
    with torch.no_grad():
        e = enc.text_tower(ids.to(enc.device), mask.to(enc.device)).embeds.float()
    p = next(phi.parameters())
    noisy = e + sigma * u.to(e.device) * eps.to(e.device)
    s = phi(noisy.to(p.device, p.dtype))
    masked = list(masked)
    ids2, mask2 = enc.tokenize(masked)
    slotted = with_slot(enc, masked, ids2)
    if slotted != masked:  # rare: tokenized again only when the fallback replaced a caption
        ids2, mask2 = enc.tokenize(slotted)
    pred = enc.text_tower(ids2.to(enc.device), mask2.to(enc.device), pseudo_tokens=s).embeds
    return torch.nn.functional.mse_loss(pred.float(), e)


class MaskedCaptions:
    """c′ for caption i (captions already cleaned), tagging each caption once; only the random-word
    fallback is drawn again at each use, from the step's ``rng``."""

    def __init__(self, captions: Sequence[str], tagger: Tagger, masking: str = "official") -> None:
        self.captions, self.tagger, self.masking = captions, tagger, masking
        self._cache: dict[int, Tagged | list[str]] = {}

    def get(self, idx: Sequence[int], rng: random.Random) -> list[str]:
        todo = [i for i in dict.fromkeys(idx) if i not in self._cache]
        if todo:
            tagged = self.tagger([self.captions[i] for i in todo])
            for i, t in zip(todo, tagged):
                self._cache[i] = keyword_runs(t) if self.masking == "official" else t
        if self.masking == "official":
            return [mask_official(self.captions[i], self._cache[i], rng) for i in idx]  # type: ignore[arg-type]
        return [mask_words(self._cache[i], rng) for i in idx]  # type: ignore[arg-type]


def with_slot(enc: Any, masked: Sequence[str], ids: torch.Tensor | None = None) -> list[str]:
    """Each masked caption, or the official fallback "a photo of $" when no `$` token survives the
    tokenizer's truncation (or nothing was masked). ``ids``: the captions' tokens, when already at hand."""
    if ids is None:
        ids, _ = enc.tokenize(list(masked))
    keep = (ids == enc.placeholder_id).any(dim=1).tolist()
    return [m if k else MASK.empty_caption for m, k in zip(masked, keep)]


def captions_fingerprint(captions: Sequence[str]) -> str:
    """sha1 of the captions in order: a resumed run must see the same data."""
    h = hashlib.sha1()
    for c in captions:
        h.update(c.encode("utf-8") + b"\n")
    return h.hexdigest()


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Switch off gradients of ``module``'s parameters (the CLIP towers) and restore them afterwards."""
    was = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in was:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in was:
            p.requires_grad_(r)


def _load_state(state_path: Path, cfg: PhiTrainConfig, fp: str, tagger: str, enc: Any) -> dict[str, Any]:
    st = read_state(state_path, STATE_FORMAT, "train-phi")
    check_identity(st.get("identity"), enc, f"--resume {state_path}")  # before any weight is loaded
    saved = st.get("config") or {}
    diff = [f"--{k.replace('_', '-')} {saved.get(k)} → {v}" for k, v in dataclasses.asdict(cfg).items()
            if k not in _RESUME_FREE and saved.get(k) != v]
    if diff:
        raise UserError(f"--resume: options differ from the saved run ({'; '.join(diff)}); use the same options "
                        "or run without --resume.")
    if st.get("captions_sha1") != fp:
        raise UserError("--resume: the captions differ from the saved run's; use the same file or start over.")
    if st.get("tagger") != tagger:
        raise UserError(f"--resume: the saved run masked captions with the {st.get('tagger')} tagger, this one "
                        f"would use {tagger}; pass --tagger {st.get('tagger')}.")
    return st


def train_phi(enc: Any, captions: Sequence[str], out: str | Path, cfg: PhiTrainConfig = PhiTrainConfig(),
              save_every: int = 0, resume: bool = False, progress: bool = True,
              tagger: str | Tagger = "auto", validate: Validator | None = None, val_every: int = 0,
              val_metric: str = "R@1", val_also: Sequence[int] = (50,)) -> PhiTrainResult:
    """Train φ for ``enc`` on ``captions``; writes ``out`` (φ, our format) and ``out.train.pt`` (state).

    ``save_every``: also write both every N steps (0: only at the end and on Ctrl-C). ``resume``:
    continue from the state file (same model, captions and options; ``cfg.steps`` may grow).
    ``validate(enc, phi) -> metrics`` every ``val_every`` steps, at the steps in ``val_also`` and at the
    end (official: every 1000 steps and at step 50) keeps the φ with the strictly highest
    ``val_metric`` at ``<out stem>.best.pt``.
    """
    t0 = time.perf_counter()
    captions = [c.strip() for c in captions if c and c.strip()]
    if not captions:
        raise UserError("train-phi: no captions (the file is empty); give one caption per line.")
    out = Path(out)
    state_path, best_path = state_path_for(out), best_path_for(out)
    tag = get_tagger(tagger) if isinstance(tagger, str) else tagger
    fp = captions_fingerprint(captions)
    autocast, scaler = autocast_for(enc.device, cfg.amp)
    identity = model_identity(enc)
    torch.manual_seed(cfg.seed)  # φ's initialisation
    phi = build_phi(cfg.kind, enc.dim, enc.token_dim).float().to(enc.device)  # float32 master weights
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    res = PhiTrainResult(losses=[], out=out, state_path=state_path, phi=phi, tagger=tag.name)
    start = 0
    if resume:
        st = _load_state(state_path, cfg, fp, tag.name, enc)
        restore(st, {"phi": phi, "optimizer": opt, "scaler": scaler},
                f"--resume: {state_path} does not fit this φ ({{}}); delete it or run without --resume.")
        set_rng_state(st.get("rng"))
        start, res.losses = int(st["step"]), list(st["losses"])
        res.val, res.best = list(st.get("val") or []), st.get("best")
        res.best_path = best_path if res.best is not None and best_path.exists() else None

    def save(step: int) -> None:
        save_phi(phi, out)
        from calibclip.atomic import atomic_torch_save

        atomic_torch_save({"format": STATE_FORMAT, "step": step, "phi": phi.state_dict(),
                           "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                           "rng": rng_state(), "losses": list(res.losses), "val": res.val, "best": res.best,
                           "config": dataclasses.asdict(cfg), "captions_sha1": fp, "tagger": tag.name,
                           "model": enc.name, "identity": identity}, state_path)

    def run_validation(step: int) -> None:
        with eval_mode(phi), torch.no_grad():
            metrics = {k: float(v) for k, v in validate(enc, phi).items()}  # type: ignore[misc]
        record_validation(res, step, metrics, val_metric, lambda: save_phi(phi, best_path))

    clean = [clean_caption(c, enc.tokenizer) for c in captions]  # the official loader's text
    masked = MaskedCaptions(clean, tag, cfg.masking)
    phi.train()
    bar = tqdm(total=cfg.steps, initial=min(start, cfg.steps), desc="train-phi", unit="step", disable=not progress)
    try:
        with frozen(enc.model):
            for step in range(start, cfg.steps):
                idx = batch_indices(len(clean), cfg.batch_size, step, cfg.seed)
                batch = [clean[i] for i in idx]
                c_masked = masked.get(idx, random.Random(_seed(cfg.seed, step, 2)))  # lincir_loss adds the fallback
                u, eps = step_noise(cfg.seed, step, len(batch), enc.dim)
                devices = [enc.device] if enc.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(_seed(cfg.seed, step, 3))  # φ's dropout
                    with autocast():
                        loss = lincir_loss(enc, phi, batch, c_masked, u, eps, cfg.sigma)
                    opt.zero_grad(set_to_none=True)
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                with committed():  # the update and its record are one: Ctrl-C waits for both
                    if scaler is not None:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    res.losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{res.losses[-1]:.4g}")
                done = step + 1
                if validate is not None and validation_due(done, val_every, val_also):
                    run_validation(done)
                if save_every and done % save_every == 0 and done < cfg.steps:
                    save(done)
    except KeyboardInterrupt:
        save(len(res.losses))  # weights, optimiser and step agree (committed): every finished step is kept
        raise
    finally:
        bar.close()
    if validate is not None and final_validation_due(res.val, len(res.losses)):
        run_validation(len(res.losses))
    save(len(res.losses))
    phi.eval()
    res.seconds = time.perf_counter() - t0
    return res



def read_captions(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (one caption per line)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--captions {path}: no such file (one caption per line).")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--captions {path}: not UTF-8 text.") from None
    caps = [ln.strip() for ln in lines if ln.strip()]
    if not caps:
        raise UserError(f"--captions {path}: no captions in the file; give one caption per line.")
    return caps
