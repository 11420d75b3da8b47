"""LinCIR's text-only training of φ (method: docs/methods/zs-cir.md), with checkpoints and exact resume.

Per step, for a batch of captions c:
    e = ψ_T(c)            frozen text tower, un-normalised
    ẽ = e + σ·u·ε         u ~ U(0,1) per caption, ε ~ N(0, I), σ = 1.0
    s = φ(ẽ)
    c′ = c with every maximal NOUN/PROPN/ADJ/DET run replaced by `$` (see calibclip.cir.keywords)
    loss = MSE(ψ_T(c′; s), e)     (every `$` of c′ takes s)
AdamW (lr 1e-4, wd 0.01), constant lr, only φ trains.

Choices where the paper is silent (also in docs/methods/zs-cir.md):
- Data order: an endless stream of per-epoch permutations seeded by (seed, epoch); step t takes the
  next B positions. Noise u, ε, the random-word fallback of the masking and φ's dropout are drawn
  from generators seeded by (seed, step), so ``resume`` reproduces an uninterrupted run exactly.
- No lr warm-up (LinCIR's script defaults to a constant schedule), no gradient clipping, no EMA.
- A masked caption whose `$` falls beyond the context is truncated like any caption (no slot, so
  that caption only adds a constant to the loss).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from calibclip.cir.keywords import MASK, Tagged, Tagger, get_tagger, mask_tagged
from calibclip.cir.phi import build_phi, save_phi
from calibclip.errors import UserError

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

    def __post_init__(self) -> None:
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


def state_path_for(out: str | Path) -> Path:
    """Resumable training state written next to the φ checkpoint: ``phi.pt`` → ``phi.train.pt``."""
    out = Path(out)
    return out.with_name(out.stem + ".train.pt")


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
    """MSE(ψ_T(c′; φ(e + σ·u·ε)), e) with e = ψ_T(c) computed without a graph."""
    ids, mask = enc.tokenize(list(captions))
    with torch.no_grad():
        e = enc.text_tower(ids.to(enc.device), mask.to(enc.device)).embeds.float()
    p = next(phi.parameters())
    noisy = e + sigma * u.to(e.device) * eps.to(e.device)
    s = phi(noisy.to(p.device, p.dtype))
    ids2, mask2 = enc.tokenize(list(masked))
    pred = enc.text_tower(ids2.to(enc.device), mask2.to(enc.device), pseudo_tokens=s).embeds
    return torch.nn.functional.mse_loss(pred.float(), e)


class MaskedCaptions:
    """c′ for caption i, tagging each caption once: the run masking is deterministic, only the
    no-keyword fallback (one random word) is drawn again at each use."""

    def __init__(self, captions: Sequence[str], tagger: Tagger) -> None:
        self.captions, self.tagger = captions, tagger
        self._cache: dict[int, str | Tagged] = {}

    def get(self, idx: Sequence[int], rng: random.Random) -> list[str]:
        todo = [i for i in dict.fromkeys(idx) if i not in self._cache]
        if todo:
            tagged = self.tagger([self.captions[i].replace(MASK.placeholder, " ") for i in todo])
            for i, t in zip(todo, tagged):
                has_run = any(pos in MASK.keyword_pos for _, pos in t)
                self._cache[i] = mask_tagged(t, rng) if has_run else t
        return [c if isinstance(c := self._cache[i], str) else mask_tagged(c, rng) for i in idx]


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


def _save(phi: torch.nn.Module, opt: torch.optim.Optimizer, out: Path, state_path: Path, step: int,
          losses: list[float], cfg: PhiTrainConfig, fp: str, tagger: str, model: str) -> None:
    from calibclip.atomic import atomic_torch_save

    save_phi(phi, out)
    atomic_torch_save({"format": STATE_FORMAT, "step": step, "phi": phi.state_dict(), "optimizer": opt.state_dict(),
                       "losses": list(losses), "config": dataclasses.asdict(cfg), "captions_sha1": fp,
                       "tagger": tagger, "model": model}, state_path)


def _load_state(state_path: Path, cfg: PhiTrainConfig, fp: str, tagger: str) -> dict[str, Any]:
    if not state_path.is_file():
        raise UserError(f"--resume: {state_path} not found (it is written every --save-every steps); "
                        "run without --resume to start over.")
    try:
        st = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UserError(f"--resume: {state_path} cannot be read ({type(exc).__name__}); "
                        "run without --resume to start over.") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT:
        raise UserError(f"--resume: {state_path} is not a train-phi state file.")
    saved = st["config"]
    diff = [f"--{k.replace('_', '-')} {saved[k]} → {v}" for k, v in dataclasses.asdict(cfg).items()
            if k not in _RESUME_FREE and saved.get(k) != v]
    if diff:
        raise UserError(f"--resume: options differ from the saved run ({'; '.join(diff)}); use the same options "
                        "or run without --resume.")
    if st["captions_sha1"] != fp:
        raise UserError("--resume: the captions differ from the saved run's; use the same file or start over.")
    if st["tagger"] != tagger:
        raise UserError(f"--resume: the saved run masked captions with the {st['tagger']} tagger, this one would "
                        f"use {tagger}; pass --tagger {st['tagger']}.")
    return st


def train_phi(enc: Any, captions: Sequence[str], out: str | Path, cfg: PhiTrainConfig = PhiTrainConfig(),
              save_every: int = 0, resume: bool = False, progress: bool = True,
              tagger: str | Tagger = "auto") -> PhiTrainResult:
    """Train φ for ``enc`` on ``captions``; writes ``out`` (φ, our format) and ``out.train.pt`` (state).

    ``save_every``: also write both every N steps (0: only at the end and on Ctrl-C). ``resume``:
    continue from the state file (same captions and options; ``cfg.steps`` may grow).
    """
    t0 = time.perf_counter()
    captions = [c.strip() for c in captions if c and c.strip()]
    if not captions:
        raise UserError("train-phi: no captions (the file is empty); give one caption per line.")
    out = Path(out)
    state_path = state_path_for(out)
    tag = get_tagger(tagger) if isinstance(tagger, str) else tagger
    fp = captions_fingerprint(captions)
    torch.manual_seed(cfg.seed)  # φ's initialisation
    phi = build_phi(cfg.kind, enc.dim, enc.token_dim).to(enc.device)
    opt = torch.optim.AdamW(phi.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
    losses: list[float] = []
    start = 0
    if resume:
        st = _load_state(state_path, cfg, fp, tag.name)
        phi.load_state_dict(st["phi"])
        opt.load_state_dict(st["optimizer"])
        start, losses = int(st["step"]), list(st["losses"])
    masked = MaskedCaptions(captions, tag)
    args = (out, state_path)
    step = start
    phi.train()
    bar = tqdm(total=cfg.steps, initial=min(start, cfg.steps), desc="train-phi", unit="step", disable=not progress)
    try:
        with frozen(enc.model):
            for step in range(start, cfg.steps):
                idx = batch_indices(len(captions), cfg.batch_size, step, cfg.seed)
                batch = [captions[i] for i in idx]
                c_masked = masked.get(idx, random.Random(_seed(cfg.seed, step, 2)))
                u, eps = step_noise(cfg.seed, step, len(batch), enc.dim)
                devices = [enc.device] if enc.device.type == "cuda" else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(_seed(cfg.seed, step, 3))  # φ's dropout
                    loss = lincir_loss(enc, phi, batch, c_masked, u, eps, cfg.sigma)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4g}")
                if save_every and (step + 1) % save_every == 0 and step + 1 < cfg.steps:
                    _save(phi, opt, *args, step + 1, losses, cfg, fp, tag.name, enc.name)
            step = max(start, cfg.steps)
    except KeyboardInterrupt:
        _save(phi, opt, *args, len(losses), losses, cfg, fp, tag.name, enc.name)  # every finished step is kept
        raise
    finally:
        bar.close()
    _save(phi, opt, *args, step, losses, cfg, fp, tag.name, enc.name)
    phi.eval()
    return PhiTrainResult(losses=losses, out=out, state_path=state_path, phi=phi, tagger=tag.name,
                          seconds=time.perf_counter() - t0)


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
