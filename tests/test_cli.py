"""The command line as a user runs it: index, search (table and JSON), errors without tracebacks."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from calibclip.cli import app

runner = CliRunner()


def test_index_then_search_json(tmp_path, tiny_model_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        Image.fromarray((np.random.RandomState(i).rand(32, 32, 3) * 255).astype("uint8")).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"nope")
    out = tmp_path / "photos.idx"
    r = runner.invoke(app, ["index", str(folder), "--model", str(tiny_model_dir), "--out", str(out),
                            "--num-workers", "0", "-q"])
    assert r.exit_code == 0, r.output
    assert "5 added" in r.output and "1 skipped" in r.output and "broken.jpg" in r.output
    r = runner.invoke(app, ["search", str(out), "a red car", "--top-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(set(h) >= {"path", "score", "rank"} for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    r = runner.invoke(app, ["search", str(out), "a red car"])  # not a terminal: score<TAB>path lines (#17.2)
    assert r.exit_code == 0 and r.output.splitlines()[0] == f"{hits[0]['score']:.4f}\t{hits[0]['path']}"


def test_errors_are_one_line(tmp_path, tiny_model_dir):
    r = runner.invoke(app, ["search", str(tmp_path / "none.idx"), "x"])
    assert r.exit_code == 2 and "no such index" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["index", str(tmp_path / "nofolder"), "--model", str(tiny_model_dir)])
    assert r.exit_code == 2 and "not a directory" in r.output
    r = runner.invoke(app, ["index", str(tmp_path), "--model", "acme/unknown-clip"])
    assert r.exit_code == 2 and "--model" in r.output and "Traceback" not in r.output


def test_messages_keep_their_brackets(tmp_path):
    """Rich markup never eats user text: paths, extras and help keep brackets; '[/x]' does not crash (#16.14)."""
    r = runner.invoke(app, ["search", str(tmp_path / "my[bold]photos.idx"), "x"])
    assert r.exit_code == 2 and "my[bold]photos.idx" in r.output
    r = runner.invoke(app, ["index", str(tmp_path / "a[/x]b"), "--model", "unused"])
    assert r.exit_code == 2 and "a[/x]b: not a directory" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["index", "--help"], terminal_width=200)
    assert "pip install 'calibclip[ray]'" in " ".join(r.output.split())
    r = runner.invoke(app, ["rtd", "train", "--help"], terminal_width=200)
    assert "NAME:ROOT[:SPLIT]" in r.output


def test_user_error_text_printed_verbatim():
    import typer

    from calibclip.cli.common import user_errors
    from calibclip.errors import UserError

    def needs_extra() -> None:
        raise UserError("calibclip serve needs the serve extra: pip install 'calibclip[serve]' [/x] [red]")

    probe = typer.Typer()
    probe.command()(user_errors(needs_extra))
    r = runner.invoke(probe, [])
    assert r.exit_code == 2
    assert r.output.strip() == "error: calibclip serve needs the serve extra: pip install 'calibclip[serve]' [/x] [red]"
