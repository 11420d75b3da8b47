"""`calibclip eval … --output`, `calibclip eval report` and readable configuration labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from typer.testing import CliRunner

from calibclip.cli import app
from calibclip.eval.runner import EvalSpec, readable_label

from test_runner import write_flickr  # noqa: E402  (tests/eval is on sys.path under pytest's rootdir rules)

runner = CliRunner()


def test_labels_read_as_words():
    def spec(**kw):
        return EvalSpec(dataset="cirr", root=Path("."), model="m", **kw)

    assert readable_label(spec(), None) == "baseline"
    assert readable_label(spec(mode="calib"), object()) == "CalibCLIP"
    assert readable_label(spec(phi=Path("a/synth-phi.pt")), None) == "φ synth-phi"
    assert readable_label(spec(mode="rtd", phi=Path("synth-phi.pt"), rtd=Path("x/synth-rtd.pt")), None) == \
        "φ synth-phi + RTD synth-rtd"


def test_output_writes_exactly_there_and_report_aggregates(tmp_path, tiny_model_dir):
    flickr = write_flickr(tmp_path / "flickr30k")
    base = ["eval", "flickr30k", "--root", str(flickr), "--model", str(tiny_model_dir), "--cache-dir",
            str(tmp_path / "cache"), "-q", "--device", "cpu"]
    monkey_results = tmp_path / "results"
    r = runner.invoke(app, [*base, "--output", str(tmp_path / "out" / "mine.json"), "--results-dir",
                            str(monkey_results)])
    assert r.exit_code == 0, r.output
    one = json.loads((tmp_path / "out" / "mine.json").read_text())
    assert one["config"] == "base" and one["label"] == "baseline" and not monkey_results.exists()
    r = runner.invoke(app, [*base, "--compare", "base,calib", "--output", str(tmp_path / "both.json")])
    assert r.exit_code == 0, r.output
    both = json.loads((tmp_path / "both.json").read_text())
    assert [b["label"] for b in both] == ["baseline", "CalibCLIP"]
    r = runner.invoke(app, ["eval", "report", str(tmp_path / "out" / "mine.json"), str(tmp_path / "both.json"),
                            "--markdown", "--csv", str(tmp_path / "t.csv")])
    assert r.exit_code == 0, r.output
    md = [ln for ln in r.stdout.splitlines() if ln.startswith("|")]
    assert md[0].startswith("| dataset | split | model | configuration | t2i_R@1 |")
    assert len(md) == 2 + 3 and all(f"| {Path(tiny_model_dir).name} |" in ln for ln in md[2:])
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r_["configuration"] for r_ in rows] == ["baseline", "baseline", "CalibCLIP"]
    assert rows[2]["t2i_R@1"] == f"{both[1]['metrics']['t2i_R@1']:.2f}"
    assert rows[0]["t2i_R@1"] == f"{one['metrics']['t2i_R@1']:.2f}"
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(app, ["eval", "report", str(bad)])
    assert r.exit_code == 2 and "bad.json" in r.output and "Traceback" not in r.output
