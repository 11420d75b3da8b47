"""`calibclip serve`: the HTTP API and search page over an index."""

from __future__ import annotations

from pathlib import Path

import typer

from calibclip.cli import common
from calibclip.cli.common import console, escape
from calibclip.errors import UserError


def not_an_index(path: Path) -> str:
    """What to do when INDEX is not an index: a folder of images gets its index written beside it, never inside."""
    if path.is_dir():
        from calibclip.index import default_index_path

        idx = default_index_path(path.resolve())
        return (f"{path}: a folder, not a calibclip index; index it first with `calibclip index {path} --out "
                f"{idx}`, then run `calibclip serve {idx}`.")
    return f"{path}: not a calibclip index (no such folder); build one with `calibclip index FOLDER --out {path}`."


def serve_cmd(
    index_path: Path = typer.Argument(..., metavar="INDEX", help="Index folder built by `calibclip index`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; the default is reachable only "
                             "from this machine. Use 0.0.0.0 to expose it (then set an --api-key)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key: str = typer.Option(None, "--api-key", envvar="CALIBCLIP_API_KEY", show_envvar=True,
                                help="Require this key on every API route (header X-API-Key or ?api_key=)."),
    phi: Path = typer.Option(None, "--phi", help="φ checkpoint: enables composed (image + text) search; `synth` "
                             "for the one shipped with the synthetic CLIP."),
    rtd: Path = typer.Option(None, "--rtd", help="RTD text-encoder checkpoint (from `calibclip rtd train`), or "
                             "`synth`."),
    calib_config: Path = typer.Option(None, "--calib-config", help="TOML with CalibConfig fields for the "
                                      "CalibCLIP toggle (default: the config the index was built with)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    model: str = typer.Option(None, "--model", "-m", help="The index's model in another place (HF id or local "
                              "folder); refused unless it is the same model (fingerprint and dimension)."),
    cors_origin: list[str] = typer.Option(None, "--cors-origin", help="Allow this browser origin (repeatable); "
                                          "CORS is off by default."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", min=0.01, help="Largest image upload."),
    allowed_host: list[str] = typer.Option(None, "--allowed-host", help="Also answer requests for this Host "
                                           "name (repeatable; '*' for any). By default only the --host "
                                           "address, and this machine's names when binding 0.0.0.0."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1, help="Close a connection whose "
                                         "request headers take longer than this many seconds."),
) -> None:
    """Serve an index over HTTP: search API (docs at /docs) and a search page at /."""

    try:
        from calibclip.serve import server
        from calibclip.serve.app import create_app
        from calibclip.serve.config import LOOPBACK_NAMES, ServeConfig
        from calibclip.serve.security import default_allowed_hosts
    except ImportError as exc:
        raise UserError(f"calibclip serve needs the serve extra ({exc.name} is missing): "
                        "pip install 'calibclip[serve]'") from None
    if not (index_path / "meta.sqlite").exists():
        raise UserError(not_an_index(index_path))
    cfg = ServeConfig(api_key=api_key or None, cors_origins=tuple(cors_origin or ()), max_upload_mb=max_upload_mb,
                      allowed_hosts=(*default_allowed_hosts(host), *(allowed_host or ())))  # checks the key
    server.check_port_free(host, port)  # before loading anything: a taken port is a one-line error
    phi, rtd = common.shipped_or_path(phi, "--phi"), common.shipped_or_path(rtd, "--rtd")
    from calibclip.index import Index

    index = Index.open(index_path)
    enc = common.load_encoder(model or index.model_to_load(), device)
    index.check_model(enc)
    index.store.close()
    common.note_shipped_model(enc)
    if rtd is not None:
        from calibclip.cir.rtd import load_rtd

        load_rtd(enc, rtd)
    calibration = common.calibration(False, calib_config) if calib_config is not None else "auto"
    loaded_phi = None
    if phi is not None:
        from calibclip.cir import load_phi

        loaded_phi = load_phi(phi)
    app = create_app(index_path, encoder=enc, phi=loaded_phi, calibration=calibration, config=cfg)
    if host not in LOOPBACK_NAMES and not cfg.api_key:
        common.warn(f"serving on {host} without an API key: anyone who can reach this port can search and view "
                    "the collection. Set --api-key or CALIBCLIP_API_KEY.")
    console.print(f"serving {escape(str(index_path))} ({app.state.searcher.snapshot.size} images) on http://{host}:{port}"
                  f"{'  (API key required)' if cfg.api_key else ''}")
    server.run(app, host, port, header_timeout=header_timeout)
