"""`calibclip index` and `calibclip search`."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli import common
from calibclip.cli.common import console, escape, print_hits
from calibclip.errors import UserError


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
    follow_symlinks: bool = typer.Option(None, "--follow-symlinks/--no-follow-symlinks", show_default=False,
                                         help="Also index symlinks that point outside FOLDER (default: as last "
                                         "built, else no: they are skipped with a warning; links inside FOLDER "
                                         "are always followed)."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash every file and re-embed those whose bytes "
                                "changed although size and mtime did not."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Fail at once when another `calibclip index` is "
                                 "writing the same index (default: wait for it)."),
) -> None:
    """Index a folder of images (adds new/changed files only; resumes after an interrupt)."""
    from calibclip.index import Index, default_index_path
    from calibclip.index.store import EmbeddingStore

    if ray is None and not Path(folder).is_dir():  # before the model loads: fail fast
        raise UserError(f"{folder}: not a directory; pass the folder of images to index.")
    if out is None:  # a URL source (s3://bucket/images/) gets ./images.idx
        out = Path(folder.rstrip("/").rsplit("/", 1)[-1] + ".idx") if "://" in folder else default_index_path(folder)
    if model is None and (out / "meta.sqlite").exists():
        try:
            store = EmbeddingStore(out)
        except UserError:
            if not rebuild:  # a damaged index: --rebuild starts it afresh
                raise
        else:
            model = store.get_info("model")
            store.close()
    model = model or common.default_model()
    enc = common.load_encoder(model, device, common.calibration(calib, calib_config))
    common.note_shipped_model(enc)
    from calibclip.index.ann import parse_memory

    ann_kw = dict(index_type=index_type, nlist=nlist, m=pq_m, max_memory=parse_memory(max_memory))
    if ray is not None:
        from calibclip.index.distributed import index_distributed

        index = index_distributed(folder, enc, model=model, out=out, address=ray, batch_size=batch_size, dtype=dtype,
                                  device=device, progress=not quiet, rebuild=rebuild, wait=not no_wait, **ann_kw)
    else:
        index = Index.build(folder, enc, out=out, batch_size=batch_size, num_workers=num_workers, dtype=dtype,
                            progress=not quiet, rebuild=rebuild, follow_symlinks=follow_symlinks, verify=verify,
                            wait=not no_wait, **ann_kw)
    s = index.last_summary
    for line in s.links_skipped:
        common.warn(line)
    console.print(f"[green]indexed[/green] {escape(str(out))}: {s.added} added, {s.unchanged} unchanged, {s.removed} removed, "
                  f"{len(s.failed)} skipped, {len(index)} total ({s.images_per_second:.1f} img/s)")
    if s.failed:
        console.print(f"[yellow]{len(s.failed)} file(s) skipped:[/yellow]")
        for path, reason in s.failed:
            console.print(f"  {escape(reason)}", highlight=False)
    a = index.ann_report
    if a is not None and a.kind != "flat":
        console.print(f"search index: {a.kind} ({a.factory}), recall@10 {a.recall10:.3f} vs exact on {a.queries} "
                      f"sampled queries{' (unchanged)' if a.reused else f', built in {a.seconds:.1f}s'}")



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
    prompt: str = typer.Option(None, "--prompt", help="Composed query template with '$' for the image's pseudo "
                               "word and '{}' for the text (default: the rtd preset)."),
    prompt_preset: str = typer.Option(None, "--prompt-preset", help="A paper's composed-query protocol: "
                                      "rtd, searle, lincir (\"a photo of $ that {}\", FashionIQ both caption "
                                      "orders) or pic2word (\"a photo of * , {}\", FashionIQ one order)."),
    calib: bool = typer.Option(False, "--calib", help="CalibCLIP: DCC query + discriminative re-ranking."),
    calib_config: Path = typer.Option(None, "--calib-config", help="TOML file with CalibConfig fields."),
    reencode: bool = typer.Option(False, "--reencode", help="Re-embed the gallery if its calibration differs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    model: str = typer.Option(None, "--model", "-m", help="The index's model in another place (HF id or local "
                              "folder); refused unless it is the same model (fingerprint and dimension)."),
    nprobe: int = typer.Option(None, "--nprobe", min=1, help="Approximate indexes: IVF lists scanned / HNSW "
                               "efSearch (higher = slower, more accurate); default as built."),
) -> None:
    """Search an index by text, by image, or by image + modification text."""
    from calibclip.index import Index
    from calibclip.images import BadImage, open_image

    index = Index.open(index_path)
    index.nprobe = nprobe
    cfg = common.calibration(calib, calib_config)
    enc = common.load_encoder(model or index.model_to_load(), device, cfg)
    index.check_model(enc)
    common.note_shipped_model(enc)
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
            from calibclip.cir.prompts import resolve_prompt

            proto = resolve_prompt(prompt, prompt_preset)
            hits = index.search_composed(ref, text, load_phi(phi), k=top_k, prompt=proto.prompt)
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
        common.print_warnings(caught)
        title = f"\"{query}\""
    print_hits(hits, as_json, title)
