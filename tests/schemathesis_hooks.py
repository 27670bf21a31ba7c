"""Loaded by Schemathesis (SCHEMATHESIS_HOOKS) in tests/test_schemathesis.py: reference images are
a string format JSON Schema cannot describe, so Schemathesis gets real small PNGs for it."""

import base64

import schemathesis
from schemathesis.core import file_samples
from hypothesis import strategies as st

from flux2cli.pipeline.fields import IMAGE_FORMAT
from images import png_bytes

_PNGS = [png_bytes(size, colour) for size, colour in (((32, 32), (200, 30, 30)), ((64, 48), (10, 200, 30)))]
schemathesis.openapi.format(IMAGE_FORMAT, st.sampled_from(
    [prefix + base64.b64encode(data).decode() for data in _PNGS for prefix in ("data:image/png;base64,", "")]))
# The edit route's image parts (multipart encoding contentType in the schema).
for media_type in ("image/png", "image/jpeg", "image/webp"):
    schemathesis.openapi.media_type(media_type, st.sampled_from(_PNGS))
# Its coverage phase sends its own smallest well-formed files (a 1x1 PNG); an upload here must be
# at least 16 pixels a side, a rule the schema of a binary form part cannot state, so the samples
# become real images of each format.
for extension, media_type, fmt in (("png", "image/png", "PNG"), ("jpg", "image/jpeg", "JPEG"),
                                   ("webp", "image/webp", "WEBP")):
    file_samples.FILE_SAMPLES[extension] = file_samples.MEDIA_TYPE_FILE_SAMPLES[media_type] = png_bytes(
        (32, 24), (40, 90, 200), fmt)
