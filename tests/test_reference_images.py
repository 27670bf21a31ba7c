"""Reference images and strength (img2img / multi-reference) on the tiny model."""

import base64

import numpy as np
import pytest
import torch
from PIL import Image

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.images import check_pil_image, decode_base64_image, load_reference_file
from flux2cli.pipeline.img2img import steps_to_run
from flux2cli.pipeline.request import GenerationRequest, ReferenceImage
from images import HOSTILE, png_bytes
from test_cli import run

PROMPT = "a red circle on a blue background"


def _ref(color=(30, 180, 60), size=(64, 64)):
    return ReferenceImage("test", Image.new("RGB", size, color))


def _request(**kwargs):
    kwargs.setdefault("steps", 8)
    return GenerationRequest.create(PROMPT, model="tiny", orientation="square", seed=3, **kwargs)


@pytest.mark.parametrize("steps,strength,expected", [(8, 1.0, 8), (8, 0.5, 4), (8, 0.3, 3), (4, 0.1, 1), (25, 0.75, 19)])
def test_steps_to_run_follows_the_diffusers_convention(steps, strength, expected):
    assert steps_to_run(steps, strength) == expected


def test_strength_one_is_the_pipelines_own_reference_path(tiny_engine):
    ours = tiny_engine.generate(_request(reference_images=[_ref()], strength=1.0))[0].image
    with torch.inference_mode():
        direct = tiny_engine.pipe(prompt=PROMPT, image=[_ref().image], height=64, width=64,
                                  num_inference_steps=8, guidance_scale=1.0, max_sequence_length=32,
                                  generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(np.asarray(ours), np.asarray(direct))


def _sigmas_used(engine, request):
    """The sigma of every step the pipeline really ran, and how often the transformer ran."""
    seen, calls = [], []
    real_forward = engine.pipe.transformer.forward

    def counting_forward(*args, **kwargs):
        calls.append(1)
        return real_forward(*args, **kwargs)

    engine.pipe.transformer.forward = counting_forward
    try:
        engine.generate(request, on_step=lambda event: seen.append(float(
            engine.pipe.scheduler.sigmas[event.step - 1])))
    finally:
        del engine.pipe.transformer.forward
    return seen, len(calls)


def test_low_strength_runs_only_the_tail_of_the_shifted_schedule(tiny_engine):
    full, full_calls = _sigmas_used(tiny_engine, _request(reference_images=[_ref()], strength=1.0))
    tail, tail_calls = _sigmas_used(tiny_engine, _request(reference_images=[_ref()], strength=0.5))
    assert (full_calls, tail_calls) == (8, 4)
    assert tail == pytest.approx(full[4:], abs=1e-6)
    # The shifted level is far from the naive linear one at this step (0.5).
    assert abs(full[4] - 0.5) > 0.05


def test_low_strength_starts_from_the_reference(tiny_engine):
    """At strength 0.1 only 1 of 8 steps runs: the output stays close to the input."""
    green = _ref((30, 180, 60))
    kept = np.asarray(tiny_engine.generate(_request(reference_images=[green], strength=0.1))[0].image, float)
    free = np.asarray(tiny_engine.generate(_request(reference_images=[green], strength=1.0))[0].image, float)
    # Through the VAE round trip, not exact: compare distances to the input colour.
    target = np.array([30, 180, 60], float)
    assert np.abs(kept - target).mean() < np.abs(free - target).mean()


def test_two_references_and_strength_in_metadata(tiny_engine, tmp_path):
    request = _request(reference_images=[_ref(), _ref((220, 30, 30), (40, 24))], strength=0.6)
    saved = tiny_engine.generate_and_save(request, tmp_path)
    with Image.open(saved[0].path) as png:
        assert "Denoising strength: 0.6" in png.text["parameters"]
        assert png.size == (64, 64)


def test_large_references_are_shrunk_keeping_aspect(tiny_engine):
    seen = []
    real_call = type(tiny_engine.pipe).__call__

    def spy(pipe, *args, **kwargs):
        seen.extend(image.size for image in kwargs["image"])
        return real_call(pipe, *args, **kwargs)

    type(tiny_engine.pipe).__call__ = spy
    try:
        tiny_engine.generate(_request(reference_images=[_ref(size=(640, 320))], strength=1.0))
    finally:
        type(tiny_engine.pipe).__call__ = real_call
    (width, height), = seen
    assert (width, height) == (128, 64)  # shrunk, aspect kept, no side under 64 px


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_images_are_one_clear_error(name, tmp_path):
    payload = HOSTILE[name]
    path = tmp_path / "in.png"
    path.write_bytes(payload)
    with pytest.raises(InvalidRequest) as from_file:
        load_reference_file(path)
    with pytest.raises(InvalidRequest) as from_base64:
        decode_base64_image("data:image/png;base64," + base64.b64encode(payload).decode())
    for error in (from_file.value, from_base64.value):
        assert "\n" not in str(error) and str(tmp_path) not in str(from_base64.value)


@pytest.mark.parametrize("text,message", [
    ("not base64 at all!", "not valid base64"),
    ("data:image/png;base64,", "empty"),
    ("data:image/tiff;base64,AAAA", "PNG, JPEG or WebP"),
    ("data:image/png,rawbytes", "base64 data URL"),
    (42, "base64 string")])
def test_bad_base64_payloads(text, message):
    with pytest.raises(InvalidRequest, match=message):
        decode_base64_image(text)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_good_formats_decode_as_data_url_bare_base64_and_file(fmt, tmp_path):
    data = png_bytes((40, 24), (245, 140, 20), fmt=fmt)
    for text in (f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode(),
                 base64.b64encode(data).decode()):
        assert decode_base64_image(text).image.size == (40, 24)
    path = tmp_path / f"in.{fmt.lower()}"
    path.write_bytes(data)
    reference = load_reference_file(path)
    assert reference.image.mode == "RGB" and reference.source == str(path)


def test_transparent_pixels_become_white_not_black():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    assert check_pil_image(rgba).image.getpixel((0, 0)) == (255, 255, 255)


def test_cli_img2img_and_its_errors(tmp_path):
    good = tmp_path / "green.png"
    good.write_bytes(png_bytes((64, 64)))
    ok = run("generate", PROMPT, "--model", "tiny", "--steps", "4", "--input-image", str(good),
             "--input-image", str(good), "--strength", "0.5", "--output-dir", str(tmp_path / "out"))
    assert ok.returncode == 0, ok.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 1

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(HOSTILE["huge header"])
    for args, message in ((["--input-image", str(bomb)], "has too many pixels"),
                          (["--input-image", str(tmp_path / "missing.png")], "does not exist"),
                          (["--strength", "0.5"], "strength needs a reference image")):
        result = run("generate", PROMPT, "--model", "tiny", *args, "--output-dir", str(tmp_path / "bad"))
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


def test_the_pixel_limit_is_given_as_width_x_height():
    from images import png_declaring

    from flux2cli.pipeline.images import decode_image_bytes

    with pytest.raises(InvalidRequest) as info:
        decode_image_bytes(png_declaring(6000, 3000), "reference image")
    assert str(info.value) == "reference image is 6000x3000; the limit is 16,515,072 pixels, as in 5376x3072"
    with pytest.raises(InvalidRequest) as info:
        check_pil_image(Image.new("L", (4200, 4200)), "input_image")
    assert str(info.value).endswith("the limit is 16,515,072 pixels, as in 5376x3072")
