"""Presenting results: a rich table (metrics × configurations, with the delta), a Markdown results file,
and ``calibclip eval report``: many result JSON files aggregated into one table (CLIP_benchmark's ``build``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape
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
        table.add_column(escape(r.label or r.config), justify="right")
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
        lines.append(f"{r.label or r.config}: {r.counts['images']} images, {r.counts['queries']} queries; gallery "
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


# ---------------------------------------------------------------------------------------------- eval report
REPORT_FIXED = ("dataset", "split", "model", "configuration")


def load_result_files(paths: Sequence[Path]) -> list[dict]:
    """Result dicts from JSON files written by ``calibclip eval`` (one result, or a list from ``--output``
    with ``--compare``); a file that is not a result is a UserError naming it."""
    import json

    from calibclip.errors import UserError

    out = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{p}: no such file.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{p}: not a JSON result file ({exc}).") from None
        for r in data if isinstance(data, list) else [data]:
            if not (isinstance(r, dict) and isinstance(r.get("metrics"), dict) and "dataset" in r):
                raise UserError(f"{p}: not a `calibclip eval` result (needs dataset and metrics).")
            out.append(r)
    if not out:
        raise UserError("no results to report; give result JSON files, e.g. results/*.json.")
    return out


def _model_name(model: str) -> str:
    """A local model folder by its last component, an HF id as it is."""
    p = Path(str(model).rstrip("/"))
    return p.name if str(model).startswith((".", "/", "~")) else str(model)


def report_table(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per result, grouped by dataset, split, model (stable: configurations keep the
    order of the files); one column per metric
    (union, first-seen order; "–" where a dataset lacks it), values with two decimals."""
    keys = list(dict.fromkeys(k for r in results for k in r["metrics"]))
    rows = []
    for r in sorted(results, key=lambda r: (r["dataset"], str(r.get("split")), str(r.get("model")))):
        cells = [r["dataset"], str(r.get("split", "")), _model_name(r.get("model", "")),
                 str(r.get("label") or r.get("config", ""))]
        rows.append(cells + [f"{r['metrics'][k]:.2f}" if k in r["metrics"] else "–" for k in keys])
    return [*REPORT_FIXED, *keys], rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def cell(c: str) -> str:
        return str(c).replace("|", "\\|")

    lines = [_row([cell(c) for c in header]), _row(["---"] * len(header))]
    lines += [_row([cell(c) for c in r]) for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    """The table as CSV (atomic)."""
    import csv
    import io

    from calibclip.atomic import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return atomic_write_text(Path(path), buf.getvalue())
