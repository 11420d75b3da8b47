"""Run preset rows through the ordinary eval runner and compare each metric with the published number."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibclip.data.synth import ASSETS  # shipped synthetic model, φ and RTD tower: found without --weights
from calibclip.errors import UserError
from calibclip.reproduce.presets import Row

# What `reproduce list` says each dataset folder must hold (the readers' official layouts).
LAYOUT = {
    "flickr30k": "dataset_flickr30k.json (Karpathy) + flickr30k-images/",
    "mscoco": "dataset_coco.json (Karpathy) + val2014/ (and train2014/)",
    "cuhk-pedes": "reid_raw.json + imgs/ (IRRA layout)",
    "icfg-pedes": "ICFG-PEDES.json + imgs/ (IRRA layout)",
    "rstpreid": "data_captions.json + imgs/ (IRRA layout)",
    "cirr": "captions/cap.rc2.<split>.json, image_splits/split.rc2.<split>.json, dev/ test1/ images",
    "fashioniq": "captions/cap.<cat>.val.json, image_splits/split.<cat>.val.json, images/ (dress, shirt, toptee)",
    "circo": "annotations/<split>.json + COCO2017_unlabeled/{annotations/image_info_unlabeled2017.json,"
             "unlabeled2017/}",
    "genecis": "genecis/<task>.json + Visual Genome VG_100K_all/ + COCO val2017/",
    "pairs": "a CSV/JSONL of image,caption",
}


@dataclass
class Inputs:
    """Where a row's inputs were found, and what is missing (empty = the row can run)."""

    root: Path
    model: str | None = None
    phi: Path | None = None
    rtd: Path | None = None
    missing: list[str] = field(default_factory=list)


@dataclass
class RowOutcome:
    """One row after ``reproduce``: measured metrics (empty if not run), the comparison, notes."""

    row: Row
    ran: bool
    missing: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    result_path: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def comparison(self) -> list[dict[str, Any]]:
        """Per metric: measured, published, Δ = measured − published, and whether |Δ| > tolerance."""
        out = []
        for m in self.row.metrics:
            meas, pub = self.measured.get(m), self.row.published.get(m)
            delta = None if meas is None or pub is None else round(meas - pub, 4)
            out.append({"metric": m, "measured": meas, "published": pub, "delta": delta,
                        "exceeds": delta is not None and abs(delta) > self.row.tolerance + 1e-9})
        return out

    @property
    def exceeded(self) -> list[str]:
        return [c["metric"] for c in self.comparison() if c["exceeds"]]

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        return {"id": r.id, "paper": r.paper, "dataset": r.dataset, "split": r.split, "model": r.model,
                "mode": r.mode, "phi": r.phi, "rtd": r.rtd, "prompt": r.prompt, "prompt_preset": r.prompt_preset,
                "precision": r.precision,
                "calib": r.calib, "source": r.source, "tolerance": r.tolerance, "ran": self.ran,
                "missing": self.missing, "result_json": self.result_path, "notes": self.notes,
                "seconds": round(self.seconds, 2), "metrics": self.comparison()}


def _weight_file(name: str, weights: Path | None) -> Path | None:
    for base in ([weights] if weights is not None else []) + [ASSETS]:
        if (base / name).is_file():
            return base / name
    return None


def _in_hf_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    hit = try_to_load_from_cache(model_id, "config.json")
    return isinstance(hit, str)


def _model(row: Row, weights: Path | None) -> str | None:
    """A local folder (``--weights``/<last part of the id>, or a shipped asset), or the HF id if cached."""
    name = row.model.rstrip("/").split("/")[-1]
    for base in ([weights] if weights is not None else []) + [ASSETS]:
        if (base / name / "config.json").is_file():
            return str(base / name)
    return row.model if "/" in row.model and _in_hf_cache(row.model) else None


def _data_problem(row: Row, root: Path, seen: dict | None) -> str | None:
    """Why the row's benchmark cannot be read under ``root`` (None: it can); remembered in ``seen``
    per (dataset, root, split), since many rows share a dataset."""
    from calibclip.data import read_dataset

    key = (row.dataset, str(root), row.split)
    if seen is not None and key in seen:
        return seen[key]
    try:
        read_dataset(row.dataset, root, row.split)
        problem = None
    except UserError as exc:
        problem = str(exc)
    if seen is not None:
        seen[key] = problem
    return problem


def check_inputs(row: Row, data_root: Path, weights: Path | None, seen: dict | None = None) -> Inputs:
    """Resolve the row's data folder, model and checkpoints; list exactly what is missing.

    ``seen``: a dict kept across the rows of one command, so each benchmark is read once."""
    inp = Inputs(root=Path(data_root) / row.data_dir)
    if not inp.root.exists():
        inp.missing.append(f"data: {inp.root} ({LAYOUT.get(row.dataset, row.dataset)})")
    elif (problem := _data_problem(row, inp.root, seen)) is not None:
        inp.missing.append(f"data: {problem}")
    inp.model = _model(row, weights)
    if inp.model is None:
        name = row.model.rstrip("/").split("/")[-1]
        where = f"{weights}/{name}/" if weights is not None else f"--weights DIR with {name}/"
        inp.missing.append(f"model: {row.model} (not in the Hugging Face cache; or a local copy at {where})")
    for kind in ("phi", "rtd"):
        name = getattr(row, kind)
        if name:
            path = _weight_file(name, weights)
            setattr(inp, kind, path)
            if path is None:
                where = weights if weights is not None else "--weights DIR"
                inp.missing.append(f"{kind}: {name} (in {where})")
    return inp


def _calib_toml(row: Row, out_dir: Path) -> Path | None:
    if row.mode != "calib":
        return None
    from calibclip.atomic import atomic_write_text
    from calibclip.calib import CalibConfig
    from calibclip.tomlfile import flat_toml

    cfg = CalibConfig.from_dict(row.calib, source=f"{row.file}: row {row.id} calib")
    path = out_dir / "configs" / f"{row.id}.toml"
    atomic_write_text(path, flat_toml(cfg.to_dict()))
    return path


def run_row(row: Row, inp: Inputs, out_dir: Path, cache_dir: Path | None, device: str,
            progress: bool) -> RowOutcome:
    """One row through ``calibclip.eval.runner.evaluate``; its result JSON goes to ``out_dir/results``."""
    from calibclip.eval.runner import EvalSpec, evaluate

    t0 = time.perf_counter()
    spec = EvalSpec(dataset=row.dataset, root=inp.root, model=str(inp.model), mode=row.mode, split=row.split,
                    calib_config=_calib_toml(row, out_dir), phi=inp.phi, rtd=inp.rtd, prompt=row.prompt,
                    prompt_preset=row.prompt_preset, precision=row.precision, device=device, cache_dir=cache_dir, results_dir=out_dir / "results", progress=progress,
                    submission=out_dir / "submissions" / f"{row.id}.json" if row.split.startswith("test")
                    and row.dataset in ("cirr", "circo") else None)
    res = evaluate(spec)
    out = RowOutcome(row=row, ran=True, measured={m: res.metrics[m] for m in row.metrics if m in res.metrics},
                     result_path=str(res.path) if res.path else None, notes=list(res.notes))
    absent = [m for m in row.metrics if m not in res.metrics]
    if absent and res.submission:
        out.notes.append(f"{row.dataset} {row.split} is scored by its evaluation server: upload "
                         f"{', '.join(res.submission)}")
    elif absent:
        out.notes.append(f"the runner does not report {', '.join(absent)}")
    if row.expect_images is not None and res.counts["images"] != row.expect_images:
        out.notes.append(f"gallery has {res.counts['images']} images, the published run {row.expect_images}: "
                         "numbers are not directly comparable")
    out.seconds = time.perf_counter() - t0
    return out


def reproduce(rows: list[Row], data_root: Path, weights: Path | None, out_dir: Path, cache_dir: Path | None = None,
              device: str = "auto", progress: bool = False, say: Any = None) -> list[RowOutcome]:
    """Check every row's inputs, run those that have them (in order), return one outcome per row."""
    outcomes, seen = [], {}
    for row in rows:
        inp = check_inputs(row, data_root, weights, seen)
        if inp.missing:
            outcomes.append(RowOutcome(row=row, ran=False, missing=inp.missing))
            continue
        if say is not None:
            say(f"running {row.id}")
        outcomes.append(run_row(row, inp, Path(out_dir), cache_dir, device, progress))
    return outcomes


def cell(v: float | None) -> str:
    """A metric as the report and ``calibclip reproduce`` print it: 2 decimals, or – when absent."""
    return "–" if v is None else f"{v:.2f}"


def markdown_report(outcomes: list[RowOutcome]) -> str:
    """One table per row that ran (metric | measured | published | Δ | mark), then the rows that could not."""
    lines = ["# calibclip reproduce", ""]
    for o in outcomes:
        if not o.ran:
            continue
        r = o.row
        lines += [f"## {r.id}", "", f"{r.dataset} ({r.split}) · {r.model} · {r.mode}"
                  + (f" · φ {r.phi}" if r.phi else "") + (f" · RTD {r.rtd}" if r.rtd else ""),
                  f"published: {r.source} · tolerance ±{r.tolerance:g}", "",
                  "| metric | measured | published | Δ | |", "|---|---|---|---|---|"]
        for c in o.comparison():
            mark = "✗ > tol" if c["exceeds"] else ("✓" if c["delta"] is not None else "")
            d = "–" if c["delta"] is None else f"{c['delta']:+.2f}"
            lines.append(f"| {c['metric']} | {cell(c['measured'])} | {cell(c['published'])} | {d} | {mark} |")
        lines += [f"- note: {n}" for n in o.notes] + [""]
    skipped = [o for o in outcomes if not o.ran]
    if skipped:
        lines += ["## Not run (inputs missing)", ""]
        for o in skipped:
            lines.append(f"- **{o.row.id}**: " + "; ".join(o.missing))
        lines.append("")
    return "\n".join(lines)


def write_report(outcomes: list[RowOutcome], out_dir: Path) -> tuple[Path, Path]:
    """``out_dir/reproduce.json`` and ``out_dir/reproduce.md``; returns both paths."""
    from calibclip.atomic import atomic_write_text
    from calibclip.eval.runner import write_json  # imported here: `reproduce list` stays free of torch

    out_dir = Path(out_dir)
    js, md = out_dir / "reproduce.json", out_dir / "reproduce.md"
    write_json(js, {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": [o.to_dict() for o in outcomes]})
    atomic_write_text(md, markdown_report(outcomes))
    return js, md
