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


# --------------------------------------------------------------------------- the front ends


def png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def decoded(b64_text: str):
    import base64
    import io

    return Image.open(io.BytesIO(base64.b64decode(b64_text)))


def test_the_cli_keeps_the_unmasked_pixels_and_expands(tmp_path):
    from console_script import run

    (tmp_path / "in.png").write_bytes(png(yellow().image))
    (tmp_path / "mask.png").write_bytes(png(left_half().image))
    done = run("generate", PROMPT, "--model", "tiny", "--input-image", str(tmp_path / "in.png"), "--mask",
               str(tmp_path / "mask.png"), "--steps", "8", "--seed", "3", "--output-dir", str(tmp_path / "out"),
               "--json", "--local")
    assert done.returncode == 0, done.stderr
    import json

    [entry] = json.loads(done.stdout)["images"]
    image = Image.open(entry["path"])
    assert_blue_left_yellow_right(image.convert("RGB"))
    stored = json.loads(image.text["flux2"])
    import hashlib

    assert stored["mask"] == {"sha256": hashlib.sha256((tmp_path / "mask.png").read_bytes()).hexdigest(),
                              "width": 64, "height": 64}
    replay = run("generate", "--from-image", entry["path"], "--steps", "1", "--output-dir", str(tmp_path / "r"),
                 "--local")
    assert replay.returncode == 0 and "pass the mask file again with --mask" in replay.stderr, replay.stderr

    grown = run("generate", PROMPT, "--model", "tiny", "-i", str(tmp_path / "in.png"), "--expand", "16,16,16,16",
                "--steps", "4", "--output-dir", str(tmp_path / "out2"), "--json", "--local")
    assert grown.returncode == 0, grown.stderr
    assert Image.open(json.loads(grown.stdout)["images"][0]["path"]).size == (96, 96)


@pytest.mark.parametrize("args,words", [
    (["--mask", "MASK"], "mask_image edits the first reference image; add an input image"),
    (["-i", "IN", "--mask", "BLACK"], "the mask is all black"),
    (["-i", "IN", "--expand", "1,2"], "--expand takes four whole numbers"),
    (["-i", "IN", "--expand", "0,0,400,0"], "expand must be four whole numbers"),
    (["-i", "IN", "--mask", "IN.txt"], "is not a PNG, JPEG or WebP image"),
])
def test_cli_refusals_are_one_line_exit_2_and_save_nothing(tmp_path, args, words):
    from console_script import run

    (tmp_path / "IN").write_bytes(png(yellow().image))
    (tmp_path / "MASK").write_bytes(png(left_half().image))
    (tmp_path / "BLACK").write_bytes(png(Image.new("L", (64, 64), 0)))
    (tmp_path / "IN.txt").write_text("not an image")
    paths = [str(tmp_path / arg) if (tmp_path / arg).exists() else arg for arg in args]
    done = run("generate", PROMPT, "--model", "tiny", *paths, "--output-dir", str(tmp_path / "out"), "--local")
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def fetched(server, reply):
    import io

    got = server.call("GET", f"/images/{reply.json()['images'][0]['filename']}")
    return Image.open(io.BytesIO(got.body))


def test_the_server_takes_mask_image_and_expand(server):
    body = {"prompt": PROMPT, "steps": 8, "seed": 3, "input_image": "data:image/png;base64," + b64(png(yellow().image)),
            "mask_image": b64(png(left_half().image))}
    reply = server.call("POST", "/generate", body)
    assert reply.status == 200, reply.body[:300]
    assert_blue_left_yellow_right(fetched(server, reply).convert("RGB"))

    grown = server.call("POST", "/generate", {**body, "mask_image": None, "expand": [16, 16, 16, 16], "steps": 2})
    assert grown.status == 200 and fetched(server, grown).size == (96, 96)

    for bad, field in (({"mask_image": body["mask_image"], "input_image": None}, "mask_image"),
                       ({"expand": [16, 0, 0]}, "expand"), ({"mask_image": "bm90IGFuIGltYWdl"}, "mask_image")):
        refused = server.call("POST", "/jobs", {**body, **bad})
        assert refused.status == 400 and refused.json()["error"].startswith(field), refused.body[:300]


def test_the_openai_edit_route_takes_a_transparent_pixel_mask(server):
    openai = pytest.importorskip("openai")
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0  # OpenAI's convention: transparent = the area to edit
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0, timeout=120) as client:
        result = client.images.edit(image=("in.png", png(yellow().image), "image/png"), prompt=PROMPT,
                                    mask=("mask.png", png(Image.fromarray(rgba, "RGBA")), "image/png"),
                                    extra_body={"steps": 8, "seed": 3})
    assert_blue_left_yellow_right(decoded(result.data[0].b64_json).convert("RGB"))


def test_the_repl_sets_a_mask_and_an_expansion(tiny_engine, tmp_path):
    from flux2cli.pipeline.registry import get_model
    from flux2cli.repl.actions import Generate, Reply
    from flux2cli.repl.session import ReplSession

    (tmp_path / "in.png").write_bytes(png(yellow().image))
    (tmp_path / "mask.png").write_bytes(png(left_half().image))
    s = ReplSession(get_model("tiny"), steps=8)
    refused = s.handle(f"/mask {tmp_path / 'mask.png'}")
    assert isinstance(refused, Reply) and refused.kind == "error" and "/image" in refused.text
    for line in (f"/image {tmp_path / 'in.png'}", f"/mask {tmp_path / 'mask.png'}", "/seed 3"):
        assert s.handle(line).kind == "note"
    action = s.handle(PROMPT)
    assert isinstance(action, Generate)
    assert_blue_left_yellow_right(tiny_engine.generate(action.request)[0].image)
    assert s.handle("/mask off").text == "now: no mask"
    assert "expand 16,16,16,16" in s.handle("/expand 16").text
    grown = s.handle(PROMPT)
    assert tiny_engine.generate(replace_steps(grown.request))[0].image.size == (96, 96)
    assert s.handle("/expand 1,2").kind == "error"


def replace_steps(request):
    from dataclasses import replace

    return replace(request, steps=2)
