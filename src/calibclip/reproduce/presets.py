"""Preset rows: one entry per published table row, read from the TOML files shipped beside this module.

A row names everything ``calibclip eval`` needs (dataset, split, model, φ / RTD checkpoint by the file
name of the official release, prompt, precision, CalibCLIP settings) plus the published numbers and
where they were read. Numbers that could not be found stay out of ``published`` (never estimated).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from calibclip.data import DATASETS, canonical
from calibclip.errors import UserError
from calibclip.eval.choices import MODES, PRECISIONS
from calibclip.tomlfile import read_toml

PRESET_FILES = ("calibclip.toml", "rtd.toml", "synth.toml")
DEFAULT_TOLERANCE = 0.5  # points: |measured - published| above this is marked


@dataclass(frozen=True)
class Row:
    """One published row: how to run it and what the paper printed."""

    id: str
    paper: str
    dataset: str
    split: str
    model: str
    metrics: tuple[str, ...]
    source: str
    mode: str = "base"
    backbone: str = ""
    method: str = ""  # projection method of a composed row: lincir, searle, pic2word
    phi: str | None = None  # φ checkpoint file name (official release name) looked up in --weights
    rtd: str | None = None  # RTD text-tower checkpoint file name looked up in --weights
    prompt: str | None = None  # free-text composed-query template; None: prompt_preset
    prompt_preset: str | None = None  # cir.prompts preset (rtd, searle, lincir, pic2word); None: the rtd one
    precision: str = "auto"  # as `calibclip eval --precision`: auto = the benchmark's official one on CUDA
    calib: dict[str, Any] = field(default_factory=dict)  # CalibConfig fields for a calib row
    published: dict[str, float] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    data: str | None = None  # folder under --data-root (default: the dataset name)
    expect_images: int | None = None  # gallery size of the published run, when known
    note: str = ""
    file: str = ""  # preset file the row came from

    @property
    def data_dir(self) -> str:
        return self.data or self.dataset

    @property
    def task(self) -> str:
        return DATASETS[self.dataset][0]


def _row(d: dict[str, Any], source: str, paper: str) -> Row:
    known = {f.name for f in fields(Row)}
    where = f"{source}: row {d.get('id', '?')!r}"
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}'; known keys: {', '.join(sorted(known))}.")
    missing = [k for k in ("id", "dataset", "split", "model", "metrics", "source") if k not in d]
    if missing:
        raise UserError(f"{where}: missing key '{missing[0]}'.")
    d = {**d, "paper": d.get("paper", paper), "file": source}
    d["dataset"] = canonical(d["dataset"])
    d["metrics"] = tuple(d["metrics"])
    if d.get("mode", "base") not in MODES:
        raise UserError(f"{where}: mode {d['mode']!r} is not one of {', '.join(MODES)}.")
    if d.get("precision", "auto") not in PRECISIONS:
        raise UserError(f"{where}: precision {d['precision']!r} is not one of {', '.join(PRECISIONS)}.")
    extra = sorted(set(d.get("published", {})) - set(d["metrics"]))
    if extra:
        raise UserError(f"{where}: published metric '{extra[0]}' is not listed in metrics.")
    if d.get("mode") == "rtd" and not d.get("rtd"):
        raise UserError(f"{where}: an rtd row needs rtd = \"<checkpoint file>\".")
    if DATASETS[d["dataset"]][0] == "cir" and not d.get("phi"):
        raise UserError(f"{where}: a composed-retrieval row needs phi = \"<checkpoint file>\".")
    d["published"] = {k: float(v) for k, v in d.get("published", {}).items()}
    return Row(**d)


def read_preset(path: str | Path) -> list[Row]:
    """Rows of one preset TOML file (``[paper] key`` + ``[[row]]`` tables)."""
    path = Path(path)
    data = read_toml(path, "preset file")
    paper = data.get("paper", {}).get("key", path.stem)
    return [_row(r, path.name, paper) for r in data.get("row", [])]


def load_rows(extra: list[Path] | None = None) -> list[Row]:
    """Every shipped preset row (plus the rows of ``extra`` files); ids must be unique."""
    rows: list[Row] = []
    for name in PRESET_FILES:
        with resources.as_file(resources.files("calibclip.reproduce") / name) as p:
            rows += read_preset(p)
    for p in extra or []:
        rows += read_preset(p)
    seen: dict[str, str] = {}
    for r in rows:
        if r.id in seen:
            raise UserError(f"{r.file}: row id {r.id!r} is already defined in {seen[r.id]}.")
        seen[r.id] = r.file
    return rows


def select_rows(rows: list[Row], patterns: list[str]) -> list[Row]:
    """Rows whose id matches any pattern (exact id, glob such as ``rtd-cirr-*``, or id prefix), in preset order."""
    out = []
    for pat in patterns:
        hit = [r for r in rows if r.id == pat or fnmatch.fnmatchcase(r.id, pat)
               or (not any(c in pat for c in "*?[") and r.id.startswith(pat))]
        if not hit:
            raise UserError(f"reproduce: no row matches {pat!r}; `calibclip reproduce list` shows the row ids.")
        out += [r for r in hit if r not in out]
    return out
