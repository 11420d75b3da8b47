"""`calibclip demo` and `calibclip synth`: the shipped synthetic world."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli.common import console, escape, print_hits


def synth_cmd(
    out_dir: Path = typer.Argument(..., help="Folder to write flickr30k/, cuhk-pedes/ and cirr/ into."),
    seed: int = typer.Option(0, "--seed"),
    n_train: int = typer.Option(3000, "--n-train", min=0, help="About this many training images per task."),
    n_test: int = typer.Option(300, "--n-test", min=0, help="About this many val and test images per task."),
) -> None:
    """Generate the synthetic benchmarks (Flickr30K / CUHK-PEDES / CIRR formats), seeded."""
    from calibclip.data.synth import generate_all

    paths = generate_all(out_dir, seed, {"train": n_train, "val": n_test, "test": n_test})
    for task, path in paths.items():
        console.print(f"[green]{task}[/green] {escape(str(path))}")


def demo_cmd(
    out: Path = typer.Option(Path("calibclip-demo"), "--out", "-o",
                             help="Folder for the world, index, page, results."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic world."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="Hits shown per query."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the evaluation on the test splits."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only the final summary."),
) -> None:
    """Offline demo on the shipped synthetic world: index, text/person/composed queries, HTML page, eval table."""
    from rich.table import Table

    from calibclip.demo import results_rows, run_demo

    def show(queries: list) -> None:  # printed before the evaluation starts
        for q in queries:
            found = q.found_rank
            verdict = (f"[green]✓ right answer at rank {found}[/green]" if found
                       else "[red]✗ not in the top hits[/red]")
            label = q.kind + (f" · {q.note}" if q.note else "")
            ref = f" + reference {Path(q.reference).name}" if q.reference else ""
            title = escape(f"[{label}] \"{q.text}\"{ref}") + f" — {verdict}"
            print_hits(q.hits, False, title, table=True, title_markup=True)

    report = run_demo(out, seed=seed, top_k=top_k, evaluate=not no_eval,
                      say=(lambda _: None) if quiet else (lambda m: console.print(f"[cyan]•[/cyan] {escape(m)}")),
                      on_queries=None if quiet else show)
    right = sum(q.found_rank is not None for q in report.queries)
    if report.eval_rows:
        table = Table(title="synthetic test splits (shipped model)", title_justify="left")
        for col, just in (("dataset", "left"), ("metric", "left"), ("base", "right"), ("vs", "left"),
                          ("value", "right"), ("Δ", "right")):
            table.add_column(col, justify=just)
        for ds, m, cfg, a, b in results_rows(report.eval_rows):
            d = "–" if b is None else f"[{'green' if b > a else 'red' if b < a else 'white'}]{b - a:+.2f}[/]"
            table.add_row(ds, m, f"{a:.2f}", cfg, "–" if b is None else f"{b:.2f}", d)
        console.print(table)
    console.print(f"{right}/{len(report.queries)} queries found their right answer in the top {top_k}; "
                  f"{report.seconds:.0f} s")
    console.print(escape(f"page: {report.html}" + (f"   results: {report.results_md}" if report.results_md else "")))
