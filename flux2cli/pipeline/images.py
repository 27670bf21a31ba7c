"""Reading reference images from users, safely, and the one normalisation they all get.

Only PNG, JPEG and WebP decoders are enabled, the pixel count is checked from the
header before any pixel is decoded, and every failure is one ``InvalidRequest`` line.
Every reference, from the CLI, the server or the Python API, then goes through
``normalise``: upright as its EXIF says, 16-bit greyscale scaled (not clipped) to 8 bits,
any transparency (alpha channel, palette or tRNS) flattened onto white, and RGB.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from pathlib import Path
from typing import Any

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.request import MaskImage, ReferenceImage

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_SIZE = (5376, 3072)  # the spec's largest output (4mp landscape)
MAX_PIXELS = MAX_SIZE[0] * MAX_SIZE[1]
_PIXEL_LIMIT = f"{MAX_PIXELS:,} pixels, as in {MAX_SIZE[0]}x{MAX_SIZE[1]}"  # a count alone is hard to picture
MIN_SIDE = 16
MAX_ASPECT = 8  # FLUX.2's image processor refuses more extreme references
MAX_BYTES = 32 * 2**20
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)


def decode_image_bytes(data: bytes, label: str) -> Any:
    """Decode ``data`` into an RGB PIL image, or raise InvalidRequest naming ``label``."""
    from PIL import Image

    if not data:
        raise InvalidRequest(f"{label} is empty")
    if len(data) > MAX_BYTES:
        raise InvalidRequest(f"{label} is {len(data) // 2**20} MB; the limit is {MAX_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InvalidRequest(f"{label} is {width}x{height}; the limit is {_PIXEL_LIMIT}")
            _check_shape(width, height, label)
            image.load()
            return normalise(image)
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequest(f"{label} has too many pixels; the limit is {_PIXEL_LIMIT}") from None
    except Exception as error:  # unknown format, truncated data, text-chunk bombs, bad EXIF, ...
        raise InvalidRequest(f"{label} is not a PNG, JPEG or WebP image that can be read") from error


def _check_shape(width: int, height: int, label: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise InvalidRequest(f"{label} is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InvalidRequest(f"{label} is {width}x{height}; the long side may be at most {MAX_ASPECT}x the short one")


_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def normalise(image: Any) -> Any:
    """Any decoded image as the RGB the pipeline takes: orientation, bit depth, alpha, mode."""
    from PIL import Image, ImageOps

    ImageOps.exif_transpose(image, in_place=True)  # a portrait photo stays portrait
    transparent = image.info.get("transparency") if image.mode not in ("P", "RGB", "L") else None
    if image.mode in _WIDE_GREY:
        image = _grey_to_8_bits(image, transparent)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # White, as a browser shows a transparent PNG on a plain page: holes must not turn black.
        rgba = image.convert("RGBA")  # palette and tRNS transparency become alpha here
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def _grey_to_8_bits(image: Any, transparent: Any) -> Any:
    """16-bit greyscale (I;16, or I from older Pillow) scaled to 0-255; convert("L") clips at 255.
    A tRNS grey value becomes an alpha channel (LA) first, since it names a 16-bit value."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image).astype(np.float32)
    grey = Image.fromarray(np.round(np.clip(values, 0, 65535) * (255.0 / 65535)).astype(np.uint8))
    if isinstance(transparent, int):
        alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))
        return Image.merge("LA", (grey, alpha))
    return grey


def load_reference_file(path: str | Path) -> ReferenceImage:
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequest(f"reference image {str(path)!r} does not exist or is not a file")
    if file.stat().st_size > MAX_BYTES:
        raise InvalidRequest(f"reference image {file.name!r} is larger than {MAX_BYTES // 2**20} MB")
    return ReferenceImage(str(file), decode_image_bytes(file.read_bytes(), f"reference image {file.name!r}"))


def decode_base64_image(text: Any, label: str = "input_image") -> ReferenceImage:
    """A data URL (``data:image/png;base64,...``) or bare base64, as the server receives it."""
    return ReferenceImage("upload", decode_image_bytes(base64_bytes(text, label), label))


def base64_bytes(text: Any, label: str) -> bytes:
    """The bytes of a data URL or bare base64 image string, or one InvalidRequest line."""
    if not isinstance(text, str):
        raise InvalidRequest(f"{label} must be a base64 string or a data URL")
    payload = text.strip()
    match = _DATA_URL.match(payload)
    if match:
        mime = (match.group("mime") or "").lower()
        if mime not in ("image/png", "image/jpeg", "image/jpg", "image/webp"):
            raise InvalidRequest(f"{label} must be a PNG, JPEG or WebP image (got {mime or 'no type'})")
        if not match.group("b64"):
            raise InvalidRequest(f"{label} must be a base64 data URL (data:image/png;base64,...)")
        payload = payload[match.end():]
    if len(payload) > MAX_BYTES * 4 // 3 + 4:
        raise InvalidRequest(f"{label} is larger than {MAX_BYTES // 2**20} MB")
    payload = "".join(payload.split())
    payload += "=" * (-len(payload) % 4)  # clients often drop the padding
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{label} is not valid base64") from None
    return data


def decode_mask_bytes(data: bytes, label: str, source: str = "upload") -> MaskImage:
    """Our convention: greyscale, white = regenerate (colour images are read as their luminance)."""
    import hashlib

    image = decode_image_bytes(data, label).convert("L")
    return MaskImage(source, hashlib.sha256(data).hexdigest(), image)


def load_mask_file(path: str | Path) -> MaskImage:
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequest(f"mask {str(path)!r} does not exist or is not a file")
    if file.stat().st_size > MAX_BYTES:
        raise InvalidRequest(f"mask {file.name!r} is larger than {MAX_BYTES // 2**20} MB")
    return decode_mask_bytes(file.read_bytes(), f"mask {file.name!r}", str(file))


def decode_openai_mask(data: bytes, label: str = "mask") -> MaskImage:
    """OpenAI's convention (fully transparent pixels = the area to edit) turned into ours."""
    import hashlib

    import numpy as np
    from PIL import Image

    if not data:
        raise InvalidRequest(f"{label} is empty")
    decode_image_bytes(data, label)  # the same format, size and bomb checks as any image
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        raise InvalidRequest(f"{label} has no transparency: OpenAI masks mark the area to edit with fully "
                             "transparent pixels")
    alpha = np.asarray(image.convert("RGBA").getchannel("A"))
    grey = Image.fromarray(np.where(alpha == 0, 255, 0).astype(np.uint8), "L")
    return MaskImage("upload", hashlib.sha256(data).hexdigest(), grey)


def check_pil_image(image: Any, label: str = "input_image") -> ReferenceImage:
    """A PIL image handed over through the Python API."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise InvalidRequest(f"{label} must be a PIL image")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InvalidRequest(f"{label} is {width}x{height}; the limit is {_PIXEL_LIMIT}")
    _check_shape(width, height, label)
    return ReferenceImage("python", normalise(image.copy()))  # the caller's image stays as it was
