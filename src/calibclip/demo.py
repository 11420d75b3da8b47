"""`calibclip demo`: the whole toolkit, offline, in about a minute, on the shipped synthetic world.

1. writes a small synthetic world (``make_demo_world``): a mixed gallery folder of scenes, people
   and CIR image sets, plus test splits in the Flickr30K / CUHK-PEDES / CIRR formats;
2. indexes the gallery with the shipped small CLIP through the ordinary ``Index.build``;
3. runs text, person and composed queries whose right answers the generator knows, prints the top
   hits and where the right answer ranked (the demo checks itself);
4. writes ``demo.html`` with the image grids (right answers outlined in green);
5. evaluates the test splits through the ordinary eval runner: base vs CalibCLIP on text→image and
   person retrieval, LinCIR φ vs φ + RTD on composed retrieval; prints the table, writes results.md.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibclip.errors import UserError

TEXT_SCENES = (3, 17, 42, 88)  # demo-gallery scenes whose first caption is a text query
PERSON_IDS = (2, 11, 25)  # demo-gallery identities described by one of their captions
EDIT_SETS = (0, 5, 9)  # CIR sets: reference (member 0) + the edit text of their first pair


@dataclass
class DemoQuery:
    """One query of the demo, its right answers (gallery paths) and what came back."""

    kind: str  # "text" | "person" | "composed"
    text: str
    truth: set[str]
    reference: str | None = None
    hits: list[Any] = field(default_factory=list)  # calibclip.index.Hit, best first
    note: str = ""  # e.g. "φ + RTD"

    @property
    def found_rank(self) -> int | None:
        """Rank of the first right answer in the hits, or None."""
        return next((h.rank for h in self.hits if h.path in self.truth), None)


@dataclass
class DemoReport:
    """What the demo produced."""

    out: Path
    queries: list[DemoQuery]
    html: Path
    results_md: Path | None = None
    eval_rows: list[Any] = field(default_factory=list)  # EvalResult
    seconds: float = 0.0


def check_out_dir(out: Path) -> Path:
    """The demo folder: created if missing; an existing file is refused."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pass a folder for the demo (it is created if missing).")
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_queries(gallery: Path, seed: int) -> list[DemoQuery]:
    """Text, person and composed queries with their right answers, from the generator's own items."""
    from calibclip.data.synth import cir_item, tbpr_item, tir_item

    queries = [DemoQuery("text", tir_item(seed, "demo", i).captions[0],
                         {str(gallery / "scenes" / f"scene_{i:04d}.png")}) for i in TEXT_SCENES]
    for pid in PERSON_IDS:
        item = tbpr_item(seed, "demo", pid)
        truth = {str(gallery / "people" / f"person_{pid:03d}_{k}.png") for k in range(len(item.shots))}
        queries.append(DemoQuery("person", item.shots[0].captions[0], truth))
    for s in EDIT_SETS:
        _, target, text = cir_item(seed, "demo", s).pairs[0]
        queries.append(DemoQuery("composed", text, {str(gallery / "edits" / f"set_{s:03d}_{target}.png")},
                                 reference=str(gallery / "edits" / f"set_{s:03d}_0.png")))
    return queries


def run_queries(index: Any, queries: list[DemoQuery], k: int, phi: Any, rtd: Path | None) -> list[DemoQuery]:
    """Search every query; composed ones with φ, then again with φ + RTD (the RTD tower swapped in last)."""
    from PIL import Image

    done = []
    for q in queries:
        if q.kind != "composed":
            q.hits = index.search(q.text, k=k)
            done.append(q)
    composed = [q for q in queries if q.kind == "composed"]
    if phi is None or not composed:
        return done
    runs = [("LinCIR φ", None)] + ([("LinCIR φ + RTD", rtd)] if rtd is not None else [])
    for note, ckpt in runs:
        if ckpt is not None:
            from calibclip.cir.rtd import load_rtd

            load_rtd(index.encoder, ckpt)  # in place: text queries above were already answered
        for q in composed:
            ref_id = index.find(q.reference)  # CIRR protocol: never the reference
            with Image.open(q.reference) as im:
                hits = index.search_composed(im.convert("RGB"), q.text, phi, k=k,
                                             exclude=() if ref_id is None else (ref_id,))
            done.append(DemoQuery(q.kind, q.text, q.truth, q.reference, hits, note))
    return done


def _thumb(path: str, base: Path, css: str = "", caption: str = "") -> str:
    src = html.escape(os.path.relpath(path, base))
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure class="{css}"><img src="{src}" alt="{html.escape(Path(path).name)}">{cap}</figure>'


def _eval_html(groups: list[list[Any]]) -> str:
    if not groups:
        return ""
    rows = "".join(f"<tr><td>{html.escape(ds)}</td><td>{html.escape(m)}</td><td>{a:.2f}</td><td>{html.escape(cfg)}</td>"
                   + ("<td>–</td><td>–</td>" if b is None else f"<td>{b:.2f}</td><td>{b - a:+.2f}</td>") + "</tr>"
                   for ds, m, cfg, a, b in results_rows(groups))
    return ("<h2>Evaluation on the synthetic test splits</h2><table><tr><th>dataset</th><th>metric</th><th>base</th>"
            f"<th>compared with</th><th>value</th><th>Δ</th></tr>{rows}</table>")


def write_html(queries: list[DemoQuery], out: Path, groups: list[list[Any]] | None = None) -> Path:
    """``out/demo.html``: per query, the query (and reference) and a grid of its hits, right ones outlined;
    then the evaluation table when ``groups`` (eval rows) are given."""
    from calibclip.atomic import atomic_write_text

    parts = []
    for q in queries:
        found = q.found_rank
        verdict = f"✓ right answer at rank {found}" if found else "✗ right answer not in the top hits"
        ref = _thumb(q.reference, out, "ref", "reference") if q.reference else ""
        grid = "".join(_thumb(h.path, out, "hit ok" if h.path in q.truth else "hit",
                              f"#{h.rank} · {h.score:.3f}") for h in q.hits)
        label = q.kind + (f" · {q.note}" if q.note else "")
        parts.append(f'<section><h2><span class="kind">{html.escape(label)}</span> {html.escape(q.text)}</h2>'
                     f'<p class="{"good" if found else "bad"}">{verdict}</p><div class="row">{ref}{grid}</div>'
                     f"</section>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>calibclip demo</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
section {{ margin-bottom: 1.6em; }} h2 {{ font-size: 1.05em; margin: 0.2em 0; }}
.kind {{ background: #eef; border-radius: 4px; padding: 0 6px; font-weight: normal; }}
.row {{ display: flex; gap: 8px; flex-wrap: wrap; }}
figure {{ margin: 0; text-align: center; font-size: 0.8em; }}
img {{ width: 96px; height: 96px; image-rendering: pixelated; border: 3px solid #ddd; }}
.ok img {{ border-color: #1a1; }} .ref img {{ border-color: #36c; }}
.good {{ color: #1a1; margin: 0; }} .bad {{ color: #c22; margin: 0; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
</style></head><body>
<h1>calibclip demo</h1>
<p>Gallery indexed with the shipped synthetic CLIP. Green: a right answer; blue: the reference image
of a composed query (never returned).</p>
{"".join(parts)}
{_eval_html(groups or [])}
</body></html>
"""
    path = out / "demo.html"
    atomic_write_text(path, page)
    return path


def run_eval(world: dict[str, Path], out: Path, model: str, phi: Path | None, rtd: Path | None) -> list[list[Any]]:
    """Eval rows per benchmark: [base, calib] for flickr30k and cuhk-pedes; [φ, φ + RTD] for cirr."""
    from calibclip.eval.runner import EvalSpec, evaluate_many

    common = dict(model=model, split="test", device="cpu", cache_dir=out / "cache", results_dir=out / "results",
                  progress=False)
    groups = [evaluate_many(EvalSpec(dataset=name, root=world[task], **common), ["base", "calib"])
              for task, name in (("tir", "flickr30k"), ("tbpr", "cuhk-pedes"))]
    if phi is not None:
        modes = ["base", "rtd"] if rtd is not None else ["base"]
        groups.append(evaluate_many(EvalSpec(dataset="cirr", root=world["cir"], phi=phi, rtd=rtd, **common), modes))
    return groups


KEY_METRICS = {"flickr30k": ("t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_R@1"),
               "cuhk-pedes": ("R@1", "R@5", "R@10", "mAP"), "cirr": ("R@1", "R@5", "R@10", "Rsubset@1")}


def results_rows(groups: list[list[Any]]) -> list[tuple[str, str, str, float, float | None]]:
    """(dataset, metric, second config, first value, second value) rows of the combined table."""
    rows = []
    for group in groups:
        first, second = group[0], (group[1] if len(group) > 1 else None)
        for m in KEY_METRICS.get(first.dataset, tuple(first.metrics)):
            rows.append((first.dataset, m, (second.label or second.config) if second else "–", first.metrics[m],
                         second.metrics[m] if second else None))
    return rows


README_TEST_IMAGES = 1000  # scripts/synth_benchmark_table.py --n-test default, the README table's test splits


def write_results_md(groups: list[list[Any]], path: Path) -> Path:
    """The combined table as Markdown (atomic), with what each row compares and why the README's numbers differ."""
    from calibclip.atomic import atomic_write_text

    lines = ["| dataset | metric | base | compared with | value | Δ |", "|---|---|---|---|---|---|"]
    for ds, m, cfg, a, b in results_rows(groups):
        tail = "– | – |" if b is None else f"{b:.2f} | {b - a:+.2f} |"
        lines.append(f"| {ds} | {m} | {a:.2f} | {cfg} | {tail}")
    sizes = ", ".join(f"{g[0].dataset} {g[0].counts['images']} images / {g[0].counts['queries']} queries"
                      for g in groups)
    what = {"flickr30k": "text→image retrieval (Flickr30K format)", "cuhk-pedes": "text-based person retrieval "
            "(CUHK-PEDES format)", "cirr": "composed retrieval (CIRR format, full-gallery recall and Recall_subset)"}
    rows = [f"- **{g[0].dataset}**, {what.get(g[0].dataset, g[0].dataset)}: *base* is "
            f"“{g[0].label or g[0].config}”" + (f", *compared with* is “{g[1].label or g[1].config}”" if len(g) > 1
                                                 else "") + "." for g in groups]
    notes = ["", "What the rows are (shipped synthetic CLIP, seed-0 synthetic test splits, values in %):", *rows,
             "- *CalibCLIP* = CVE gallery features + DCC queries + discriminative re-ranking (CalibConfig defaults); "
             "*φ* = the shipped LinCIR projection; *RTD* = the shipped RTD-fine-tuned text tower.",
             "",
             f"Test-split sizes here: {sizes}. The README's table (`python scripts/synth_benchmark_table.py`) "
             f"evaluates {README_TEST_IMAGES:,} test images per task, so its numbers differ from these: with a "
             "smaller gallery each query has fewer distractors and every recall is higher. The per-file results "
             "(every metric, settings, timing) are in `results/*.json`; aggregate them with "
             "`calibclip eval report results/*.json`."]
    atomic_write_text(path, "\n".join(lines + notes) + "\n")
    return path


def run_demo(out: Path, seed: int = 0, top_k: int = 5, evaluate: bool = True,
             say: Callable[[str], None] = print,
             on_queries: Callable[[list[DemoQuery]], None] | None = None) -> DemoReport:
    """Run the whole demo into ``out`` (see the module docstring); ``say`` prints one status line per stage
    (with its seconds); ``on_queries`` gets the answered queries before the (slower) evaluation starts."""
    from calibclip.backends.loading import load
    from calibclip.index import Index
    from calibclip.cir import load_phi
    from calibclip.data.synth import make_demo_world, shipped_model_dir, shipped_phi_path, shipped_rtd_path

    if top_k < 1:  # before anything is written
        raise UserError(f"--top-k {top_k}: must be at least 1.")
    t0 = last = time.perf_counter()

    def stage(msg: str) -> None:
        nonlocal last
        now = time.perf_counter()
        say(f"{msg} ({now - last:.1f} s)")
        last = now

    out = check_out_dir(Path(out)).resolve()  # index hits are absolute paths: compare like with like
    world = make_demo_world(out / "world", seed)
    stage(f"world: synthetic gallery and test splits (seed {seed}) in {out / 'world'}")
    model = str(shipped_model_dir())
    enc = load(model, device="cpu")
    index = Index.build(world["gallery"], enc, out=out / "gallery.idx", progress=False)
    stage(f"index: {len(index)} images embedded with the shipped synthetic CLIP → {out / 'gallery.idx'}")
    phi_path, rtd_path = shipped_phi_path(), shipped_rtd_path()
    phi = load_phi(phi_path) if phi_path is not None else None
    if phi is None:
        say("composed queries skipped: no shipped φ (run scripts/train_synth_cir.py)")
    queries = run_queries(index, build_queries(world["gallery"], seed), top_k, phi, rtd_path)
    page = write_html(queries, out)
    stage(f"queries: {len(queries)} answered, page {page}")
    if on_queries is not None:
        on_queries(queries)
        last = time.perf_counter()  # printing is not a stage
    report = DemoReport(out=out, queries=queries, html=page)
    if evaluate:
        say("eval: synthetic test splits (Flickr30K, CUHK-PEDES, CIRR formats) …")
        report.eval_rows = run_eval(world, out, model, phi_path, rtd_path)
        stage(f"eval: {sum(len(g) for g in report.eval_rows)} runs → {out / 'results'}")
        report.results_md = write_results_md(report.eval_rows, out / "results.md")
        write_html(queries, out, report.eval_rows)
    report.seconds = time.perf_counter() - t0
    return report
