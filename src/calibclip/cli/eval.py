"""`calibclip eval`."""

from __future__ import annotations

from pathlib import Path

import typer
from calibclip.cli.common import console, escape
from calibclip.errors import UserError


def default_cache_dir() -> Path:
    """$CALIBCLIP_CACHE/eval, else ~/.cache/calibclip/eval."""
    import os

    base = os.environ.get("CALIBCLIP_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "calibclip") / "eval"


def eval_cmd(
    dataset: str = typer.Argument(..., help="flickr30k, mscoco, cuhk-pedes, icfg-pedes, rstpreid, cirr, fashioniq, "
                                  "circo, genecis, or pairs (a CSV/JSONL of image,caption given as --root)."),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset folder (official layout), or the pairs file."),
    model: str = typer.Option(..., "--model", "-m", help="HF model id or local model directory."),
    calib: bool = typer.Option(False, "--calib", help="Evaluate with CalibCLIP (CVE gallery, DCC queries)."),
    calib_config: Path = typer.Option(None, "--calib-config",
                                      help="TOML file with CalibConfig fields (implies --calib)."),
    phi: Path = typer.Option(None, "--phi",
                             help="φ checkpoint for composed retrieval (cirr, fashioniq, circo, genecis)."),
    rtd: Path = typer.Option(None, "--rtd", help="RTD text-encoder checkpoint (composed retrieval)."),
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
    results_dir: Path = typer.Option(Path("results"), "--results-dir", help="Where the result JSON files go."),
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
    """Evaluate a model on a benchmark with its official protocol; writes results/<dataset>-<model>-<config>.json."""
    from calibclip.eval.report import append_markdown, results_table, summary_lines
    from calibclip.eval.runner import EvalSpec, evaluate, evaluate_many

    if sweep:
        if compare or rtd is not None:
            raise UserError("--sweep varies CalibCLIP settings: drop --compare/--rtd.")
        return _sweep(sweep, pick_best, write_config, EvalSpec(
            dataset=dataset, root=root, model=model, mode="calib", split=split, calib_config=calib_config, phi=phi,
            prompt=prompt, prompt_preset=prompt_preset, batch_size=batch_size, device=device, precision=precision,
            progress=not quiet, cache_dir=None if no_cache else (cache_dir or default_cache_dir())), results_dir)
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
    spec = EvalSpec(dataset=dataset, root=root, model=model, mode=modes[0], split=split, calib_config=calib_config,
                    phi=phi, rtd=rtd, prompt=prompt, prompt_preset=prompt_preset, batch_size=batch_size, device=device,
                    precision=precision, cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
                    results_dir=results_dir,
                    submission=submission, progress=not quiet)
    results = evaluate_many(spec, modes) if len(modes) > 1 else [evaluate(spec)]
    console.print(results_table(results))
    for line in summary_lines(results):
        console.print(escape(line), highlight=False)
    if markdown is not None:
        for r in results:
            append_markdown(markdown, r)
        console.print(escape(f"appended {len(results)} row(s) to {markdown}"), highlight=False)


def _sweep(items: list[str], pick_best: str | None, write_config: Path | None, spec, results_dir: Path) -> None:
    """Run a --sweep grid, print and write its table, optionally save the best setting."""
    from rich.markup import escape

    from calibclip.cli.common import err_console
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
            err_console.print("[yellow]warning:[/yellow] picking settings on the test split over-fits it; sweep a "
                              "validation split (--split val) and report test once with the chosen config.",
                              highlight=False)
        if write_config is not None:
            console.print(f"wrote {escape(str(write_best_config(best, write_config)))}", highlight=False)
