"""`calibclip demo` end to end: index, self-checking queries, HTML page, eval table that matches the JSONs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibclip.cli import app
from calibclip.demo import build_queries, run_demo

# Measured (seed 0, top-5): text 4/4 right answers, person 3/3, composed φ 1/3, φ + RTD 2/3.
MIN_FOUND = {"text": 4, "person": 3, "composed": 2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, seed=0, top_k=5, say=lambda _: None)


def test_queries_find_their_right_answers(demo):
    kinds = {q.kind for q in demo.queries}
    assert kinds == {"text", "person", "composed"}
    for kind, need in MIN_FOUND.items():
        found = sum(q.found_rank is not None for q in demo.queries if q.kind == kind)
        assert found >= need, (kind, found)
    for q in demo.queries:
        assert [h.rank for h in q.hits] == list(range(1, 6))
        assert q.reference not in {h.path for h in q.hits}  # composed: the reference is never a result
        assert all(Path(h.path).is_file() for h in q.hits)
    rtd = [q for q in demo.queries if q.note == "LinCIR φ + RTD"]
    assert len(rtd) == 3  # the shipped RTD tower is used for the composed queries


def test_truth_sets_point_at_gallery_files(demo):
    for q in build_queries(demo.out / "world" / "gallery", seed=0):
        assert q.truth and all(Path(p).is_file() for p in q.truth)
        if q.kind == "person":
            assert len(q.truth) >= 2  # every shot of the identity counts


def test_html_page_shows_every_query_with_existing_images(demo):
    page = demo.html.read_text(encoding="utf-8")
    for q in demo.queries:
        assert q.text.replace("'", "&#x27;") in page
    srcs = re.findall(r'<img src="([^"]+)"', page)
    n_refs = sum(q.reference is not None for q in demo.queries)
    assert len(srcs) == 5 * len(demo.queries) + n_refs
    assert all((demo.out / s).is_file() for s in srcs)  # relative paths: the folder can be moved
    assert page.count('class="hit ok"') >= sum(MIN_FOUND.values())
    assert "Evaluation on the synthetic test splits" in page


def test_results_table_matches_the_result_files(demo):
    rows = {}
    table = [ln for ln in demo.results_md.read_text(encoding="utf-8").splitlines() if ln.startswith("|")]
    for line in table[2:]:
        ds, metric, base, cfg, value, _ = [c.strip() for c in line.strip("|").split("|")]
        rows[(ds, metric)] = (float(base), cfg, float(value))
    assert {ds for ds, _ in rows} == {"flickr30k", "cuhk-pedes", "cirr"}
    files = {p.name: json.loads(p.read_text()) for p in (demo.out / "results").glob("*.json")}
    base = next(v for k, v in files.items() if k.startswith("flickr30k") and k.endswith("-base.json"))
    calib = next(v for k, v in files.items() if k.startswith("flickr30k") and "-calib" in k)
    assert rows[("flickr30k", "t2i_R@1")] == (round(base["metrics"]["t2i_R@1"], 2), "CalibCLIP",
                                               round(calib["metrics"]["t2i_R@1"], 2))
    # every row: base column = the dataset's base run, value column = the run named in the row
    by_config = {(v["dataset"], v["config"]): v["metrics"] for v in files.values()}
    by_label = {(v["dataset"], v["label"]): v["metrics"] for v in files.values()}  # rows name runs in words (#17.7)
    for (ds, metric), (b, cfg, value) in rows.items():
        first = next(m for (d, c), m in by_config.items() if d == ds and c.startswith("base"))
        assert b == round(first[metric], 2) and value == round(by_label[(ds, cfg)][metric], 2), (ds, metric)
    assert len(rows) == 12 and len(files) == 6
    # the shipped model is far above chance (1/300) on the synthetic test split
    assert rows[("flickr30k", "t2i_R@10")][0] > 90
    assert rows[("cuhk-pedes", "R@1")][0] > 60
    base_r1, cfg, rtd_r1 = rows[("cirr", "R@1")]
    assert cfg == "φ synth-phi + RTD synth-rtd" and rtd_r1 > base_r1  # RTD helps on this world (README table)


def test_results_md_says_what_the_rows_are_and_why_they_differ_from_the_readme(demo):
    from calibclip.demo import README_TEST_IMAGES

    text = demo.results_md.read_text(encoding="utf-8")
    files = [json.loads(p.read_text()) for p in (demo.out / "results").glob("*-base*.json")]
    for r in files:  # the sizes stated are the sizes evaluated
        assert f"{r['dataset']} {r['counts']['images']} images / {r['counts']['queries']} queries" in text
    assert f"{README_TEST_IMAGES:,} test images per task" in text and "fewer distractors" in text
    assert "*base* is “baseline”, *compared with* is “CalibCLIP”" in text
    assert "*base* is “φ synth-phi”, *compared with* is “φ synth-phi + RTD synth-rtd”" in text


def test_cli_rejects_a_file_as_out_dir(tmp_path):
    f = tmp_path / "not-a-dir"
    f.write_text("x")
    res = CliRunner().invoke(app, ["demo", "--out", str(f), "--no-eval"])
    assert res.exit_code == 2
    assert "is a file" in res.output and "Traceback" not in res.output
    assert f.read_text() == "x"  # untouched


def test_cli_demo_with_a_relative_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["demo", "--out", "rel-demo", "--no-eval", "--top-k", "5"])
    assert res.exit_code == 0, res.output
    found = int(re.search(r"(\d+)/13 queries found their right answer", res.output).group(1))
    assert found >= sum(MIN_FOUND.values())  # measured 10/13
    assert (tmp_path / "rel-demo" / "demo.html").is_file() and not (tmp_path / "rel-demo" / "results.md").exists()


def test_demo_without_a_shipped_phi_skips_composed_queries(tmp_path, monkeypatch):
    import calibclip.data.synth as synth

    monkeypatch.setattr(synth, "shipped_phi_path", lambda: None)
    said = []
    report = run_demo(tmp_path / "d", seed=0, top_k=3, evaluate=False, say=said.append)
    assert {q.kind for q in report.queries} == {"text", "person"}
    assert sum("composed queries skipped" in m for m in said) == 1
    assert [m.split(":")[0] for m in said if "skipped" not in m] == ["world", "index", "queries"]
    assert report.results_md is None and not (tmp_path / "d" / "results.md").exists()
    assert all(len(q.hits) == 3 for q in report.queries)
