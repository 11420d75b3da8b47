"""CalibConfig: every knob of the CalibCLIP spec (method: docs/methods/calibclip.md), with its defaults."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from calibclip.errors import UserError
from calibclip.tomlfile import read_toml

DCC_MASK_MODES = ("keys", "delete", "pad-token")

# Fields that change the stored image features; the others act at query time only.
IMAGE_FIELDS = ("cve", "target_sigma", "tau_d", "tau_s", "gamma")
# Fields that act only on the scores (re-ranking): neither image nor query features change with them.
SCORE_FIELDS = ("disc_sim", "rerank_k", "lam")


@dataclass(frozen=True)
class CalibConfig:
    """CalibCLIP settings. Each component switches off alone; all off = the plain model, bit for bit.

    CVE: ``target_sigma`` (target region: a > μ + target_sigma·σ), ``tau_d`` / ``tau_s``
    (decay / suppress thresholds of the dominance score), ``gamma`` (weight of decayed tokens).
    DCC: ``dcc_k`` general words masked, ``dcc_mask`` how ("keys": keys blocked in every
    layer, "delete": tokens removed, "pad-token": replaced by a neutral pad token), ``dcc_min_keep``
    word tokens always left unmasked [ours: the spec is silent on queries of <= k words; masking every
    word would leave a query with no content, so at least this many stay].
    Re-rank: ``rerank_k`` size K of the reliable candidate space, ``lam`` weight λ of the
    discriminative similarity.
    """

    cve: bool = True
    dcc: bool = True
    disc_sim: bool = True
    target_sigma: float = 1.5
    tau_d: float = 2.0
    tau_s: float = 3.0
    gamma: float = 0.5
    dcc_k: int = 3
    dcc_mask: str = "keys"
    dcc_min_keep: int = 1
    rerank_k: int = 100
    lam: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            want = {"bool": bool, "int": int, "float": float, "str": str}[str(f.type)]
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            elif not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                raise UserError(f"CalibConfig.{f.name}: expected {want.__name__}, got {value!r}.")
        if self.dcc_mask not in DCC_MASK_MODES:
            raise UserError(f"CalibConfig.dcc_mask: {self.dcc_mask!r} is not one of {', '.join(DCC_MASK_MODES)}.")
        if not 0.0 <= self.gamma <= 1.0:
            raise UserError(f"CalibConfig.gamma: {self.gamma} must lie in [0, 1].")
        if self.tau_d > self.tau_s:
            raise UserError(f"CalibConfig.tau_d ({self.tau_d}) must not exceed tau_s ({self.tau_s}).")
        for name in ("dcc_k", "dcc_min_keep"):
            if getattr(self, name) < 0:
                raise UserError(f"CalibConfig.{name}: must be >= 0.")
        if self.rerank_k < 1:
            raise UserError("CalibConfig.rerank_k: must be >= 1.")

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "calibration config") -> "CalibConfig":
        """Build from a dict; an unknown key raises UserError naming ``source`` and the key."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{source}: unknown key '{unknown[0]}'; known keys: {', '.join(sorted(known))}.")
        try:
            return cls(**data)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "CalibConfig":
        """Read a TOML file with CalibConfig keys at top level (or under a ``[calib]`` table)."""
        path = Path(path)
        data = read_toml(path, "calibration config file")
        if set(data) == {"calib"} and isinstance(data["calib"], dict):
            data = data["calib"]
        return cls.from_dict(data, source=str(path))

    def fingerprint(self) -> str:
        """Stable short hash of every field (same config → same string, across runs and machines)."""
        return _hash(self.to_dict())

    def image_fingerprint(self) -> str:
        """Hash of the fields that change stored image features (CVE); query-time knobs are left out."""
        return _hash({k: v for k, v in self.to_dict().items() if k in IMAGE_FIELDS})


def _hash(d: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
