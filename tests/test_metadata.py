import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.metadata import parse_a1111, read_parameters
from flux2cli.pipeline.output import save_image
from flux2cli.pipeline.request import GenerationRequest


def test_our_own_images_round_trip(tmp_path):
    request = GenerationRequest.create("a red circle", model="tiny", orientation="portrait", size="2mp",
                                       steps=7, seed=99, raw_input="a red circle /portrait /2k")
    saved = save_image(Image.new("RGB", (96, 160)), request, seed=100, timings={"encoding": 0, "diffusion": 0},
                       output_dir=tmp_path, model_name="flux2-tiny")
    params = read_parameters(saved.path)
    assert params.source == "flux2" and params.prompt == "a red circle"
    assert params.settings == {"model": "tiny", "steps": 7, "seed": 100, "orientation": "portrait", "size": "2mp"}
    again = GenerationRequest.create(params.prompt, **params.settings)
    assert (again.width, again.height, again.seed) == (request.width, request.height, 100)


A1111 = ('a castle on a hill, "golden hour"\nsecond line\nNegative prompt: blurry, low quality\n'
         'Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 832x1216, '
         'Model hash: abc123, Model: sdxl_base, Lora hashes: "a: 1, b: 2"')


def test_a1111_parameters_are_parsed():
    params = parse_a1111(A1111)
    assert params.prompt == 'a castle on a hill, "golden hour"\nsecond line'
    assert params.settings == {"steps": 30, "seed": 1234, "width": 832, "height": 1216, "guidance": 6.5}
    assert params.extra["Sampler"] == "DPM++ 2M Karras" and params.extra["Negative prompt"] == "blurry, low quality"
    assert params.extra["Lora hashes"] == "a: 1, b: 2"


def test_a1111_chunk_in_a_foreign_png(tmp_path):
    info = PngInfo()
    info.add_text("parameters", "a dog\nSteps: 20, Seed: 5, Size: 512x512")
    path = tmp_path / "foreign.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    params = read_parameters(path)
    assert (params.source, params.prompt, params.settings["seed"]) == ("a1111", "a dog", 5)


def test_prompt_only_parameters():
    assert parse_a1111("just a prompt").prompt == "just a prompt"


@pytest.mark.parametrize("content,message", [(None, "no generation parameters"), (b"junk", "not a readable PNG")])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "x.png"
    if content is None:
        Image.new("RGB", (8, 8)).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidRequest, match=message):
        read_parameters(path)
    with pytest.raises(InvalidRequest, match="does not exist"):
        read_parameters(tmp_path / "missing.png")
