"""Model backends: the Encoder interface and its implementations."""

from calibclip.backends.base import Encoder, TextOutput, VisionOutput

__all__ = ["Encoder", "TextOutput", "VisionOutput"]
