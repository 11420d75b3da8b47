"""`calibclip serve`: options reach the app, safe defaults, one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from calibclip.cli import app  # noqa: E402


@pytest.fixture
def captured(monkeypatch, tiny_encoder, tiny_model_dir):
    """Replace uvicorn.run: record the app and the bind address instead of serving.

    The model load is short-circuited to the session's tiny encoder (checking the model asked for
    is the one the index records), so these tests do not reload it each time.
    """
    import calibclip.cli.common

    seen = {}

    def fake_load(model, device, calibration=None):
        assert model == str(tiny_model_dir) and device == "cpu"
        seen["loaded"] = model
        return tiny_encoder

    monkeypatch.setattr(calibclip.cli.common, "load_encoder", fake_load)

    def fake_run(app_, host, port, **kw):
        seen.update(app=app_, host=host, port=port)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.delenv("CALIBCLIP_API_KEY", raising=False)
    return seen


def test_defaults_bind_loopback_without_key_or_cors(shared_collection, captured):
    res = CliRunner().invoke(app, ["serve", str(shared_collection[1]), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (captured["host"], captured["port"]) == ("127.0.0.1", 8000)
    cfg = captured["app"].state.config
    assert cfg.api_key is None and cfg.cors_origins == () and cfg.max_upload_mb == 10.0
    assert captured["app"].state.searcher.snapshot.size == 8
    assert "warning" not in res.output


def test_options_and_env_key(shared_collection, captured, monkeypatch):
    monkeypatch.setenv("CALIBCLIP_API_KEY", "from-env")
    res = CliRunner().invoke(app, ["serve", str(shared_collection[1]), "--device", "cpu", "--port", "9123",
                                   "--cors-origin", "http://a.example", "--cors-origin", "http://b.example",
                                   "--max-upload-mb", "2.5"])
    assert res.exit_code == 0, res.output
    cfg = captured["app"].state.config
    assert cfg.api_key == "from-env" and captured["port"] == 9123
    assert cfg.cors_origins == ("http://a.example", "http://b.example") and cfg.max_upload_mb == 2.5
    assert "API key required" in res.output


def test_public_bind_without_key_warns(shared_collection, captured):
    res = CliRunner().invoke(app, ["serve", str(shared_collection[1]), "--device", "cpu", "--host", "0.0.0.0"])
    assert res.exit_code == 0 and captured["host"] == "0.0.0.0"
    assert "without an API key" in res.output


@pytest.mark.parametrize("extra, message", [
    ([], "not a calibclip index"),
    (["--phi", "/nonexistent/phi.pt"], "--phi"),
    (["--rtd", "/nonexistent/rtd.pt"], "--rtd"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, shared_collection, captured, extra, message):
    target = str(tmp_path / "missing.idx") if not extra else str(shared_collection[1])
    res = CliRunner().invoke(app, ["serve", target, "--device", "cpu", *extra])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert "app" not in captured
