"""What both trainers (train-phi, rtd train) share: exact, safe resume (issue: no silent wrong model)
and the bookkeeping of validation.

- ``committed()``: Ctrl-C (SIGINT) is held back while an optimiser step and its bookkeeping run, and
  delivered right after, so the weights, the optimiser and the recorded step always agree.
- ``model_identity`` / ``check_identity``: a cheap, dtype-robust fingerprint of the base model (its
  text-tower shapes plus leading values of the token embedding and of both projections), stored in
  the training state; ``--resume`` with a state of another model — even one of the same shapes — is
  refused in one line. ``leading_values`` / ``same_values`` also make the RTD checkpoint's image fingerprint.
- ``read_state``: the state file read with every failure (missing, truncated, not a state, another
  format) as one ``UserError`` line.
- ``rng_state`` / ``set_rng_state``: the global RNGs, saved in the same file.
- ``validation_due`` / ``record_validation`` / ``final_validation_due``: when to validate and how a
  result is kept (every metric per step; the best on a strictly higher ``val_metric``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from calibclip.errors import UserError

_VALUES = 256  # leading values per identifying tensor
_RTOL, _ATOL = 1e-2, 1e-3  # wide enough for a float16/bfloat16 copy of the same weights, far below seed noise


@contextlib.contextmanager
def committed() -> Iterator[None]:
    """Run the block with SIGINT deferred; a Ctrl-C received inside is raised when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit: list[Any] = []
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: hit.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if hit:
        raise KeyboardInterrupt


def leading_values(t: torch.Tensor) -> list[float]:
    """The first 256 values of a weight, as floats: part of a model's dtype-robust fingerprint."""
    return t.detach().float().flatten()[:_VALUES].cpu().tolist()


def same_values(saved: Any, mine: Any) -> bool:
    """Whether two lists of ``leading_values`` come from the same weights (a float16/bfloat16 copy included)."""
    a = torch.tensor(saved, dtype=torch.float32)
    b = torch.tensor(mine, dtype=torch.float32)
    return a.shape == b.shape and torch.allclose(a, b, rtol=_RTOL, atol=_ATOL)


def model_identity(enc: Any) -> dict[str, Any]:
    """Fingerprint of the base model: text-tower sizes and leading weight values (not its path)."""
    m = enc.model
    tc = m.config.text_config
    sizes = {"dim": int(enc.dim), "token_dim": int(enc.token_dim), "layers": int(tc.num_hidden_layers),
             "heads": int(tc.num_attention_heads), "vocab": int(tc.vocab_size),
             "context": int(tc.max_position_embeddings)}
    values = (leading_values(m.text_model.embeddings.token_embedding.weight) + leading_values(m.text_projection.weight)
              + leading_values(m.visual_projection.weight))
    return {"name": str(enc.name), "sizes": sizes, "values": values}


def check_identity(saved: Any, enc: Any, where: str) -> None:
    """UserError unless ``saved`` (a ``model_identity``) is the identity of ``enc``'s model."""
    mine = model_identity(enc)
    if not isinstance(saved, dict) or "sizes" not in saved or "values" not in saved:
        raise UserError(f"{where}: the saved state does not record its model (an older or damaged file); "
                        "drop --resume to start over.")
    if saved["sizes"] != mine["sizes"]:
        diff = ", ".join(f"{k} {saved['sizes'].get(k)} vs {v}" for k, v in mine["sizes"].items()
                         if saved["sizes"].get(k) != v)
        raise UserError(f"{where}: the run was started with model '{saved.get('name')}' of other sizes "
                        f"({diff}, saved vs now); use that model with --model, or drop --resume.")
    if not same_values(saved["values"], mine["values"]):
        raise UserError(f"{where}: the run was started with another model ('{saved.get('name')}', same sizes but "
                        f"other weights than '{enc.name}'); use that model with --model, or drop --resume.")


def read_state(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """A training state file (``format`` == fmt), or one UserError line saying why it cannot be resumed."""
    if not path.is_file():
        raise UserError(f"--resume: {path} not found (it is written every --save-every steps, on Ctrl-C and at "
                        "the end); run without --resume to start over.")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, garbage, foreign pickle: same one-line answer
        raise UserError(f"--resume: {path} cannot be read ({type(exc).__name__}: truncated or not a "
                        "torch file); delete it or run without --resume to start over.") from None
    if not isinstance(st, dict) or st.get("format") != fmt:
        raise UserError(f"--resume: {path} is not a {what} training state; delete it or drop --resume.")
    return st


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and, when present, CUDA)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(st: dict[str, Any] | None) -> None:
    """Restore ``rng_state()`` output (missing parts are left alone)."""
    if not st:
        return
    if st.get("cpu") is not None:
        torch.set_rng_state(st["cpu"])
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def restore(state: dict[str, Any], parts: dict[str, Any], fail: str, optional: tuple[str, ...] = ("scaler",)) -> None:
    """``parts[key].load_state_dict(state[key])`` for each key (a part that is None is skipped, and so
    is a key of ``optional`` the state lacks). A missing key or a state of another shape is one
    UserError: ``fail`` with the first line of the reason put in at ``{}``."""
    try:
        for key, obj in parts.items():
            if obj is None or (key in optional and not state.get(key)):
                continue
            obj.load_state_dict(state[key])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UserError(fail.format(str(exc).splitlines()[0][:160])) from None


def validation_due(done: int, val_every: int, val_also: Sequence[int]) -> bool:
    """Validate after ``done`` steps: every ``val_every`` steps (0: never) and at the steps in ``val_also``."""
    return (val_every > 0 and done % val_every == 0) or done in val_also


def final_validation_due(val: Sequence[dict[str, Any]], steps: int) -> bool:
    """The run ends at ``steps``: validate unless the last validation was at that step."""
    return not val or val[-1]["step"] != steps


def record_validation(res: Any, step: int, metrics: dict[str, float], val_metric: str,
                      save_best: Callable[[], Path]) -> None:
    """Append ``{"step", **metrics}`` to ``res.val``; on a strictly higher ``val_metric`` than ``res.best``
    (ties keep the earlier step, as the official ``>``) set ``res.best`` and ``res.best_path = save_best()``."""
    if val_metric not in metrics:
        raise UserError(f"--val-metric {val_metric}: the validation reports {', '.join(metrics)}; pick one.")
    res.val.append({"step": step, **metrics})
    if res.best is None or metrics[val_metric] > res.best["value"]:
        res.best = {"metric": val_metric, "value": metrics[val_metric], "step": step}
        res.best_path = save_best()
