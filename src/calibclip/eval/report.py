"""Presenting results: a rich table (metrics × configurations, with the delta) and a Markdown results file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table
from rich.text import Text

from calibclip.eval.runner import EvalResult

MD_FIXED = ("dataset", "split", "model", "config")


def metric_keys(results: Sequence[EvalResult]) -> list[str]:
    """Union of metric names, in first-seen order."""
    return list(dict.fromkeys(k for r in results for k in r.metrics))


def results_table(results: Sequence[EvalResult]) -> Table:
    """One row per metric, one column per configuration; with two configurations a Δ column (second − first)."""
    first = results[0]
    # the model may be a path with brackets: the title is plain text, never rich markup
    table = Table(title=Text(f"{first.dataset} ({first.split}) · {first.model}"), title_justify="left")
    table.add_column("metric")
    for r in results:
        table.add_column(r.config, justify="right")
    delta = len(results) == 2
    if delta:
        table.add_column("Δ", justify="right")
    for k in metric_keys(results):
        vals = [r.metrics.get(k) for r in results]
        cells = [f"{v:.2f}" if v is not None else "–" for v in vals]
        if delta:
            if None in vals:
                cells.append("–")
            else:
                d = vals[1] - vals[0]
                color = "green" if d > 0 else "red" if d < 0 else "white"
                cells.append(f"[{color}]{d:+.2f}[/{color}]")
        table.add_row(k, *cells)
    return table


def summary_lines(results: Sequence[EvalResult]) -> list[str]:
    """Where each result was written, its timing, and any notes."""
    lines = []
    for r in results:
        t = r.timing
        cached = " (gallery from cache)" if r.settings.get("gallery_cached") else ""
        lines.append(f"{r.config}: {r.counts['images']} images, {r.counts['queries']} queries; gallery "
                     f"{t['gallery_s']:.1f}s{cached}, queries {t['queries_s']:.1f}s, metrics {t['metrics_s']:.2f}s"
                     + (f" → {r.path}" if r.path else ""))
        lines += [f"  note: {n}" for n in r.notes]
        lines += [f"  submission: {p}" for p in r.submission]
    return lines


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def append_markdown(path: Path, result: EvalResult) -> None:
    """Append ``result`` as a row of a Markdown table; start a new table when the columns differ.

    Written atomically: the whole file is re-written via tmp + rename.
    """
    from calibclip.atomic import atomic_write_text

    path = Path(path)
    keys = list(result.metrics)
    header = _row([*MD_FIXED, *keys])
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    headers = [ln for ln in text.splitlines() if ln.startswith("| dataset |")]
    if not headers or headers[-1] != header:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + header + "\n" + \
            _row(["---"] * (len(MD_FIXED) + len(keys))) + "\n"
    row = _row([result.dataset, result.split, result.model, result.config,
                 *(f"{result.metrics[k]:.2f}" for k in keys)])
    atomic_write_text(path, text + row + "\n")
