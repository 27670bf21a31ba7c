"""Reference images over HTTP: odd, hostile and mislabelled uploads are one 400, never a 500.

The record: a vLLM crash on a 1x1 image, decompression bombs (a tiny PNG declaring
60000x60000 pixels, zTXt chunks inflating to gigabytes), decoders for formats nobody
asked for (TIFF, PDF, FITS). The decoder itself is tested in test_reference_images.py
with the same payloads; here they arrive as ``input_image`` and ``input_images``.
"""

from __future__ import annotations

import base64

import pytest

from guarded_server import refused
from images import HOSTILE, data_url, png_bytes, png_declaring

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _generate(server, **fields):
    return server.call("POST", "/generate", {"prompt": "a red circle", "steps": 1, **fields})


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_images_are_a_400_as_data_url_bare_base64_and_in_a_list(server, name):
    payload = HOSTILE[name]
    for fields in ({"input_image": data_url(payload)},
                   {"input_image": base64.b64encode(payload).decode()},
                   {"input_images": [data_url(png_bytes((32, 32))), data_url(payload)]}):
        if not payload and "input_image" in fields and fields["input_image"] == "":
            continue  # an empty input_image means "no image", as the web UI sends it
        message = refused(server, _generate(server, **fields), 400)
        assert "input_image" in message


@pytest.mark.parametrize(("value", "words"), [
    (data_url(HOSTILE["tiff"], "image/tiff"), "PNG, JPEG or WebP"),
    (data_url(HOSTILE["pdf"], "application/pdf"), "PNG, JPEG or WebP"),
    (data_url(HOSTILE["fits"], "image/fits"), "PNG, JPEG or WebP"),
    (data_url(png_bytes((32, 32), fmt="GIF"), "image/gif"), "PNG, JPEG or WebP"),
    (base64.b64encode(png_bytes((32, 32), fmt="GIF")).decode(), "is not a PNG, JPEG or WebP"),
    (data_url(png_bytes((32, 32), fmt="GIF")), "is not a PNG, JPEG or WebP"),  # labelled PNG, is GIF
    (data_url(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"), "PNG, JPEG or WebP"),
    ("data:text/html;base64,PHNjcmlwdD4=", "PNG, JPEG or WebP"),
    ("data:image/png;base64,", "is empty"),  # the prefix only
    ("data:image/png;base64", "not valid base64"),
    ("data:image/png,iVBORw0KGgo=", "base64 data URL"),
    ("data:image/png;base64,iVBORw0KGgo===x", "not valid base64"),
    ("data:image/png;base64,!!!!", "not valid base64"),
    ("data:image/png;base64,\u00e9\u00e9\u00e9\u00e9", "not valid base64"),
    ("not base64 at all, just words", "not valid base64"),
    (data_url(png_bytes((1, 1))), "at least 16 pixels"),
    (data_url(png_bytes((16, 2000))), "at most 8x"),
    (data_url(png_declaring(60000, 60000)), "pixels"),
    (data_url(png_declaring(100_000, 100_000)), "too many pixels"),
    (data_url(png_declaring(6000, 4000)), "is 6000x4000; the limit is 16,515,072 pixels"),
    (data_url(png_declaring(2**31 - 1, 1)), "pixels"),
    (data_url(png_bytes()[:40]), "is not a PNG, JPEG or WebP"),
    (data_url(png_bytes(fmt="JPEG")[:200]), "is not a PNG, JPEG or WebP"),
    (5, "base64 string"),
    ({"url": "file:///etc/passwd"}, "base64 string"),
    (["data:image/png;base64,"], "base64 string"),
])
def test_mislabelled_and_malformed_uploads_get_a_400_naming_the_problem(server, value, words):
    message = refused(server, _generate(server, input_image=value), 400)
    assert words in message, message
    assert "/etc/passwd" not in message  # values are described, not echoed into paths


@pytest.mark.parametrize(("fields", "words"), [
    ({"input_images": "data:image/png;base64,AAAA"}, "input_images must be a list"),
    ({"input_images": [None]}, "base64 string"),
    ({"input_images": [data_url(png_bytes((32, 32)))] * 5}, "at most 4 reference images"),
    ({"input_images": [""] * 10_000}, "at most 4 reference images"),  # counted before decoding
    ({"input_image": data_url(png_bytes((32, 32))), "strength": 1.5}, "strength must be between 0.01 and 1"),
    ({"input_image": data_url(png_bytes((32, 32))), "strength": -0.1}, "strength must be between 0.01 and 1"),
    ({"input_image": data_url(png_bytes((32, 32))), "strength": 1.1}, "strength must be between 0.01 and 1"),
    ({"input_image": data_url(png_bytes((32, 32))), "strength": 0}, "strength must be between 0.01 and 1"),
    ({"input_image": data_url(png_bytes((32, 32))), "strength": "0.5"}, "strength must be a number"),
])
def test_reference_lists_and_strength_are_checked(server, fields, words):
    message = refused(server, _generate(server, **fields), 400)
    assert words in message, message
