"""Masked editing and outpainting (issue 16) on the tiny model and the [dev] / klein stand-ins.

The tiny model has learned background colours: a yellow input whose left half is masked,
with a prompt asking for a blue background, must come back blue on the left and byte for
byte yellow on the right, beyond the feather.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.inpaint import FEATHER, OVERLAP, build_canvas, feathered
from flux2cli.pipeline.request import GenerationRequest, MaskImage, ReferenceImage

PROMPT = "a red circle on a blue background"
YELLOW = (230, 220, 40)
KEPT = 32 + 2 * FEATHER  # the first column of the right half beyond the feather


def yellow(size=(64, 64)):
    return ReferenceImage("in.png", Image.new("RGB", size, YELLOW))


def left_half(size=(64, 64), value=255):
    grey = np.zeros(size[::-1], np.uint8)
    grey[:, : size[0] // 2] = value
    return MaskImage("mask.png", "0" * 64, Image.fromarray(grey, "L"))


def request(model="tiny", **values):
    values.setdefault("steps", 8)
    values.setdefault("seed", 3)
    values.setdefault("reference_images", [yellow()])
    return GenerationRequest.create(PROMPT, model=model, **values)


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def assert_blue_left_yellow_right(image):
    out = pixels(image)
    assert out.shape == (64, 64, 3)
    assert np.array_equal(out[:, KEPT:], pixels(yellow().image)[:, KEPT:])
    left = out[:, : 32 - 2 * FEATHER].reshape(-1, 3).mean(axis=0)
    assert left[2] > left[0] + 40 and left[2] > 120, left  # blue, not the input's yellow


def test_the_masked_half_takes_the_prompt_and_the_rest_is_kept_exactly(tiny_engine):
    assert_blue_left_yellow_right(tiny_engine.generate(request(mask=left_half()))[0].image)


def test_without_the_mask_the_same_request_changes_the_kept_half_too(tiny_engine):
    """The control for the test above: img2img alone does not keep the right half."""
    out = pixels(tiny_engine.generate(request(strength=1.0))[0].image)
    assert not np.array_equal(out[:, KEPT:], pixels(yellow().image)[:, KEPT:])


def test_a_batch_keeps_the_unmasked_pixels_in_every_image(tiny_engine):
    images = [result.image for result in tiny_engine.generate(request(mask=left_half(), batch=2))]
    assert len(images) == 2 and not np.array_equal(pixels(images[0]), pixels(images[1]))
    for image in images:
        assert np.array_equal(pixels(image)[:, KEPT:], pixels(yellow().image)[:, KEPT:])


def test_outpainting_grows_the_canvas_and_keeps_the_centre(tiny_engine):
    made = request(expand=[16, 16, 16, 16])
    assert (made.width, made.height, made.expand) == (96, 96, (16, 16, 16, 16))
    out = pixels(tiny_engine.generate(made)[0].image)
    assert out.shape == (96, 96, 3)
    inner = 16 + OVERLAP + 2 * FEATHER  # the input's own pixels beyond the overlap and the feather
    assert np.array_equal(out[inner:96 - inner, inner:96 - inner], pixels(yellow().image)[inner - 16:80 - inner,
                                                                                          inner - 16:80 - inner])
    border = out[:10].reshape(-1, 3).mean(axis=0)
    assert border[2] > border[0] + 40, border  # the new border follows the prompt


def test_an_odd_sized_input_comes_back_at_its_own_size(tiny_engine):
    made = request(reference_images=[yellow((70, 52))], mask=left_half((70, 52)), steps=4)
    out = pixels(tiny_engine.generate(made)[0].image)
    assert out.shape == (52, 70, 3) and (made.width, made.height) == (70, 52)
    assert np.array_equal(out[:, 35 + 2 * FEATHER:], pixels(yellow((70, 52)).image)[:, 35 + 2 * FEATHER:])


def test_strength_applies_inside_the_mask(tiny_engine):
    """At strength 0.1 one step of eight runs: the masked half stays close to the input."""
    low = pixels(tiny_engine.generate(request(mask=left_half(), strength=0.1))[0].image)[:, :24]
    full = pixels(tiny_engine.generate(request(mask=left_half()))[0].image)[:, :24]
    target = np.array(YELLOW)
    assert np.abs(low - target).mean() < np.abs(full - target).mean()


# --------------------------------------------------------------------------- the rules


def test_a_mask_of_another_size_is_resized_with_a_notice():
    made = request(mask=left_half((32, 32)))
    assert made.mask.size == (64, 64)
    assert any("resized" in notice for notice in made.notices)


@pytest.mark.parametrize("values,field,words", [
    ({"mask": left_half(), "reference_images": []}, "mask_image", "add an input image"),
    ({"expand": [16, 0, 0, 0], "reference_images": []}, "expand", "add an input image"),
    ({"mask": left_half(value=0)}, "mask_image", "all black"),
    ({"expand": [0, 0, 2000, 0]}, "expand", "between 0 and 48"),
    ({"expand": [48, 48, 48, 48], "reference_images": [yellow((256, 64))]}, "expand", "larger than"),
    ({"expand": [1, 2, 3]}, "expand", "four whole numbers"),
    ({"expand": [1, 2, 3, True]}, "expand", "four whole numbers"),
    ({"expand": [-1, 0, 0, 0]}, "expand", "between 0"),
])
def test_refusals_name_their_field(values, field, words):
    with pytest.raises(InvalidRequest, match=words) as error:
        request(**values)
    assert error.value.field == field


def test_an_all_white_mask_goes_on_with_a_notice_and_an_all_black_one_may_expand():
    assert not any("all white" in n for n in request(mask=left_half()).notices)
    full = MaskImage("m", "0" * 64, Image.new("L", (64, 64), 255))
    assert any("all white" in n for n in request(mask=full).notices)
    black = MaskImage("m", "0" * 64, Image.new("L", (64, 64), 0))
    assert request(mask=black, expand=[0, 0, 16, 0]).width == 80


def test_expansion_rounds_up_to_16_and_zero_is_none():
    assert request(expand=[1, 0, 17, 16]).expand == (16, 0, 32, 16)
    assert request(expand=[0, 0, 0, 0]).expand is None


def test_a_given_size_is_ignored_with_a_notice_and_strength_defaults_to_one():
    made = request(mask=left_half(), width=128, height=128)
    assert (made.width, made.height, made.strength) == (64, 64, 1.0)
    assert any("size given is ignored" in n for n in made.notices)


def test_metadata_records_the_masks_digest_and_size_and_the_expansion():
    data = request(mask=left_half(), expand=[16, 0, 0, 0]).to_metadata()
    assert data["mask"] == {"sha256": "0" * 64, "width": 64, "height": 64}
    assert data["expand"] == (16, 0, 0, 0)


def test_the_canvas_marks_the_border_and_the_overlap_and_the_feather_stops():
    canvas = build_canvas(yellow().image, None, (16, 0, 0, 0))
    grey = np.asarray(canvas.mask)
    assert canvas.generate_size == (80, 64) and canvas.output_size == (80, 64)
    assert (grey[:, : 16 + OVERLAP] == 255).all() and (grey[:, 16 + OVERLAP:] == 0).all()
    soft = np.asarray(feathered(canvas.mask))
    assert (soft[:, 16 + OVERLAP + 2 * FEATHER:] == 0).all() and (soft[:, : 16 + OVERLAP] == 255).all()


# --------------------------------------------------------------------------- both pipeline classes


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("name,pipeline", [("dev", "Flux2Pipeline"), ("klein-4b", "Flux2KleinPipeline")])
def test_the_stand_ins_of_both_pipelines_keep_the_unmasked_pixels(si, monkeypatch, name, pipeline):
    from flux2cli.pipeline.engine import Engine
    from flux2cli.pipeline.loading import LoadOptions

    si.use_cache(monkeypatch)
    engine = Engine.load(name, LoadOptions(hub_cache=si.cache))
    assert type(engine.pipe).__name__ == pipeline
    made = request(name, mask=left_half(), steps=engine.spec.step_range[0] + 1)
    [masked] = engine.generate(made)
    out = pixels(masked.image)
    assert np.array_equal(out[:, KEPT:], pixels(yellow().image)[:, KEPT:])
    assert not np.array_equal(out[:, :24], pixels(yellow().image)[:, :24])  # the masked half was redrawn
    [grown] = engine.generate(request(name, expand=[16, 16, 16, 16], steps=engine.spec.step_range[0] + 1))
    assert grown.image.size == (96, 96)
