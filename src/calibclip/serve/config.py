"""Settings of the search service (every limit in one dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class ServeConfig:
    """Limits and options of ``calibclip serve``.

    The defaults are safe for a service on the loopback interface: no CORS, no key, 10 MB
    uploads, 1,000-character queries, at most 200 results, 16 Mpx decoded per upload, only
    loopback Host names.
    """

    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Host header names answered (DNS-rebinding protection); "*" answers any. The CLI derives them from --host.
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    max_upload_mb: float = 10.0
    max_query_chars: int = 1000
    max_k: int = 200
    max_rank: int = 1000  # paging (offset + k) reaches at most this rank
    default_k: int = 24
    # Query images are decoded only as large as the model needs (shorter side >= upload_min_side; a
    # JPEG at 1/2-1/8 scale by the codec), and at most max_decodes at once: 16 parallel 38 Mpx PNGs
    # once took the server from 0.4 to 7.3 GB. Above max_upload_pixels *decoded* pixels (what a PNG
    # cannot avoid) an upload is refused.
    max_upload_pixels: int = 16_000_000
    upload_min_side: int = 448
    max_decodes: int = 2
    thumb_size: int = 256
    thumb_quality: int = 85
    prompt: str = "a photo of $ that {}"
    max_batch: int = 32  # text queries that arrive while the model is busy share one forward pass
    # multipart framing and the text fields travel with the file; allow for them on top of the file limit
    form_overhead_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise UserError for a setting no request could ever satisfy."""
        if self.api_key is not None and not self.api_key.isascii():
            from calibclip.errors import UserError

            raise UserError("--api-key: use ASCII characters only (an HTTP header cannot carry others, so "
                            "no request could ever match this key)")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted (file limit + form overhead)."""
        return int(self.max_upload_mb * 1024 * 1024) + self.form_overhead_bytes
