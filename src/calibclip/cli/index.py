"""`calibclip index` and `calibclip search`."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli import common
from calibclip.cli.common import console, err_console, escape, print_hits
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



def _open_target(target: Path, model: str | None, cfg: object, device: str, no_index: bool, quiet: bool,
                 reencode: bool) -> object:
    """The Index to search: an index folder as it is, or a plain folder indexed into the per-user cache."""
    from calibclip.index import Index

    if (target / "meta.sqlite").exists():
        index = Index.open(target)
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
                index = Index.build(folder, enc, out=target, rebuild=True)
        return index
    if not target.is_dir():
        raise UserError(f"{target}: no such index or folder; give an index built by `calibclip index`, or a "
                        "folder of images to index and search in one go.")
    from calibclip.paths import folder_index_path

    model = model or common.default_model()
    variant = "cve-" + cfg.image_fingerprint() if cfg is not None and cfg.to_dict().get("cve") else ""
    cached = folder_index_path(target, model, variant)
    enc = common.load_encoder(model, device, cfg)
    common.note_shipped_model(enc)
    if no_index:
        if not (cached / "meta.sqlite").exists():
            raise UserError(f"{target}: not indexed yet for model '{model}' (cache {cached}); run the same "
                            "search without --no-index once.")
        return Index.open(cached, enc)
    index = Index.build(target, enc, out=cached, progress=not quiet and err_console.is_terminal)
    s = index.last_summary
    if s.added or s.removed or s.failed:
        err_console.print(f"indexed {target}: {s.added} added, {s.removed} removed, {len(s.failed)} skipped, "
                          f"{len(index)} total (index: {cached})", highlight=False, markup=False)
    return index


def search_cmd(
    target: Path = typer.Argument(..., metavar="INDEX|FOLDER", help="Index folder built by `calibclip index`, or "
                                  "a plain folder of images: indexed incrementally into the per-user cache "
                                  "($XDG_CACHE_HOME/calibclip) first, then searched."),
    query: str = typer.Argument(None, help="Text query (or --like / --image, with --text and --phi for composed "
                                "search)."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="At most this many results."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output: path, score, rank, id."),
    paths_only: bool = typer.Option(False, "--paths", "-f", help="Only the matching paths, one per line."),
    min_score: float = typer.Option(None, "--min-score", help="Drop results scoring below S."),
    cutoff: str = typer.Option(None, "--cutoff", help="auto: keep only results that stand out from this query's "
                               "score distribution over the gallery (score ≥ mean + 2·std); a number sets "
                               "the z (e.g. 2.5)."),
    like: Path = typer.Option(None, "--like", help="Images similar to this one (an indexed image, or any file); "
                              "the reference itself is left out unless --keep-reference."),
    image: Path = typer.Option(None, "--image", help="Reference image: composed search with --text and --phi, "
                               "or image→image search alone (same as --like)."),
    text: str = typer.Option(None, "--text", help="Modification text for composed search."),
    phi: Path = typer.Option(None, "--phi", help="φ checkpoint (LinCIR / SEARLE / Pic2Word / train-phi), or "
                             "`synth` for the one shipped with the synthetic CLIP."),
    rtd: Path = typer.Option(None, "--rtd", help="RTD text-encoder checkpoint (from `calibclip rtd train`), or "
                             "`synth` for the shipped one."),
    prompt: str = typer.Option(None, "--prompt", help="Composed query template with '$' for the image's pseudo "
                               "word and '{}' for the text (default: the rtd preset)."),
    prompt_preset: str = typer.Option(None, "--prompt-preset", help="A paper's composed-query protocol: "
                                      "rtd, searle, lincir (\"a photo of $ that {}\", FashionIQ both caption "
                                      "orders) or pic2word (\"a photo of * , {}\", FashionIQ one order)."),
    keep_reference: bool = typer.Option(False, "--keep-reference", help="Keep the reference image among the "
                                        "results of --like / --image searches."),
    copy_to: Path = typer.Option(None, "--copy-to", help="Copy the matching files into this folder (same names; "
                                 "-1, -2 … added rather than overwriting a different file)."),
    link_to: Path = typer.Option(None, "--link-to", help="Symlink the matching files into this folder."),
    model: str = typer.Option(None, "--model", "-m", help="HF id or local directory. A plain FOLDER is indexed "
                              "with it (default: the shipped demo model); for an INDEX it names the index's own "
                              "model in another place, refused unless it is the same model (fingerprint, dimension)."),
    no_index: bool = typer.Option(False, "--no-index", help="FOLDER: search the cached index as it is, without "
                                  "scanning for new or changed files."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No indexing progress bar."),
    calib: bool = typer.Option(False, "--calib", help="CalibCLIP: DCC query + discriminative re-ranking."),
    calib_config: Path = typer.Option(None, "--calib-config", help="TOML file with CalibConfig fields."),
    reencode: bool = typer.Option(False, "--reencode", help="Re-embed the gallery if its calibration differs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    nprobe: int = typer.Option(None, "--nprobe", min=1, help="Approximate indexes: IVF lists scanned / HNSW "
                               "efSearch (higher = slower, more accurate); default as built."),
) -> None:
    """Search images by text, by example image, or by image + modification text (an index, or a plain folder)."""
    import warnings

    from calibclip.images import BadImage, open_image
    from calibclip.index.cutoff import parse_cutoff

    if image is not None and like is not None:
        raise UserError("give one reference image: --like or --image, not both.")
    if copy_to is not None and link_to is not None:
        raise UserError("give --copy-to or --link-to, not both.")
    if as_json and paths_only:
        raise UserError("give --json or --paths, not both.")
    ref = like if like is not None else image
    if ref is None and query is None:
        raise UserError("give a text QUERY, or --like IMAGE (with --text and --phi for composed search).")
    if ref is None and text is not None:
        raise UserError("--text is the modification of a reference image: add --like IMAGE (and --phi).")
    if query is not None and len(query) > 10_000:
        raise UserError("the query is longer than 10,000 characters; shorten it.")
    parse_cutoff(cutoff)  # a bad value fails before the model loads
    phi, rtd = common.shipped_or_path(phi, "--phi"), common.shipped_or_path(rtd, "--rtd")
    cfg = common.calibration(calib, calib_config)
    index = _open_target(target, model, cfg, device, no_index, quiet, reencode)
    index.nprobe = nprobe
    if rtd is not None:
        from calibclip.cir.rtd import load_rtd

        load_rtd(index.encoder, rtd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if ref is not None:
            if text is not None or phi is not None:
                if text is None or phi is None:
                    raise UserError("composed search needs a reference (--like/--image), --text and --phi together.")
                from calibclip.cir import load_phi
                from calibclip.cir.prompts import resolve_prompt

                proto = resolve_prompt(prompt, prompt_preset)
                try:
                    ref_img = open_image(ref)
                except BadImage as exc:
                    raise UserError(f"{'--like' if like is not None else '--image'}: {exc}") from None
                ref_id = None if keep_reference else index.find(ref)
                hits = index.search_composed(ref_img, text, load_phi(phi), k=top_k, prompt=proto.prompt, cutoff=cutoff,
                                             exclude=() if ref_id is None else (ref_id,))
                title = f"{ref.name} + \"{text}\""
            else:
                hits = index.search_like(ref, k=top_k, cutoff=cutoff, keep_reference=keep_reference)
                title = f"similar to {ref.name}"
        else:
            hits = index.search(query, k=top_k, cutoff=cutoff)
            title = f"\"{query}\""
    common.print_warnings(caught)
    if min_score is not None:
        hits = [h for h in hits if h.score >= min_score]
    print_hits(hits, as_json, title, paths_only=paths_only)
    if copy_to is not None or link_to is not None:
        from calibclip.index.export import export_files

        written = export_files([h.path for h in hits], copy_to or link_to, link=link_to is not None)
        err_console.print(f"{'linked' if link_to is not None else 'copied'} {len(written)} file(s) into "
                          f"{copy_to or link_to}", highlight=False, markup=False)
