"""φ projections (image embedding → one pseudo word token) and their checkpoint formats (method: docs/methods/zs-cir.md).

Architectures, with the parameter names of the authors' code so their state dicts load as they are:
- ``"lincir"`` (LinCIR and SEARLE share it, alias ``"searle"``): ``layers`` = Linear(D, 4D) → GELU →
  Dropout(0.5) → Linear(4D, 4D) → GELU → Dropout(0.5) → Linear(4D, D_tok).
- ``"pic2word"``: ``layers`` = [Linear(D, 512) → Dropout(0.1) → ReLU] × 2, then ``fc_out`` = Linear(512, D_tok).

Checkpoint formats ``load_phi`` recognises (from the keys of the file):
- ours (``save_phi``): ``{"kind", "input_dim", "output_dim", "state_dict"}``;
- LinCIR / SEARLE: ``{"Phi": state_dict, ...}`` (their ``save_phi`` also writes ``"epoch"``);
- Pic2Word: ``{"state_dict_img2text": state_dict, ...}`` with DataParallel ``module.`` prefixes;
- a bare state dict of either architecture (prefixes stripped).
Sizes (D, hidden, D_tok, Pic2Word's layer count) are read from the weight shapes. Weights are
loaded as float32 (published checkpoints may be fp16) and the module is returned in eval mode.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from calibclip.atomic import atomic_torch_save
from calibclip.errors import UserError

FORMAT_KEYS = ("kind", "input_dim", "output_dim", "state_dict")
KINDS = ("lincir", "searle", "pic2word")


@dataclass(frozen=True)
class PhiConfig:
    """Constants of the published φ architectures."""

    lincir_hidden_mult: int = 4  # hidden width = 4·D
    lincir_dropout: float = 0.5
    pic2word_hidden: int = 512
    pic2word_layers: int = 2
    pic2word_dropout: float = 0.1


PHI = PhiConfig()


class LinCIRPhi(nn.Module):
    """LinCIR / SEARLE φ: a 3-layer GELU MLP D → hidden → hidden → D_tok."""

    kind = "lincir"

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int | None = None,
                 dropout: float = PHI.lincir_dropout) -> None:
        super().__init__()
        hidden_dim = hidden_dim or PHI.lincir_hidden_mult * input_dim
        self.input_dim, self.output_dim, self.hidden_dim = input_dim, output_dim, hidden_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Pic2WordPhi(nn.Module):
    """Pic2Word's IM2TEXT: [Linear → Dropout → ReLU] × n_layer, then ``fc_out``."""

    kind = "pic2word"

    def __init__(self, input_dim: int, output_dim: int, hidden_dim: int = PHI.pic2word_hidden,
                 n_layer: int = PHI.pic2word_layers, dropout: float = PHI.pic2word_dropout) -> None:
        super().__init__()
        self.input_dim, self.output_dim, self.hidden_dim, self.n_layer = input_dim, output_dim, hidden_dim, n_layer
        blocks, dim = [], input_dim
        for _ in range(n_layer):
            blocks.append(nn.Sequential(nn.Linear(dim, hidden_dim), nn.Dropout(dropout), nn.ReLU()))
            dim = hidden_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(x))


def build_phi(kind: str, input_dim: int, output_dim: int, hidden_dim: int | None = None, **kwargs: Any) -> nn.Module:
    """A freshly initialised φ of ``kind`` ("lincir", "searle" = same architecture, "pic2word")."""
    kind = kind.lower()
    if kind in ("lincir", "searle"):
        phi = LinCIRPhi(input_dim, output_dim, hidden_dim, **kwargs)
        phi.kind = kind  # same weights; "searle" fills only the first `$` (calibclip.cir.compose.fill_rule)
        return phi
    if kind == "pic2word":
        return Pic2WordPhi(input_dim, output_dim, hidden_dim or PHI.pic2word_hidden, **kwargs)
    raise UserError(f"unknown φ kind {kind!r}; use one of {', '.join(KINDS)}.")


def phi_dims(phi: nn.Module) -> tuple[int | None, int | None]:
    """(input D, output D_tok) of a φ: its attributes, else the first/last Linear layer; None if unknown."""
    if hasattr(phi, "input_dim") and hasattr(phi, "output_dim"):
        return int(phi.input_dim), int(phi.output_dim)
    lin = [m for m in phi.modules() if isinstance(m, nn.Linear)]
    if not lin:
        return None, None
    return lin[0].in_features, lin[-1].out_features


# ---------------------------------------------------------------------------------------------- saving
def save_phi(phi: nn.Module, path: str | Path) -> Path:
    """Write φ in our format ``{"kind", "input_dim", "output_dim", "state_dict"}`` atomically."""
    kind = getattr(phi, "kind", None)
    if kind not in KINDS:
        raise TypeError("save_phi needs a φ from build_phi/load_phi (LinCIRPhi or Pic2WordPhi)")
    atomic_torch_save({"kind": kind, "input_dim": int(phi.input_dim), "output_dim": int(phi.output_dim),
                       "state_dict": {k: v.detach().cpu() for k, v in phi.state_dict().items()}}, path)
    return Path(path)


# ---------------------------------------------------------------------------------------------- loading
def _strip_module(sd: Mapping[str, Any]) -> dict[str, Any]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _arch_of(sd: Mapping[str, torch.Tensor]) -> str | None:
    """Architecture of a (prefix-stripped) state dict, from its parameter names."""
    if "fc_out.weight" in sd and "layers.0.0.weight" in sd:
        return "pic2word"
    if {"layers.0.weight", "layers.3.weight", "layers.6.weight"} <= set(sd):
        return "lincir"
    return None


def _from_state_dict(kind: str, sd: Mapping[str, torch.Tensor], source: str, path: Path) -> nn.Module:
    sd = {k: v.float() for k, v in _strip_module(sd).items()}
    try:
        if kind == "pic2word":
            n_layer = len({m.group(1) for k in sd if (m := re.fullmatch(r"layers\.(\d+)\.0\.weight", k))})
            hidden, d_in = sd["layers.0.0.weight"].shape
            phi: nn.Module = Pic2WordPhi(d_in, sd["fc_out.weight"].shape[0], hidden, n_layer=n_layer)
        else:
            hidden, d_in = sd["layers.0.weight"].shape
            phi = LinCIRPhi(d_in, sd["layers.6.weight"].shape[0], hidden)
        phi.load_state_dict(sd)
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: a {source} φ checkpoint whose weights do not fit the {kind} architecture "
                        f"({first}).") from None
    phi.source = source  # type: ignore[assignment]
    return phi.eval()


def _keys_found(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a dict"
    keys = sorted(map(str, obj))
    more = f", … ({len(keys)} in all)" if len(keys) > 12 else ""
    return "keys " + ", ".join(keys[:12]) + more


def phi_from_checkpoint(obj: Any, path: str | Path = "<checkpoint>") -> nn.Module:
    """Detect the format of a loaded checkpoint object and build its φ (see the module docstring)."""
    path = Path(path)
    if isinstance(obj, Mapping) and set(FORMAT_KEYS) <= set(obj):
        kind = str(obj["kind"]).lower()
        if kind not in KINDS:
            raise UserError(f"{path}: unknown φ kind {obj['kind']!r} (expected one of {', '.join(KINDS)}).")
        phi = _from_state_dict("pic2word" if kind == "pic2word" else "lincir", obj["state_dict"], "calibclip", path)
        phi.kind = kind  # type: ignore[assignment]  # keeps "searle": its first-`$`-only rule
        if (phi.input_dim, phi.output_dim) != (int(obj["input_dim"]), int(obj["output_dim"])):
            raise UserError(f"{path}: its weights map {phi.input_dim} → {phi.output_dim} but the file says "
                            f"{obj['input_dim']} → {obj['output_dim']}; the file is damaged.")
        return phi
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("Phi")):
        return _from_state_dict("lincir", obj["Phi"], "LinCIR/SEARLE", path)
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict_img2text")):
        return _from_state_dict("pic2word", obj["state_dict_img2text"], "Pic2Word", path)
    if _is_state_dict(obj):
        arch = _arch_of(_strip_module(obj))
        if arch is not None:
            return _from_state_dict(arch, obj, f"bare {arch}", path)
    raise UserError(f"{path}: not a φ checkpoint this version knows (found {_keys_found(obj)}); expected "
                    "calibclip's (kind/input_dim/output_dim/state_dict), LinCIR/SEARLE's ('Phi') or "
                    "Pic2Word's ('state_dict_img2text').")


def load_phi(path: str | Path, device: str | torch.device = "cpu", kind: str | None = None) -> nn.Module:
    """Load a φ checkpoint of any supported format (detected from its keys); returned in eval mode.

    ``kind``: "searle" or "lincir" to say which method a LinCIR-architecture φ belongs to. The
    official files of both are ``{"Phi": state_dict}`` and cannot be told apart, so such a file is
    "lincir" (every `$` takes the token) unless ``kind="searle"`` (only the first `$`, as SEARLE's
    code) is given; calibclip's own files record their kind.

    Only tensors and plain containers are unpickled (``weights_only``): a file that needs arbitrary
    Python objects is refused rather than executed.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such φ checkpoint file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure (a text file gives KeyError) means "not a checkpoint"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{path}: cannot be read as a torch checkpoint of tensors ({first}). Re-save the φ state "
                        "dict with torch.save, or train one with `calibclip train-phi`.") from None
    phi = phi_from_checkpoint(obj, path)
    if kind is not None:
        kind = kind.lower()
        if kind not in KINDS or (kind == "pic2word") != (phi.kind == "pic2word"):
            raise UserError(f"{path}: a {phi.kind} φ cannot be used as kind {kind!r}; use one of "
                            f"{', '.join(k for k in KINDS if (k == 'pic2word') == (phi.kind == 'pic2word'))}.")
        phi.kind = kind  # type: ignore[assignment]
    return phi.to(device)
