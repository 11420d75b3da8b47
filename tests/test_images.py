"""Safe image decoding: EXIF, modes, corrupt / empty / bomb files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from calibclip import images
from calibclip.images import BadImage, decode_image, iter_image_files


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_applied():
    img = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display
    out = decode_image(_png(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (10, 30)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "I;16"])
def test_modes_become_rgb(mode):
    img = Image.new(mode, (8, 8))
    assert decode_image(_png(img)).mode == "RGB"


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert decode_image(_png(img)).getpixel((0, 0)) == (255, 255, 255)


def test_bad_files_raise_one_line_reasons():
    with pytest.raises(BadImage, match="empty"):
        decode_image(b"", "a.png")
    with pytest.raises(BadImage, match="not an image"):
        decode_image(b"hello world", "b.jpg")
    data = _png(Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8")))
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2], "c.png")


def test_decompression_bomb_refused():
    data = _png(Image.new("RGB", (200, 200)))
    with pytest.raises(BadImage, match="decompression bomb"):
        decode_image(data, "bomb.png", max_pixels=1000)


def test_gif_first_frame():
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue()).size == (8, 8)


def test_listing_filters_extensions(tmp_path):
    for name in ["a.jpg", "b.PNG", "c.txt", ".hidden.png", "sub/d.webp"]:
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/d.webp"]
    assert images.IMAGE_EXTENSIONS >= {".jpg", ".png", ".webp", ".bmp", ".gif"}
