"""Pictures people upload, made safe to show: decoded by Pillow, turned upright, cropped to a
square, re-encoded as JPEG at fixed sizes. Nothing of the original file survives (no EXIF, no
location, no comment, no second image hidden after the first), and a picture too large to
decode safely is refused before it is decoded."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageOps, UnidentifiedImageError

from secureconnect.errors import Invalid

SIZES = (64, 256)
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a decompression bomb is refused, not decoded
FORMATS = ("JPEG", "PNG", "WEBP", "GIF")


def normalise(data: bytes) -> tuple[str, dict[int, bytes]]:
    """(tag, JPEG bytes for each size in SIZES). Raises Invalid ``bad_image``."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise Invalid("bad_image", f"the picture is {width}x{height}: too large to use")
            image.load()
            upright = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise Invalid(
            "bad_image", "not a picture this server can read (JPEG, PNG, WebP or GIF)"
        ) from error
    if upright.mode in ("RGBA", "LA", "P"):
        flat = Image.new("RGB", upright.size, (255, 255, 255))
        rgba = upright.convert("RGBA")
        flat.paste(rgba, mask=rgba.getchannel("A"))
        upright = flat
    square = ImageOps.fit(
        upright.convert("RGB"), (max(SIZES), max(SIZES)), Image.Resampling.LANCZOS
    )
    out: dict[int, bytes] = {}
    for size in SIZES:
        buffer = io.BytesIO()
        square.resize((size, size), Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=85)
        out[size] = buffer.getvalue()
    tag = hashlib.sha256(out[max(SIZES)]).hexdigest()[:16]
    return tag, out


def works() -> bool:
    """Whether pictures can be made here now (the status page's "Avatars" check)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (47, 91, 234)).save(buffer, "PNG")
    try:
        normalise(buffer.getvalue())
    except Invalid:
        return False
    return True
