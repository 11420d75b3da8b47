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
        seen.update(app=app_, host=host, port=port, http=kw.get("http"))

    monkeypatch.setattr(uvicorn, "run", fake_run)
    import calibclip.serve.server

    # port 8000 may be taken on a shared machine; the real check has its own test
    monkeypatch.setattr(calibclip.serve.server, "check_port_free", lambda host, port: seen.update(checked=port))
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


def test_taken_port_is_one_line_before_serving(shared_collection, monkeypatch):
    import socket

    monkeypatch.delenv("CALIBCLIP_API_KEY", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = CliRunner().invoke(app, ["serve", str(shared_collection[1]), "--device", "cpu", "--port", str(port)])
    assert res.exit_code == 2, res.output
    assert f"--port {port}" in res.output and "already in use" in res.output
    assert "serving" not in res.output and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def test_non_ascii_api_key_is_refused_at_start(shared_collection, captured):
    res = CliRunner().invoke(app, ["serve", str(shared_collection[1]), "--device", "cpu", "--api-key", "clé"])
    assert res.exit_code == 2, res.output
    assert "--api-key" in res.output and "ASCII" in res.output and "Traceback" not in res.output
    assert "app" not in captured and "loaded" not in captured


def test_allowed_hosts_follow_the_bind_address(shared_collection, captured):
    res = CliRunner().invoke(app, ["serve", str(shared_collection[1]), "--device", "cpu",
                                   "--allowed-host", "photos.lan", "--header-timeout", "3"])
    assert res.exit_code == 0, res.output
    assert set(captured["app"].state.config.allowed_hosts) == {"localhost", "127.0.0.1", "::1", "photos.lan"}
    assert captured["http"].header_timeout == 3.0
