"""`calibclip reproduce`: presets as data, row selection, missing inputs, and an end-to-end run on the
synthetic world whose printed/written table is checked against the runner's result JSONs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibclip.cli import app
from calibclip.data import DATASETS
from calibclip.errors import UserError
from calibclip.reproduce import load_rows, select_rows
from calibclip.reproduce.presets import read_preset

N_TEST = 80  # synthetic test images per task: seconds, not the README's 1000


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from calibclip.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    for task, name in (("tir", "flickr30k"), ("cir", "cirr")):
        generate(root / name, task, {"test": N_TEST}, 0, progress=False)
    return root


def test_shipped_presets_cover_both_papers_with_sources():
    rows = load_rows()
    assert len({r.id for r in rows}) == len(rows)
    by = {p: [r for r in rows if r.paper == p] for p in ("calibclip", "rtd", "lincir", "synth")}
    assert {r.dataset for r in by["calibclip"]} >= {"cuhk-pedes", "icfg-pedes", "rstpreid", "flickr30k", "mscoco",
                                                   "cirr"}
    assert {r.dataset for r in by["rtd"]} == {"cirr", "fashioniq", "circo", "genecis"}
    assert {r.method for r in by["rtd"]} == {"lincir", "searle", "pic2word"}
    for r in by["rtd"]:  # every RTD setting exists with and without RTD
        twin = r.id.rsplit("-", 1)[0] + ("-base" if r.mode == "rtd" else "-rtd")
        assert any(x.id == twin for x in by["rtd"]), twin
    for r in rows:
        assert r.dataset in DATASETS and set(r.published) <= set(r.metrics)
        # a number always names where it was read; a row without numbers says so
        assert ("not found" in r.source) == (not r.published), r.id
    # the numbers entered (README of kane2kang/CalibCLIP; secondary for RTD/LinCIR), spot-checked
    calib = {r.id: r for r in by["calibclip"]}
    assert calib["calibclip-cuhkpedes-vitb16-calib"].published["R@1"] == 71.88
    assert calib["calibclip-rstpreid-vitb16-base"].published["mAP"] == 44.25
    assert sum(bool(r.published) for r in by["calibclip"]) == 6
    assert sum(bool(r.published) for r in by["rtd"]) == 2
    assert all(r.tolerance == 0.5 for r in rows)


def test_select_rows_by_id_glob_and_prefix():
    rows = load_rows()
    assert [r.id for r in select_rows(rows, ["synth-tir-base"])] == ["synth-tir-base"]
    cirr = select_rows(rows, ["rtd-cirr-*"])
    assert cirr and all(r.id.startswith("rtd-cirr-") and r.dataset == "cirr" for r in cirr)
    assert {r.id for r in select_rows(rows, ["synth-tbpr"])} == {f"synth-tbpr-{x}" for x in ("base", "cve", "dcc",
                                                                                           "calib")}
    with pytest.raises(UserError, match="no row matches 'nope-\\*'"):
        select_rows(rows, ["nope-*"])


def test_bad_preset_file_names_the_row_and_key(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('[[row]]\nid = "x"\ndataset = "flickr30k"\nsplit = "test"\nmodel = "m"\nmetrics = ["t2i_R@1"]\n'
                 'source = "s"\npublished = { "R@1" = 1.0 }\n')
    with pytest.raises(UserError, match="mine.toml: row 'x': published metric 'R@1' is not listed"):
        read_preset(p)
    p.write_text('[[row]]\nid = "x"\ndatset = "flickr30k"\n')
    with pytest.raises(UserError, match="unknown key 'datset'"):
        read_preset(p)


def test_no_row_can_run_exits_2_with_what_is_missing(tmp_path, wide_console):
    res = CliRunner().invoke(app, ["reproduce", "synth-tir-base", "rtd-cirr-searle-vitb32-rtd",
                                   "--data-root", str(tmp_path), "--out", str(tmp_path / "rep"), "-q"])
    assert res.exit_code == 2
    assert "not run synth-tir-base: data: " + str(tmp_path / "flickr30k") in res.output
    assert "phi: SEARLE_ViT-B32.pt" in res.output and "rtd: rtd_searle_vitb32.pt" in res.output
    assert "none of the 2 row(s) could run" in res.output
    assert not (tmp_path / "rep" / "reproduce.json").exists()


@pytest.fixture
def wide_console(monkeypatch):
    """Rich folds table cells at the runner's 80 columns; a wide console keeps each cell on one line."""
    from calibclip.cli.common import console, err_console

    for c in (console, err_console):
        monkeypatch.setattr(c, "_width", 400)


def test_list_shows_needs_and_readiness(synth_root, wide_console):
    res = CliRunner().invoke(app, ["reproduce", "list", "synth-tir-*", "synth-tbpr-base", "--data-root",
                                   str(synth_root)])
    assert res.exit_code == 0, res.output
    assert "synth-tir-calib" in res.output and "ready" in res.output
    assert "cuhk-pedes" in res.output  # synth-tbpr-base: data folder missing from this root
    plain = CliRunner().invoke(app, ["reproduce", "list", "calibclip-cuhkpedes-*"])
    assert "CUHK-PEDES/" in plain.output and "reid_raw.json" in plain.output


def test_reproduce_synth_rows_end_to_end(synth_root, tmp_path, wide_console):
    """Measured values come from the runner's result JSONs; Δ = measured − published; marks follow tolerance."""
    out = tmp_path / "rep"
    extra = tmp_path / "mine.toml"  # a row whose published numbers are far off: must be marked
    extra.write_text('[[row]]\nid = "mine-tir"\ndataset = "flickr30k"\nsplit = "test"\nmodel = "synth-clip"\n'
                     'metrics = ["t2i_R@1", "t2i_R@5"]\npublished = { "t2i_R@1" = 1.0 }\nsource = "test"\n'
                     'tolerance = 0.5\n')
    res = CliRunner().invoke(app, ["reproduce", "synth-tir-base", "synth-tir-calib", "synth-cir-lincir-rtd",
                                   "synth-tbpr-base", "mine-tir", "--preset", str(extra), "--data-root",
                                   str(synth_root), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "-q",
                                   "--check"])
    assert res.exit_code == 1, res.output  # --check: mine-tir is off by far more than 0.5
    report = json.loads((out / "reproduce.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["synth-tbpr-base"]["ran"] is False and "cuhk-pedes" in rows["synth-tbpr-base"]["missing"][0]
    md = (out / "reproduce.md").read_text()
    for rid in ("synth-tir-base", "synth-tir-calib", "synth-cir-lincir-rtd", "mine-tir"):
        r = rows[rid]
        assert r["ran"] is True
        result = json.loads(Path(r["result_json"]).read_text())
        assert result["counts"]["images"] == N_TEST or rid.startswith("synth-cir")
        for m in r["metrics"]:
            assert m["measured"] == result["metrics"][m["metric"]]
            if m["published"] is not None:
                assert m["delta"] == pytest.approx(m["measured"] - m["published"], abs=1e-3)
                assert m["exceeds"] == (abs(m["delta"]) > r["tolerance"])
            assert f"| {m['metric']} | {m['measured']:.2f} |" in md
            assert f"{m['measured']:.2f}" in res.output
    assert rows["synth-tir-calib"]["calib"] == {"cve": True, "dcc": True, "disc_sim": True}
    assert json.loads(Path(rows["synth-tir-calib"]["result_json"]).read_text())["settings"]["calibration"]["dcc"]
    assert json.loads(Path(rows["synth-cir-lincir-rtd"]["result_json"]).read_text())["config"].startswith("rtd-")
    mine = {m["metric"]: m for m in rows["mine-tir"]["metrics"]}
    assert mine["t2i_R@1"]["exceeds"] and mine["t2i_R@5"]["published"] is None
    assert any("not directly comparable" in n for n in rows["synth-tir-base"]["notes"])  # 80 images, not 1000
    assert "✗ > tol" in md and "Not run (inputs missing)" in md and "synth-tbpr-base" in md
    assert "1 with |Δ| above tolerance" in res.output or "with |Δ| above tolerance" in res.output
