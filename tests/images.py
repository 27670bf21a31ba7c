"""Hostile and ordinary image payloads shared by the reference-image tests."""

from __future__ import annotations

import base64
import io
import struct
import zlib

from PIL import Image


def png_bytes(size=(64, 64), color=(30, 180, 60), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny file whose header claims a huge image (a decompression bomb's first step)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def ztxt_bomb() -> bytes:
    """A valid small PNG with a zTXt chunk that inflates to 64 MB."""
    good = png_bytes((32, 32))
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (64 * 2**20), 9)
    iend = good.rindex(b"IEND") - 4
    return good[:iend] + _chunk(b"zTXt", text) + good[iend:]


def truncated_png() -> bytes:
    data = png_bytes((64, 64))
    return data[: len(data) // 2]


HOSTILE = {
    "one pixel": png_bytes((1, 1)),
    "huge header": png_declaring(60000, 60000),
    "ztxt bomb": ztxt_bomb(),
    "truncated": truncated_png(),
    "tiff": png_bytes((64, 64), fmt="TIFF"),
    "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "fits": b"SIMPLE  =                    T" + b" " * 2850,
    "text": b"hello, not an image",
    "empty": b"",
}


def saved_images(folder, count: int, prompt: str = "a saved circle", seed: int = 5) -> list[str]:
    """``count`` 16x16 images saved as the engine saves them (our names, our metadata chunk),
    without generating; returns their file names."""
    from types import SimpleNamespace

    from flux2cli.pipeline.output import save_images
    from flux2cli.pipeline.request import GenerationRequest

    request = GenerationRequest.create(prompt, model="tiny", steps=1, seed=seed)
    results = [SimpleNamespace(image=Image.new("RGB", (16, 16), (9, 9, 9)), seed=seed + i,
                               timings={"encoding": 0.0, "diffusion": 0.0}) for i in range(count)]
    return [saved.filename for saved in save_images(results, request, output_dir=folder, model_name="flux2-tiny")]
