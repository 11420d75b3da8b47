"""Messages and help texts say what is true: offline hint, files written, where an index goes, shipped names."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from calibclip.backends.loading import offline_hint
from calibclip.cli import app

runner = CliRunner()


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", text))


def test_offline_hint_names_hf_download_only_for_hub_ids():
    hint = offline_hint("openai/clip-vit-base-patch16")
    assert "`hf download openai/clip-vit-base-patch16 --local-dir ./clip-vit-base-patch16`" in hint
    assert "huggingface-cli" not in hint
    for not_an_id in ("clip-vit-base", "a/b/c", "my model/x"):
        assert "hf download" not in offline_hint(not_an_id), not_an_id


def test_train_phi_help_names_the_state_file_it_writes():
    from calibclip.cir.train_phi import state_path_for

    out = _plain(runner.invoke(app, ["train-phi", "--help"]).output)
    assert state_path_for("phi.pt").name == "phi.train.pt" and "phi.train.pt" in out
    assert "OUT.train.pt" not in out


def test_serve_on_a_photo_folder_suggests_an_index_beside_it(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    r = runner.invoke(app, ["serve", str(photos)])
    assert r.exit_code == 2
    text = _plain(r.output)
    assert f"--out {tmp_path / 'photos.idx'}" in text and f"--out {photos} " not in text


def test_shipped_checkpoints_by_name():
    from calibclip.cli.common import shipped_or_path
    from calibclip.data.synth import shipped_phi_path, shipped_rtd_path
    from pathlib import Path

    assert shipped_or_path(Path("synth"), "--phi") == shipped_phi_path()
    assert shipped_or_path(Path("synth"), "--rtd") == shipped_rtd_path()
    for verb in (["search"], ["serve"], ["eval", "run"], ["rtd", "train"]):
        assert "synth" in _plain(runner.invoke(app, [*verb, "--help"]).output), verb


def test_version_and_help_without_bool_noise():
    from calibclip import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"calibclip {__version__}"
    for verb in ("search", "index", "eval", "serve"):
        assert "<bool>" not in runner.invoke(app, [verb, "--help"]).output, verb
