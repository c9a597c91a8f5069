"""Post-processing: resize, sharpen and encode, as its own metered stage."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageFilter

FORMATS = {
    "webp": ("WEBP", "image/webp"),
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}


@dataclass(frozen=True)
class Encoded:
    data: bytes
    extension: str
    content_type: str
    width: int
    height: int


def postprocess(
    image: Image.Image, *, fmt: str = "webp", size: int | None = None, quality: int = 90
) -> Encoded:
    """Resize the long side to ``size`` (if given), unsharp-mask, and encode."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    img = image.convert("RGB")
    if size is not None and max(img.size) != size:
        scale = size / max(img.size)
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.LANCZOS,
        )
    img = img.filter(ImageFilter.UnsharpMask(radius=1.2, percent=60, threshold=2))
    pil_format, content_type = FORMATS[fmt]
    buffer = io.BytesIO()
    img.save(buffer, format=pil_format, quality=quality)
    return Encoded(buffer.getvalue(), fmt, content_type, img.width, img.height)
