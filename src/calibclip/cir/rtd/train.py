"""RTD training loop: AdamW at constant lr, per-micro-batch losses with gradient accumulation,
optional AMP, seeded, checkpoint + exact resume, optional validation keeping the best tower.

Choices where the spec is silent (written here as the spec asks):
- Data order: an endless stream of per-epoch permutations seeded by (seed, epoch); micro-batch m
  of step t takes the next B positions. Noise u, ε is drawn per (seed, step, micro-batch). Both
  are pure functions of the step, so ``resume`` reproduces an uninterrupted run exactly.
- The frozen anchor features ψ_T⁰(T_r), ψ_T⁰(T_t) never change, so they are precomputed once
  (when they fit in ``anchor_cache_mb``) instead of re-encoded every step; same values.
- The logged loss of a step is the mean of its micro-batch losses; each micro-batch backpropagates
  loss / accum, so the update is the mean gradient of the ``accum`` separate losses.
- No lr warm-up, no gradient clipping (``max_grad_norm`` = 0) — the spec says constant lr.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from calibclip.cir.precision import autocast_for
from calibclip.cir.trainstate import (check_identity, committed, final_validation_due, model_identity, read_state,
                                      record_validation, restore, rng_state, set_rng_state, validation_due)
from calibclip.cir.rtd.config import RTDConfig
from calibclip.cir.rtd.loss import rtd_loss
from calibclip.cir.rtd.step import AnchorFn, encode_with, noise_for, queries_and_keys
from calibclip.atomic import atomic_torch_save, atomic_write
from calibclip.cir.rtd.text import clean_triplets
from calibclip.cir.rtd.tower import make_trainable_tower, save_rtd
from calibclip.cir.rtd.triplets import Triplet
from calibclip.errors import UserError

STATE_FORMAT = "calibclip-rtd-train-state"
# config fields a resumed run may change without breaking exact continuation
_RESUME_FREE = {"steps", "anchor_cache_mb", "cache_batch_size"}

Validator = Callable[[Any], dict[str, float]]


@dataclass
class TrainResult:
    """What a training run produced."""

    losses: list[float]  # mean micro-batch loss of every step from step 0
    val: list[dict[str, Any]] = field(default_factory=list)  # {"step": t, **metrics}
    out: Path | None = None
    state_path: Path | None = None
    best_path: Path | None = None
    plot_path: Path | None = None
    best: dict[str, Any] | None = None
    seconds: float = 0.0
    triplets_per_second: float = 0.0
    tower: torch.nn.Module | None = None  # the trained ψ_T^θ


def output_paths(out: str | Path) -> dict[str, Path]:
    """Files written next to ``out``: resumable training state, best-by-validation tower, loss plot."""
    out = Path(out)
    return {"out": out, "state": out.with_name(out.stem + ".train.pt"),
            "best": out.with_name(out.stem + ".best.pt"), "plot": out.with_name(out.stem + ".loss.png")}


class BatchOrder:
    """Endless stream of per-epoch permutations of ``range(n)``, seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, []

    def _perm_of(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed + 7919 * (epoch + 1))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).tolist()
        return self._perm

    def take(self, start: int, count: int) -> list[int]:
        """Positions start .. start+count-1 of the stream."""
        out: list[int] = []
        pos = start
        while len(out) < count:
            epoch, off = divmod(pos, self.n)
            chunk = self._perm_of(epoch)[off:off + count - len(out)]
            out += chunk
            pos += len(chunk)
        return out


def data_fingerprint(triplets: Sequence[Triplet]) -> str:
    """sha1 of the triplets in order: a resumed run must see the same data."""
    h = hashlib.sha1()
    for t in triplets:
        h.update(t.to_json().encode("utf-8") + b"\n")
    return h.hexdigest()


def build_anchor_cache(enc: Any, triplets: Sequence[Triplet], cfg: RTDConfig,
                       autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                       progress: bool = True) -> AnchorFn | None:
    """Precompute ψ_T⁰ of every reference (and target) text once; None when not needed or too big."""
    texts: dict[str, None] = {}
    if cfg.anchor or not cfg.naive_concat:
        texts.update(dict.fromkeys(t.reference for t in triplets))
    if cfg.anchor:
        texts.update(dict.fromkeys(t.target for t in triplets))
    if not texts or len(texts) * enc.dim * 4 / 2 ** 20 > cfg.anchor_cache_mb:
        return None
    order = sorted(texts, key=len)  # similar lengths per batch: less padding
    feats = torch.empty(len(order), enc.dim, dtype=torch.float32, device=enc.device)
    bs = cfg.cache_batch_size
    with torch.no_grad(), autocast():
        for i in tqdm(range(0, len(order), bs), desc="anchor features", unit="batch", disable=not progress,
                      leave=False):
            feats[i:i + bs] = encode_with(enc, order[i:i + bs]).float()
    index = {t: i for i, t in enumerate(order)}

    def lookup(batch_texts: Sequence[str]) -> torch.Tensor:
        return feats[torch.tensor([index[t] for t in batch_texts], device=enc.device)]

    return lookup


@contextlib.contextmanager
def using_tower(enc: Any, tower: torch.nn.Module) -> Iterator[Any]:
    """Temporarily run the encoder with ``tower`` as its text tower (for validation)."""
    tm, tp, was = enc.model.text_model, enc.model.text_projection, tower.training
    tower.eval()
    enc.model.text_model, enc.model.text_projection = tower, tower.text_projection
    try:
        yield enc
    finally:
        enc.model.text_model, enc.model.text_projection = tm, tp
        tower.train(was)


def _check_resume(state: dict[str, Any], cfg: RTDConfig, data_sha1: str, path: Path) -> None:
    old = RTDConfig.from_dict(state["config"]).to_dict()
    new = cfg.to_dict()
    diff = [f"{k}: {old[k]!r} → {new[k]!r}" for k in new if k not in _RESUME_FREE and old.get(k) != new[k]]
    if diff:
        raise UserError(f"--resume {path}: the run was started with other settings ({'; '.join(diff)}); "
                        "use the same options, or drop --resume to start over.")
    if state["data_sha1"] != data_sha1:
        raise UserError(f"--resume {path}: the triplet file changed since the run started; use the same file, "
                        "or drop --resume to start over.")


def plot_losses(losses: Sequence[float], path: Path, val: Sequence[dict[str, Any]] = (),
                metric: str | None = None) -> Path:
    """Loss curve (and the validation metric on a second axis) as a PNG, written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(range(1, len(losses) + 1), losses, lw=1, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("RTD loss (NT-Xent)")
    ax.grid(alpha=0.3)
    if val and metric:
        ax2 = ax.twinx()
        ax2.plot([v["step"] for v in val], [v.get(metric, math.nan) for v in val], "o-", color="C1",
                 label=f"val {metric}")
        ax2.set_ylabel(f"validation {metric}")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    return path


def make_optimizer(tower: torch.nn.Module, cfg: RTDConfig) -> torch.optim.AdamW:
    """AdamW over every parameter of ψ_T^θ, constant lr (fused kernel on CUDA)."""
    fused = next(tower.parameters()).device.type == "cuda"
    return torch.optim.AdamW(tower.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, fused=fused or None)


def optimisation_step(enc: Any, tower: torch.nn.Module, phi: torch.nn.Module | None,
                      triplets: Sequence[Triplet], order: BatchOrder, cfg: RTDConfig, step: int,
                      opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None,
                      autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                      anchor: AnchorFn | None = None) -> float:
    """One optimiser step: ``cfg.accum`` micro-batches, each with its own loss; returns their mean loss."""
    micro_losses = []
    for m in range(cfg.accum):
        idx = order.take((step * cfg.accum + m) * cfg.batch_size, cfg.batch_size)
        batch = [triplets[i] for i in idx]
        u, eps = noise_for(cfg, step, m, len(batch), enc.dim)
        with autocast():
            q, k = queries_and_keys(enc, tower, phi, batch, cfg, u, eps, anchor)
            loss = rtd_loss(q, k, cfg.tau)
        scaled = loss / cfg.accum
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        micro_losses.append(loss.detach())
    if cfg.max_grad_norm > 0:
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(tower.parameters(), cfg.max_grad_norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return float(torch.stack(micro_losses).mean())


def train_rtd(enc: Any, phi: torch.nn.Module | None, triplets: Sequence[Triplet], out: str | Path,
              cfg: RTDConfig = RTDConfig(), save_every: int = 0, resume: bool = False,
              validate: Validator | None = None, val_every: int = 0, val_metric: str = "R@1",
              progress: bool = True, plot: bool = True, val_also: Sequence[int] = (50,)) -> TrainResult:
    """Fine-tune a trainable copy of ``enc``'s text tower with RTD and write it to ``out``.

    ``phi``: the base method's frozen projection (unused with ``cfg.naive_concat``). ``validate``
    is called with the encoder running the current tower and returns metrics, every ``val_every``
    steps, at the steps in ``val_also`` and at the end (the official script: every 100 steps and at
    step 50, on CIRR val); the tower with the strictly highest ``val_metric`` (ties keep the earlier
    step, as the official ``>``) is kept at ``<out stem>.best.pt``; ``out`` is always the last step.
    """
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.accum < 1:
        raise UserError("--steps, --batch-size and --accum must be at least 1.")
    if phi is None and not cfg.naive_concat:
        raise UserError("--phi is required (or use --naive-concat, which needs no φ).")
    if len(triplets) < 2:
        raise UserError("--triplets: need at least 2 triplets (the loss contrasts each pair against the others).")
    paths = output_paths(out)
    autocast, scaler = autocast_for(enc.device, cfg.amp)
    data_sha1 = data_fingerprint(triplets)
    identity = model_identity(enc)
    triplets = clean_triplets(triplets, enc.tokenizer, cfg.cond_dollar)  # the official loader's text rules

    torch.manual_seed(cfg.seed)
    if phi is not None:
        phi = phi.to(enc.device).eval().requires_grad_(False)
    tower = make_trainable_tower(enc).train()
    opt = make_optimizer(tower, cfg)

    result = TrainResult(losses=[], out=paths["out"], state_path=paths["state"])
    start = 0
    if resume and paths["state"].exists():
        where = f"--resume {paths['state']}"
        state = read_state(paths["state"], STATE_FORMAT, "RTD")
        check_identity(state.get("identity"), enc, where)  # another model (even of the same shapes) is refused
        _check_resume(state, cfg, data_sha1, paths["state"])
        restore(state, {"tower": tower, "optimizer": opt, "scaler": scaler},
                f"{where}: does not fit this model ({{}}); delete it or drop --resume.")
        set_rng_state({"cpu": state.get("rng_cpu"), "cuda": state.get("rng_cuda")})
        start = int(state["step"])
        result.losses, result.val, result.best = list(state["losses"]), list(state["val"]), state["best"]
        if result.best is not None and paths["best"].exists():
            result.best_path = paths["best"]
    elif resume:
        warnings.warn(f"--resume: no training state at {paths['state']}; starting from step 0.", stacklevel=2)

    def save_state(step: int) -> None:
        rng = rng_state()
        atomic_torch_save({
            "format": STATE_FORMAT, "step": step, "config": cfg.to_dict(), "data_sha1": data_sha1,
            "identity": identity, "tower": tower.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "losses": result.losses, "val": result.val, "best": result.best,
            "rng_cpu": rng["cpu"], "rng_cuda": rng["cuda"],
        }, paths["state"])

    def run_validation(step: int) -> None:
        with using_tower(enc, tower), torch.no_grad():
            metrics = {k: float(v) for k, v in validate(enc).items()}
        record_validation(result, step, metrics, val_metric,
                          lambda: save_rtd(enc, tower, paths["best"], cfg.to_dict(), step))

    order = BatchOrder(len(triplets), cfg.seed)
    anchor = build_anchor_cache(enc, triplets, cfg, autocast, progress) if start < cfg.steps else None
    per_step = cfg.accum * cfg.batch_size
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=start, desc="rtd train", unit="step", disable=not progress)
    # Frozen only inside the try, so any error (a refused --resume included) gives the encoder back as it was.
    frozen_flags = [p.requires_grad for p in enc.model.parameters()]
    enc.model.requires_grad_(False)  # ψ_T⁰ (and the unused image tower) stay frozen
    try:
        for step in range(start, cfg.steps):
            ts = time.perf_counter()
            with committed():  # the update and its record are one: Ctrl-C waits for both
                step_loss = optimisation_step(enc, tower, phi, triplets, order, cfg, step, opt, scaler, autocast,
                                              anchor)
                if math.isfinite(step_loss):
                    result.losses.append(step_loss)
            if not math.isfinite(step_loss):
                raise UserError(f"the loss became {step_loss} at step {step + 1}; lower --lr (or use --amp off).")
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", trip_s=f"{per_step / (time.perf_counter() - ts):.1f}")
            done = step + 1
            if validate is not None and validation_due(done, val_every, val_also):
                run_validation(done)
            if save_every > 0 and done % save_every == 0 and done < cfg.steps:
                save_state(done)
    except KeyboardInterrupt:
        # keep every finished step: steps are committed whole, so weights, optimiser and losses agree
        if len(result.losses) > start:
            save_state(len(result.losses))
            warnings.warn(f"interrupted after step {len(result.losses)}; state saved to {paths['state']} — "
                          "rerun the same command with --resume to continue.", stacklevel=2)
        raise
    finally:
        bar.close()
        for p, flag in zip(enc.model.parameters(), frozen_flags):
            p.requires_grad_(flag)
    steps_run = cfg.steps - start
    result.seconds = time.perf_counter() - t0
    result.triplets_per_second = steps_run * per_step / result.seconds if steps_run and result.seconds > 0 else 0.0
    if validate is not None and final_validation_due(result.val, cfg.steps):
        run_validation(cfg.steps)
    save_rtd(enc, tower, paths["out"], cfg.to_dict(), cfg.steps)
    save_state(cfg.steps)
    if plot:
        result.plot_path = plot_losses(result.losses, paths["plot"], result.val, val_metric)
    result.tower = tower
    return result
