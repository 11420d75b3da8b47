"""`calibclip reproduce`: the papers' published rows, run and printed beside the published numbers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from calibclip.cli.common import console, err_console
from calibclip.errors import UserError


def reproduce_cmd(
    rows: list[str] = typer.Argument(None, help="Row ids, globs (rtd-cirr-*) or id prefixes; `list` [PATTERN…] "
                                     "shows the rows and what each needs."),
    data_root: Path = typer.Option(None, "--data-root", "-d", help="Folder holding the datasets, one sub-folder "
                                   "each (flickr30k/, CUHK-PEDES/, cirr/, …; `reproduce list` names them)."),
    weights: Path = typer.Option(None, "--weights", "-w", help="Folder with model folders and φ / RTD checkpoints "
                                 "by their release names (HF ids are also found in the HF cache)."),
    out: Path = typer.Option(Path("reproduce"), "--out", "-o", help="Where reproduce.json/.md and the per-row "
                             "result JSONs go."),
    preset: list[Path] = typer.Option(None, "--preset", help="Extra preset TOML file(s) with [[row]] entries."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Gallery feature cache (default ~/.cache/calibclip/eval)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached gallery features."),
    check: bool = typer.Option(False, "--check", help="Exit 1 when any |Δ| exceeds its row's tolerance."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run published rows of CalibCLIP / RTD (and the synthetic world) and print measured | published | Δ."""
    from calibclip.reproduce import load_rows, select_rows

    all_rows = load_rows(list(preset or []))
    patterns = list(rows or [])
    if not patterns or patterns[0] == "list":
        chosen = select_rows(all_rows, patterns[1:]) if patterns[1:] else all_rows
        return _list(chosen, data_root, weights)
    if data_root is None:
        raise UserError("reproduce: pass --data-root DIR (the folder holding the datasets); "
                        "`calibclip reproduce list` shows what each row needs.")
    from calibclip.cli.eval import default_cache_dir
    from calibclip.reproduce import reproduce, write_report

    chosen = select_rows(all_rows, patterns)
    outcomes = reproduce(chosen, data_root, weights, out, None if no_cache else (cache_dir or default_cache_dir()),
                         device, progress=not quiet, say=lambda m: console.print(f"[cyan]•[/cyan] {escape(m)}"))
    ran = [o for o in outcomes if o.ran]
    if ran:
        console.print(_table(ran))
        for o in ran:
            for n in o.notes:
                console.print(f"  {escape(o.row.id)}: {escape(n)}", highlight=False)
    for o in outcomes:
        if not o.ran:
            err_console.print(f"[yellow]not run[/yellow] {escape(o.row.id)}: " + escape("; ".join(o.missing)),
                              highlight=False)
    if not ran:
        raise UserError(f"reproduce: none of the {len(outcomes)} row(s) could run (inputs missing, listed above).")
    js, md = write_report(outcomes, out)
    bad = [o.row.id for o in ran if o.exceeded]
    console.print(f"{len(ran)} row(s) run, {len(outcomes) - len(ran)} not run; {len(bad)} with |Δ| above tolerance"
                  f" → {escape(str(md))}, {escape(str(js))}", highlight=False)
    if check and bad:
        raise typer.Exit(1)


def _table(outcomes: list) -> "Table":  # noqa: F821
    from rich.table import Table

    from calibclip.reproduce.run import cell

    table = Table(title="measured vs published", title_justify="left")
    for col, just in (("row", "left"), ("metric", "left"), ("measured", "right"), ("published", "right"),
                      ("Δ", "right"), ("", "left")):
        table.add_column(col, justify=just)
    for o in outcomes:
        for i, c in enumerate(o.comparison()):
            meas, pub = cell(c["measured"]), cell(c["published"])
            if c["delta"] is None:
                delta, mark = "–", ""
            else:
                color = "red" if c["exceeds"] else "green"
                delta, mark = f"[{color}]{c['delta']:+.2f}[/{color}]", ("[red]✗ > ±%g[/red]" % o.row.tolerance
                                                                       if c["exceeds"] else "[green]✓[/green]")
            table.add_row(escape(o.row.id) if i == 0 else "", escape(c["metric"]), meas, pub, delta, mark)
    return table


def _list(rows: list, data_root: Path | None, weights: Path | None) -> None:
    """The rows, what each needs, and (with --data-root) what is still missing."""
    from rich.table import Table

    from calibclip.reproduce.run import LAYOUT, check_inputs

    table = Table(title=f"{len(rows)} preset row(s)", title_justify="left")
    for col in ("row", "dataset / split", "model", "φ / RTD", "published", "needs" if data_root is None else "missing"):
        table.add_column(col, overflow="fold")
    seen: dict = {}  # each benchmark read once, however many rows share it
    for r in rows:
        ckpts = " / ".join(x for x in (r.phi, r.rtd) if x) or "–"
        pub = f"{len(r.published)}/{len(r.metrics)} metrics" if r.published else "not found"
        if data_root is None:
            need = f"{r.data_dir}/: {LAYOUT.get(r.dataset, '')}"
        else:
            missing = check_inputs(r, data_root, weights, seen).missing
            need = "; ".join(missing) if missing else "[green]ready[/green]"
        table.add_row(escape(r.id), f"{r.dataset} / {r.split}", escape(r.model), escape(ckpts), pub,
                      need if need.startswith("[green]") else escape(need))
    console.print(table)
