"""Command-line interface: a thin typer layer over the library modules."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from calibclip.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="calibclip: search images with text (CLIP, CalibCLIP, composed retrieval, evaluation).")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: a UserError becomes one red line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted: everything written so far is kept; run the same command to resume.")
            raise typer.Exit(130) from None

    return wrapper


def _calibration(calib: bool, calib_config: Path | None) -> Any:
    """--calib / --calib-config → CalibConfig or None."""
    if calib_config is not None:
        from calibclip.calib import CalibConfig

        if not calib_config.exists():
            raise UserError(f"--calib-config {calib_config}: no such file.")
        return CalibConfig.from_toml(calib_config)
    if calib:
        from calibclip.calib import CalibConfig

        return CalibConfig()
    return None


def _load_encoder(model: str, device: str, calibration: Any = None) -> Any:
    from calibclip.backends.loading import load

    with console.status(f"loading {model}"):
        return load(model, device=device, calibration=calibration)


@app.command("index")
@user_errors
def index_cmd(
    folder: str = typer.Argument(..., help="Folder of images to index (recursive); with --ray also a manifest "
                                 "(CSV/Parquet/JSONL of paths or URLs) or an fsspec URL such as s3://bucket/images/."),
    model: str = typer.Option(None, "--model", "-m", help="HF model id or local model directory "
                              "(default: the model of an existing index, else the shipped demo model)."),
    out: Path = typer.Option(None, "--out", "-o", help="Index folder (default: FOLDER.idx)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    num_workers: int = typer.Option(None, "--num-workers", min=0, help="Decoding worker processes."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored embedding precision: float16 or float32."),
    calib: bool = typer.Option(False, "--calib", help="Also store CalibCLIP (CVE) image features."),
    calib_config: Path = typer.Option(None, "--calib-config", help="TOML file with CalibConfig fields."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Forget existing embeddings and re-embed everything."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    index_type: str = typer.Option(None, "--index-type", help="exact, ivf-flat, ivf-pq, hnsw or auto (by size and "
                                   "--max-memory); default: as last built, else auto."),
    nlist: int = typer.Option(None, "--nlist", min=1, help="IVF lists (default ≈ √n)."),
    pq_m: int = typer.Option(None, "--m", min=1, help="IVF-PQ bytes per vector (must divide the dimension)."),
    max_memory: str = typer.Option(None, "--max-memory", help="Memory budget of the search index, e.g. 24G."),
    ray: str = typer.Option(None, "--ray", help="Embed on a Ray cluster: local (in-process), auto, or "
                            "ray://head:10001 (needs `pip install 'calibclip[ray]'`)."),
) -> None:
    """Index a folder of images (adds new/changed files only; resumes after an interrupt)."""
    from calibclip.index import Index, default_index_path
    from calibclip.index.store import EmbeddingStore

    if out is None:  # a URL source (s3://bucket/images/) gets ./images.idx
        out = Path(folder.rstrip("/").rsplit("/", 1)[-1] + ".idx") if "://" in folder else default_index_path(folder)
    if model is None and (out / "meta.sqlite").exists():
        model = EmbeddingStore(out).get_info("model")
    model = model or _default_model()
    enc = _load_encoder(model, device, _calibration(calib, calib_config))
    from calibclip.index.ann import parse_memory

    ann_kw = dict(index_type=index_type, nlist=nlist, m=pq_m, max_memory=parse_memory(max_memory))
    if ray is not None:
        from calibclip.index.distributed import index_distributed

        index = index_distributed(folder, enc, model=model, out=out, address=ray, batch_size=batch_size, dtype=dtype,
                                  device=device, progress=not quiet, rebuild=rebuild, **ann_kw)
    else:
        index = Index.build(folder, enc, out=out, batch_size=batch_size, num_workers=num_workers, dtype=dtype,
                            progress=not quiet, rebuild=rebuild, **ann_kw)
    s = index.last_summary
    console.print(f"[green]indexed[/green] {out}: {s.added} added, {s.unchanged} unchanged, {s.removed} removed, "
                  f"{len(s.failed)} skipped, {len(index)} total ({s.images_per_second:.1f} img/s)")
    if s.failed:
        console.print(f"[yellow]{len(s.failed)} file(s) skipped:[/yellow]")
        for path, reason in s.failed:
            console.print(f"  {reason}", highlight=False)
    a = index.ann_report
    if a is not None and a.kind != "flat":
        console.print(f"search index: {a.kind} ({a.factory}), recall@10 {a.recall10:.3f} vs exact on {a.queries} "
                      f"sampled queries{' (unchanged)' if a.reused else f', built in {a.seconds:.1f}s'}")


def _default_model() -> str:
    """The shipped demo model when present, else a clear error asking for --model."""
    try:
        from calibclip.data.synth import shipped_model_dir

        return str(shipped_model_dir())
    except (ImportError, FileNotFoundError, AttributeError):
        raise UserError("no --model given; pass an HF id (e.g. openai/clip-vit-base-patch16) or a local "
                        "model directory.") from None


def print_hits(hits: list, as_json: bool, title: str) -> None:
    """Print hits as a rich table or JSON lines (path, score, rank)."""
    if as_json:
        import json

        typer.echo(json.dumps([h.to_dict() for h in hits], indent=1))
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path", overflow="fold")
    for h in hits:
        table.add_row(str(h.rank), f"{h.score:.4f}", h.path)
    console.print(table)


@app.command("search")
@user_errors
def search_cmd(
    index_path: Path = typer.Argument(..., metavar="INDEX", help="Index folder built by `calibclip index`."),
    query: str = typer.Argument(None, help="Text query (or use --image/--text for composed search)."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: path, score, rank."),
    image: Path = typer.Option(None, "--image", help="Reference image: composed search with --text and --phi, "
                               "or image→image search alone."),
    text: str = typer.Option(None, "--text", help="Modification text for composed search."),
    phi: Path = typer.Option(None, "--phi", help="φ checkpoint (LinCIR / SEARLE / Pic2Word / train-phi)."),
    rtd: Path = typer.Option(None, "--rtd", help="RTD text-encoder checkpoint (from `calibclip rtd train`)."),
    prompt: str = typer.Option("a photo of $ that {}", "--prompt", help="Composed query template."),
    calib: bool = typer.Option(False, "--calib", help="CalibCLIP: DCC query + discriminative re-ranking."),
    calib_config: Path = typer.Option(None, "--calib-config", help="TOML file with CalibConfig fields."),
    reencode: bool = typer.Option(False, "--reencode", help="Re-embed the gallery if its calibration differs."),
    device: str = typer.Option("auto", "--device"),
    nprobe: int = typer.Option(None, "--nprobe", min=1, help="Approximate indexes: IVF lists scanned / HNSW "
                               "efSearch (higher = slower, more accurate); default as built."),
) -> None:
    """Search an index by text, by image, or by image + modification text."""
    from calibclip.index import Index
    from calibclip.images import BadImage, open_image

    index = Index.open(index_path)
    index.nprobe = nprobe
    cfg = _calibration(calib, calib_config)
    enc = _load_encoder(index.store.get_info("model"), device, cfg)
    index.encoder = enc
    if cfg is not None:
        try:
            index._check_calibration(enc)
        except UserError:
            if not reencode:
                raise
            folder = index.store.get_info("folder")
            index.store.close()
            index = Index.build(folder, enc, out=index_path, rebuild=True)
    if rtd is not None:
        from calibclip.cir.rtd import load_rtd

        load_rtd(enc, rtd)
    if image is not None:
        try:
            ref = open_image(image)
        except BadImage as exc:
            raise UserError(f"--image: {exc}") from None
        if text is not None or phi is not None:
            if text is None or phi is None:
                raise UserError("composed search needs --image, --text and --phi together.")
            from calibclip.cir import load_phi

            hits = index.search_composed(ref, text, load_phi(phi), k=top_k, prompt=prompt)
            title = f"{image.name} + \"{text}\""
        else:
            hits = index.search_image(ref, k=top_k)
            title = f"similar to {image.name}"
    else:
        if query is None:
            raise UserError("give a text QUERY, or --image (with --text and --phi for composed search).")
        if len(query) > 10_000:
            raise UserError("the query is longer than 10,000 characters; shorten it.")
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hits = index.search(query, k=top_k)
        for w in caught:
            err_console.print(f"[yellow]warning:[/yellow] {w.message}", highlight=False)
        title = f"\"{query}\""
    print_hits(hits, as_json, title)


from calibclip.serve.command import serve_cmd  # noqa: E402  (imports fastapi only when run)

app.command("serve")(user_errors(serve_cmd))

from calibclip.cir.rtd.cli import rtd_app  # noqa: E402

app.add_typer(rtd_app, name="rtd")

from calibclip.cir.cli import train_phi_cmd  # noqa: E402

app.command("train-phi")(user_errors(train_phi_cmd))

from calibclip.eval.cli import eval_cmd  # noqa: E402  (the runner is imported only when run)

app.command("eval")(user_errors(eval_cmd))

from calibclip.explain import explain_cmd  # noqa: E402

app.command("explain")(user_errors(explain_cmd))


@app.command("synth")
@user_errors
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
        console.print(f"[green]{task}[/green] {path}")


@app.command("demo")
@user_errors
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
            print_hits(q.hits, False, f"[{label}] \"{q.text}\"{ref} — {verdict}")

    report = run_demo(out, seed=seed, top_k=top_k, evaluate=not no_eval,
                      say=(lambda _: None) if quiet else (lambda m: console.print(f"[cyan]•[/cyan] {m}")),
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
    console.print(f"page: {report.html}" + (f"   results: {report.results_md}" if report.results_md else ""))


def main() -> None:
    """Entry point of the `calibclip` console script."""
    app(prog_name="calibclip")


if __name__ == "__main__":
    sys.exit(main())
