"""``calibclip serve``: FastAPI search service and its static page (needs the ``serve`` extra)."""

from calibclip.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):
    # fastapi is imported only when the app is actually built, so `import calibclip.serve` stays light
    if name == "create_app":
        from calibclip.serve.app import create_app

        return create_app
    raise AttributeError(name)
