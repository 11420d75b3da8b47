"""Grid sweeps of CalibConfig fields through the ordinary runner, features computed once per setting.

``--sweep lam=0,0.25,0.5,1 --sweep dcc_k=1,2,3`` → every combination is one calibrated ``evaluate``
call on one shared encoder and one in-memory memo: gallery features are encoded once per image-side
setting (CVE fields), queries once per query-side setting (DCC fields), and the re-ranking knobs
(``lam``, ``rerank_k``, ``disc_sim``) only re-score. A baseline row (no calibration) heads the table.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from calibclip.errors import UserError
from calibclip.eval.runner import EvalResult, EvalSpec, _load_encoder, evaluate, load_calib_config, write_json

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass
class SweepPoint:
    """One row of the sweep table: the swept values (None for the baseline) and the result."""

    params: dict[str, Any] | None
    result: EvalResult


@dataclass
class SweepResult:
    """The grid, its rows in grid order (baseline first) and the base configuration they vary."""

    grid: dict[str, list[Any]]
    base: dict[str, Any]
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def metric_names(self) -> list[str]:
        return list(dict.fromkeys(k for p in self.points for k in p.result.metrics))

    def best(self, metric: str) -> SweepPoint:
        """The calibrated point with the highest ``metric`` (first in grid order on ties)."""
        cands = [p for p in self.points if p.params is not None]
        if not cands or metric not in cands[0].result.metrics:
            raise UserError(f"--pick-best {metric}: not a metric of this run; use one of "
                            f"{', '.join(self.metric_names)}.")
        return max(cands, key=lambda p: p.result.metrics[metric])  # max keeps the first of equal values

    def to_dict(self) -> dict[str, Any]:
        first = self.points[0].result
        return {"dataset": first.dataset, "split": first.split, "model": first.model, "grid": self.grid,
                "base_config": self.base,
                "rows": [{"params": p.params, "config": p.result.config, "metrics": p.result.metrics,
                          "calibration": p.result.settings.get("calibration"), "timing": p.result.timing}
                         for p in self.points]}


def _cast(name: str, kind: str, text: str) -> Any:
    t = text.strip()
    try:
        if kind == "bool":
            if t.lower() not in _TRUE + _FALSE:
                raise ValueError
            return t.lower() in _TRUE
        return {"int": int, "float": float, "str": str}[kind](t)
    except ValueError:
        raise UserError(f"--sweep {name}: {t!r} is not a {kind}.") from None


def parse_sweeps(items: list[str]) -> dict[str, list[Any]]:
    """``["lam=0,0.5", "dcc_k=1,2"]`` → {"lam": [0.0, 0.5], "dcc_k": [1, 2]}, typed by CalibConfig's fields."""
    from calibclip.calib import CalibConfig

    kinds = {f.name: str(f.type) for f in fields(CalibConfig)}
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise UserError(f"--sweep {item!r}: write FIELD=V1,V2,… e.g. lam=0,0.25,0.5,1.")
        if name not in kinds:
            raise UserError(f"--sweep {name}: not a CalibConfig field; use one of {', '.join(kinds)}.")
        if name in grid:
            raise UserError(f"--sweep {name} is given twice; list all its values in one option.")
        vals = [_cast(name, kinds[name], v) for v in values.split(",") if v.strip()]
        grid[name] = list(dict.fromkeys(vals))
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last field varying fastest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def run_sweep(spec: EvalSpec, grid: dict[str, list[Any]], say: Any = None) -> SweepResult:
    """Baseline + one calibrated row per grid point on ``spec``'s benchmark (``spec.calib_config`` = base).

    Bad combinations (e.g. tau_d > tau_s) raise UserError before anything is encoded.
    """
    if not grid:
        raise UserError("--sweep: give at least one FIELD=V1,V2,… option.")
    base_cfg = load_calib_config(spec.calib_config)
    configs = []
    for params in grid_points(grid):
        try:
            configs.append((params, replace(base_cfg, **params)))
        except UserError as exc:
            raise UserError(f"--sweep point {params}: {exc}") from None
    out = SweepResult(grid=grid, base=base_cfg.to_dict())
    memo: dict = {}
    enc = _load_encoder(spec, None)
    row = replace(spec, mode="base", results_dir=None, submission=None)
    out.points.append(SweepPoint(None, evaluate(row, enc=enc, memo=memo)))
    for i, (params, cfg) in enumerate(configs):
        t0 = time.perf_counter()
        res = evaluate(replace(row, mode="calib"), enc=enc, calib=cfg, memo=memo)
        out.points.append(SweepPoint(params, res))
        if say is not None:
            say(f"[{i + 1}/{len(configs)}] {params}: {time.perf_counter() - t0:.1f}s")
    return out


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown_table(sweep: SweepResult, metrics: list[str] | None = None) -> str:
    """One row per grid point (baseline first): swept fields, then the metrics."""
    names = list(sweep.grid)
    metrics = metrics or sweep.metric_names
    lines = ["| " + " | ".join([*names, *metrics]) + " |", "|" + "---|" * (len(names) + len(metrics))]
    for p in sweep.points:
        left = ["baseline"] + [""] * (len(names) - 1) if p.params is None else [_fmt(p.params[n]) for n in names]
        lines.append("| " + " | ".join([*left, *(_fmt(p.result.metrics.get(m)) for m in metrics)]) + " |")
    return "\n".join(lines) + "\n"


def write_sweep(sweep: SweepResult, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.md``; returns both paths."""
    from calibclip.atomic import atomic_write_text

    stem = Path(stem)
    first = sweep.points[0].result
    js, md = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    write_json(js, sweep.to_dict())
    title = f"Sweep: {first.dataset} ({first.split}) · {first.model}\n\n"
    atomic_write_text(md, title + markdown_table(sweep))
    return js, md


def write_best_config(point: SweepPoint, path: Path) -> Path:
    """The full CalibConfig of ``point`` as a TOML file that ``--calib-config`` reads back."""
    from calibclip.atomic import atomic_write_text
    from calibclip.tomlfile import flat_toml

    head = f"# best of a sweep on {point.result.dataset} ({point.result.split}); swept: {json.dumps(point.params)}\n"
    atomic_write_text(Path(path), head + flat_toml(point.result.settings["calibration"]))
    return Path(path)


__all__ = ["SweepPoint", "SweepResult", "grid_points", "markdown_table", "parse_sweeps", "run_sweep",
           "write_best_config", "write_sweep"]
