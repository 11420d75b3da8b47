"""`calibclip eval --sweep`: typed grid parsing, features computed once per image/query setting, each point
equal to a plain calibrated evaluate, --pick-best / --write-config."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from calibclip.calib import CalibConfig
from calibclip.cli import app
from calibclip.errors import UserError
from calibclip.eval import runner
from calibclip.eval.runner import EvalSpec, evaluate
from calibclip.eval.sweep import grid_points, markdown_table, parse_sweeps, run_sweep


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    from calibclip.data.synth import generate

    root = tmp_path_factory.mktemp("sweep") / "flickr30k"
    generate(root, "tir", {"val": 60}, 0, progress=False)
    return root


def test_parse_sweeps_types_and_errors():
    grid = parse_sweeps(["lam=0,0.25,1", "dcc_k=1,2", "cve=false,true", "dcc_mask=keys,delete"])
    assert grid == {"lam": [0.0, 0.25, 1.0], "dcc_k": [1, 2], "cve": [False, True], "dcc_mask": ["keys", "delete"]}
    assert len(grid_points(grid)) == 3 * 2 * 2 * 2
    assert grid_points({"a": [1, 2], "b": [3, 4]})[1] == {"a": 1, "b": 4}  # last field varies fastest
    with pytest.raises(UserError, match="not a CalibConfig field"):
        parse_sweeps(["lamda=0,1"])
    with pytest.raises(UserError, match="'x' is not a int"):
        parse_sweeps(["dcc_k=1,x"])
    with pytest.raises(UserError, match="FIELD=V1,V2"):
        parse_sweeps(["lam"])


def test_sweep_encodes_once_per_setting_and_matches_evaluate(flickr, tiny_model_dir, monkeypatch, tmp_path):
    spec = EvalSpec(dataset="flickr30k", root=flickr, model=str(tiny_model_dir), split="val", progress=False,
                    results_dir=None)
    calls = {"gallery": 0, "texts": 0}
    real_g, real_t = runner.encode_gallery, runner.encode_texts

    def count_g(*a, **k):
        calls["gallery"] += 1
        return real_g(*a, **k)

    def count_t(*a, **k):
        calls["texts"] += 1
        return real_t(*a, **k)

    monkeypatch.setattr(runner, "encode_gallery", count_g)
    monkeypatch.setattr(runner, "encode_texts", count_t)
    sweep = run_sweep(spec, {"lam": [0.0, 0.5, 1.0], "dcc_k": [1, 2]})
    # baseline (plain) + one CVE setting; queries: plain + one per dcc_k. λ only re-scores.
    assert calls == {"gallery": 2, "texts": 3}
    assert [p.params for p in sweep.points][:2] == [None, {"lam": 0.0, "dcc_k": 1}]
    base = sweep.points[0].result.metrics
    for p in sweep.points[1:]:
        if p.params["lam"] == 0.0:  # λ = 0: the re-ranking keeps the plain order
            assert p.result.metrics["t2i_R@1"] == base["t2i_R@1"]
    monkeypatch.undo()
    pick = sweep.points[4]  # lam 0.5, dcc_k 2
    cfg = tmp_path / "c.toml"
    cfg.write_text("lam = 0.5\ndcc_k = 2\n")
    direct = evaluate(EvalSpec(**{**spec.__dict__, "mode": "calib", "calib_config": cfg}))
    assert pick.params == {"lam": 0.5, "dcc_k": 2}
    assert pick.result.metrics == direct.metrics
    table = markdown_table(sweep)
    assert table.splitlines()[0].startswith("| lam | dcc_k | t2i_R@1")
    assert f"| 0.50 | 2 | {direct.metrics['t2i_R@1']:.2f} |" in table


def test_cli_sweep_pick_best_writes_config(flickr, tiny_model_dir, tmp_path):
    best = tmp_path / "best.toml"
    res = CliRunner().invoke(app, ["eval", "flickr30k", "--root", str(flickr), "--model", str(tiny_model_dir),
                                   "--split", "val", "--sweep", "lam=0,1", "--sweep", "rerank_k=5,20",
                                   "--pick-best", "t2i_R@1", "--write-config", str(best), "--no-cache", "-q",
                                   "--results-dir", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    data = json.loads(next((tmp_path / "res").glob("sweep-*.json")).read_text())
    assert [r["params"] for r in data["rows"]][1:] == [{"lam": 0.0, "rerank_k": 5}, {"lam": 0.0, "rerank_k": 20},
                                                       {"lam": 1.0, "rerank_k": 5}, {"lam": 1.0, "rerank_k": 20}]
    calib_rows = data["rows"][1:]
    top = max(r["metrics"]["t2i_R@1"] for r in calib_rows)
    first_best = next(r for r in calib_rows if r["metrics"]["t2i_R@1"] == top)
    cfg = CalibConfig.from_toml(best)
    assert (cfg.lam, cfg.rerank_k) == (first_best["params"]["lam"], first_best["params"]["rerank_k"])
    assert "warning" not in res.output  # a val split: no warning
    assert next((tmp_path / "res").glob("sweep-*.md")).read_text().count("\n| ") == 1 + 5  # header, baseline + 4 points


def test_cli_sweep_warns_on_test_split_and_rejects_bad_options(tmp_path, tiny_model_dir):
    from calibclip.data.synth import generate

    root = tmp_path / "f"
    generate(root, "tir", {"test": 30}, 0, progress=False)
    res = CliRunner().invoke(app, ["eval", "flickr30k", "--root", str(root), "--model", str(tiny_model_dir),
                                   "--sweep", "lam=0,1", "--pick-best", "t2i_R@1", "--no-cache", "-q",
                                   "--results-dir", str(tmp_path / "res")])
    assert res.exit_code == 0 and "over-fits" in res.output
    bad = CliRunner().invoke(app, ["eval", "flickr30k", "--root", str(root), "--model", str(tiny_model_dir),
                                   "--pick-best", "t2i_R@1"])
    assert bad.exit_code == 2 and "need --sweep" in bad.output
    bad = CliRunner().invoke(app, ["eval", "flickr30k", "--root", str(root), "--model", str(tiny_model_dir),
                                   "--sweep", "tau_d=4", "--no-cache", "-q"])
    assert bad.exit_code == 2 and "tau_d" in bad.output
