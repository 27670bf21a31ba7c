"""Reference images decoded the same way from every front end: upright as their EXIF says,
transparency of every kind on white, 16-bit greyscale scaled rather than clipped, RGB.

The record (issue 18): a portrait JPEG with EXIF orientation became landscape, PNG tRNS
transparency turned black, and 16-bit greyscale PNGs were clipped to white.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from flux2cli.pipeline.images import check_pil_image, decode_base64_image, decode_image_bytes, load_reference_file
from server_fixtures import TINY_PROMPT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _rotated_jpeg(width: int = 96, height: int = 48) -> bytes:
    """A landscape sensor image that EXIF says to show rotated (orientation 6: portrait)."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, width // 4, height))  # a blue band on the left edge
    exif = image.getexif()
    exif[0x0112] = 6
    return _encoded(image, "JPEG", exif=exif, quality=95)


def _pixel(image, x, y):
    return tuple(int(v) for v in np.asarray(image)[y, x])


def test_exif_orientation_is_applied():
    image = decode_image_bytes(_rotated_jpeg(), "photo")
    assert image.size == (48, 96) and image.mode == "RGB"
    top, bottom = _pixel(image, 24, 2), _pixel(image, 24, 93)
    assert top[2] > 150 and bottom[0] > 150  # the left edge's band is now at the top


@pytest.mark.parametrize("make", [
    lambda: _encoded(Image.new("RGB", (32, 32), (0, 0, 0)), transparency=(0, 0, 0)),  # RGB tRNS
    lambda: _encoded(Image.new("L", (32, 32), 0), transparency=0),  # greyscale tRNS
    lambda: _encoded(_palette(), transparency=0),  # palette tRNS
    lambda: _encoded(Image.new("RGBA", (32, 32), (0, 0, 0, 0))),
    lambda: _encoded(Image.new("LA", (32, 32), (0, 0))),
    lambda: _encoded(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), "WEBP", lossless=True),
    lambda: _encoded(Image.fromarray(np.zeros((32, 32), np.uint16)), transparency=0),  # 16-bit grey tRNS
], ids=["rgb-trns", "grey-trns", "palette-trns", "rgba", "la", "webp-alpha", "grey16-trns"])
def test_every_kind_of_transparency_is_flattened_onto_white(make):
    image = decode_image_bytes(make(), "ref")
    assert image.mode == "RGB" and _pixel(image, 5, 5) == (255, 255, 255)


def _palette() -> Image.Image:
    image = Image.new("P", (32, 32), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    return image


def test_16_bit_greyscale_is_scaled_not_clipped():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    image = decode_image_bytes(_encoded(Image.fromarray(ramp)), "scan")
    values = np.asarray(image)[..., 0]
    assert image.mode == "RGB" and values.min() == 0 and values.max() == 255
    assert abs(int(values[32, 0]) - 128) <= 1  # the middle of the ramp stays mid-grey
    assert len(np.unique(values)) > 200  # a ramp, not a wall of white


@pytest.mark.parametrize("mode", ["1", "L", "P", "CMYK", "I;16", "RGBA", "LA", "PA"])
def test_every_mode_the_python_api_may_hand_over_becomes_rgb(mode):
    source = Image.new("RGBA", (32, 32), (10, 20, 30, 255)).convert(mode) if mode != "I;16" else \
        Image.fromarray(np.full((32, 32), 40000, np.uint16))
    reference = check_pil_image(source)
    assert reference.image.mode == "RGB" and reference.image.size == (32, 32)
    assert source.mode == mode  # the caller's image is left as it was


def test_the_cli_and_the_server_decode_alike(tmp_path):
    data = _rotated_jpeg()
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    from_cli = load_reference_file(path).image
    from_server = decode_base64_image(base64.b64encode(data).decode()).image
    assert from_cli.size == from_server.size == (48, 96)
    assert np.array_equal(np.asarray(from_cli), np.asarray(from_server))


def test_an_edit_of_a_portrait_photo_keeps_its_shape(server):
    """OpenAI's size "auto" follows the first image's shape: upright, that is portrait."""
    boundary = "flux2exif"
    parts = [
        (b'Content-Disposition: form-data; name="prompt"\r\n\r\n' + TINY_PROMPT.encode()),
        b'Content-Disposition: form-data; name="steps"\r\n\r\n1',
        (b'Content-Disposition: form-data; name="image"; filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
         + _rotated_jpeg(1344, 768)),
    ]
    body = b"".join(b"--%s\r\n%s\r\n" % (boundary.encode(), part) for part in parts) + b"--%s--\r\n" % boundary.encode()
    reply = server.call("POST", "/v1/images/edits", raw=body,
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert reply.status == 200, reply.body[:300]
    width, height = map(int, reply.json()["size"].split("x"))
    assert height > width
