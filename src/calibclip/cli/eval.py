"""`calibclip eval`: `eval DATASET …` (short for `eval run DATASET …`) and `eval report FILES…`.

`eval` is a command group so that `report` can sit beside the benchmark runs; a first argument that
is not a sub-command name is taken as `run`'s DATASET, so `calibclip eval flickr30k --root …` keeps
working exactly as before.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer
from typer.core import TyperGroup

from calibclip.cli.common import console, escape, user_errors, warn
from calibclip.errors import UserError


class _EvalGroup(TyperGroup):
    """A group whose default sub-command is `run`: `eval flickr30k …` = `eval run flickr30k …`."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in self.commands and args[0] != "--help":
            args = ["run", *args]
        return super().parse_args(ctx, args)


def default_cache_dir() -> Path:
    """$CALIBCLIP_CACHE/eval, else the per-user cache (~/.cache/calibclip/eval, $XDG_CACHE_HOME honoured)."""
    from calibclip.paths import cache_root

    return cache_root() / "eval"


def eval_cmd(
    dataset: str = typer.Argument(..., help="flickr30k, mscoco, cuhk-pedes, icfg-pedes, rstpreid, cirr, fashioniq, "
                                  "circo, genecis, or pairs (a CSV/JSONL of image,caption given as --root)."),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset folder (official layout), or the pairs file."),
    model: str = typer.Option(..., "--model", "-m", help="HF model id or local model directory."),
    calib: bool = typer.Option(False, "--calib", help="Evaluate with CalibCLIP (CVE gallery, DCC queries)."),
    calib_config: Path = typer.Option(None, "--calib-config",
                                      help="TOML file with CalibConfig fields (implies --calib)."),
    phi: Path = typer.Option(None, "--phi", help="φ checkpoint for composed retrieval (cirr, fashioniq, circo, "
                             "genecis), or `synth` for the one shipped with the synthetic CLIP."),
    rtd: Path = typer.Option(None, "--rtd", help="RTD text-encoder checkpoint (composed retrieval), or `synth`."),
    compare: str = typer.Option(None, "--compare", help="Two or more configurations in one run, e.g. base,calib "
                                "or base,rtd; prints the delta."),
    split: str = typer.Option(None, "--split", help="Split (default: test for TIR/TBPR, val for CIR; GeneCIS: "
                              "change_attribute, focus_attribute, change_object, focus_object or all)."),
    submission: Path = typer.Option(None, "--submission", help="Write the CIRR/CIRCO test-server JSON here."),
    markdown: Path = typer.Option(None, "--markdown", help="Append the result row(s) to this Markdown table file."),
    prompt: str = typer.Option(None, "--prompt", help="Composed query template with '$' for the image's pseudo "
                               "word and '{}' for the text (default: the rtd preset)."),
    prompt_preset: str = typer.Option(None, "--prompt-preset", help="A paper's composed-query protocol: "
                                      "rtd, searle, lincir (\"a photo of $ that {}\", FashionIQ both caption "
                                      "orders) or pic2word (\"a photo of * , {}\", FashionIQ one order)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    precision: str = typer.Option("auto", "--precision", help="fp32, fp16, bf16 (autocast), fp16-weights (weights "
                                  "rounded to fp16, fp32 compute) or auto: on CUDA the benchmark's official one "
                                  "(Flickr30K/MSCOCO fp16 autocast as CLIP_benchmark; CIRR/FashionIQ/CIRCO "
                                  "fp16-weights as the RTD/LinCIR scripts; GeneCIS, TBPR fp32), fp32 on CPU."),
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Where the result JSON files go, "
                                     "named <dataset>-<model>-<config>.json."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the result JSON exactly here instead (with "
                                "--compare: one file holding the list of results); --results-dir is then unused."),
    cache_dir: Path = typer.Option(None, "--cache-dir",
                                   help="Gallery feature cache (default ~/.cache/calibclip/eval)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached gallery features."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    sweep: list[str] = typer.Option(None, "--sweep", help="FIELD=V1,V2,… of CalibConfig (lam, dcc_k, rerank_k, "
                                    "…); repeat for a grid. Writes one table (results/sweep-*.md/.json)."),
    pick_best: str = typer.Option(None, "--pick-best", help="With --sweep: the metric to maximise, e.g. R@1."),
    write_config: Path = typer.Option(None, "--write-config", help="With --pick-best: save the best CalibConfig "
                                      "as TOML (use it with --calib-config)."),
) -> None:
    """Run a benchmark with its official protocol; writes results/<dataset>-<model>-<config>.json or --output."""
    from calibclip.cli.common import shipped_or_path
    from calibclip.eval.report import append_markdown, results_table, summary_lines
    from calibclip.eval.runner import EvalSpec, evaluate, evaluate_many, save_result, write_json

    phi, rtd = shipped_or_path(phi, "--phi"), shipped_or_path(rtd, "--rtd")
    spec = EvalSpec(dataset=dataset, root=root, model=model, split=split, calib_config=calib_config, phi=phi, rtd=rtd,
                    prompt=prompt, prompt_preset=prompt_preset, batch_size=batch_size, device=device,
                    precision=precision, cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
                    results_dir=None if output is not None else results_dir, submission=submission,
                    progress=not quiet)

    if sweep:
        if compare or rtd is not None:
            raise UserError("--sweep varies CalibCLIP settings: drop --compare/--rtd.")
        # run_sweep sets its rows' results_dir and submission to None; the tables go to results_dir
        return _sweep(sweep, pick_best, write_config, replace(spec, mode="calib"), results_dir)
    if pick_best or write_config:
        raise UserError("--pick-best/--write-config need --sweep.")
    if compare:
        modes = [m.strip() for m in compare.split(",") if m.strip()]
        if len(modes) < 2:
            raise UserError("--compare needs at least two configurations, e.g. base,calib.")
        if (calib or calib_config is not None) and "calib" not in modes:
            raise UserError("--calib/--calib-config with --compare: list calib among the configurations.")
    else:
        modes = ["rtd" if rtd is not None else "calib" if (calib or calib_config is not None) else "base"]
    if "rtd" in modes and rtd is None:
        raise UserError("the rtd configuration needs --rtd CKPT.")
    spec = replace(spec, mode=modes[0])
    results = evaluate_many(spec, modes) if len(modes) > 1 else [evaluate(spec)]
    if output is not None:
        if len(results) == 1:
            save_result(results[0], output)
        else:
            import time

            created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            write_json(output, [{**r.to_dict(), "path": str(output), "created": created} for r in results])
            for r in results:
                r.path = output
    console.print(results_table(results))
    for line in summary_lines(results):
        console.print(escape(line), highlight=False)
    if markdown is not None:
        for r in results:
            append_markdown(markdown, r)
        console.print(escape(f"appended {len(results)} row(s) to {markdown}"), highlight=False)


def _sweep(items: list[str], pick_best: str | None, write_config: Path | None, spec, results_dir: Path) -> None:
    """Run a --sweep grid, print and write its table, optionally save the best setting."""
    from calibclip.eval.runner import slug
    from calibclip.eval.sweep import markdown_table, parse_sweeps, run_sweep, write_best_config, write_sweep

    if write_config is not None and not pick_best:
        raise UserError("--write-config needs --pick-best METRIC (e.g. --pick-best R@1).")
    grid = parse_sweeps(items)
    result = run_sweep(spec, grid, say=lambda m: console.print(escape(m), highlight=False))
    first = result.points[0].result
    console.print(escape(markdown_table(result)), highlight=False)
    stem = Path(results_dir) / f"sweep-{first.dataset}.{first.split}-{slug(first.model)}-{'-'.join(grid)}"
    for p in write_sweep(result, stem):
        console.print(f"wrote {escape(str(p))}", highlight=False)
    if pick_best:
        best = result.best(pick_best)
        console.print(f"best {escape(pick_best)} = {best.result.metrics[pick_best]:.2f} at {escape(str(best.params))}"
                      f" (baseline {result.points[0].result.metrics[pick_best]:.2f})", highlight=False)
        if first.split == "test":
            warn("picking settings on the test split over-fits it; sweep a validation split (--split val) and "
                 "report test once with the chosen config.")
        if write_config is not None:
            console.print(f"wrote {escape(str(write_best_config(best, write_config)))}", highlight=False)
def report_cmd(
    files: list[Path] = typer.Argument(..., metavar="RESULT.json...", help="Result files of `calibclip eval` "
                                       "(e.g. results/*.json)."),
    csv: Path = typer.Option(None, "--csv", help="Also write the table as CSV to this file."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown instead of a terminal "
                                  "table."),
) -> None:
    """Aggregate result files into one table: a row per (dataset, model, configuration), a column per metric."""
    from rich.table import Table

    from calibclip.eval.report import load_result_files, markdown_table, report_table, write_csv

    header, rows = report_table(load_result_files(files))
    if markdown:
        typer.echo(markdown_table(header, rows), nl=False)
    else:
        table = Table(title=f"{len(rows)} result(s)", title_justify="left")
        for i, h in enumerate(header):
            table.add_column(escape(h), justify="left" if i < 4 else "right")
        for r in rows:
            table.add_row(*(escape(c) for c in r))
        console.print(table)
    if csv is not None:
        write_csv(csv, header, rows)
        console.print(f"wrote {csv}", highlight=False, markup=False)


eval_app = typer.Typer(cls=_EvalGroup, add_completion=False, no_args_is_help=True,
                       help="Benchmarks: `calibclip eval DATASET --root DIR --model M` runs one (same as `eval run`); "
                            "`calibclip eval report results/*.json` aggregates result files into one table.")
eval_app.command("run")(user_errors(eval_cmd))
eval_app.command("report")(user_errors(report_cmd))
