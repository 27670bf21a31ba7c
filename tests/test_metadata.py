import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.metadata import ImageParameters, parse_a1111, plan_replay, read_parameters, replay_command
from flux2cli.pipeline.output import a1111_parameters, save_image
from flux2cli.pipeline.request import GenerationRequest


def test_our_own_images_round_trip(tmp_path):
    request = GenerationRequest.create("a red circle", model="tiny", orientation="portrait", size="2mp",
                                       steps=7, seed=99, raw_input="a red circle /portrait /2k")
    saved = save_image(Image.new("RGB", (96, 160)), request, seed=100, timings={"encoding": 0, "diffusion": 0},
                       output_dir=tmp_path, model_name="flux2-tiny")
    params = read_parameters(saved.path)
    assert params.source == "flux2" and params.prompt == "a red circle"
    assert params.settings == {"model": "tiny", "steps": 7, "seed": 100, "batch": 1, "orientation": "portrait",
                               "size": "2mp"}
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


def test_our_a1111_chunk_alone_names_the_registry_model():
    request = GenerationRequest.create("a cat", model="klein-4b", width=512, height=512, steps=4, seed=3)
    params = parse_a1111(a1111_parameters(request, 3, "FLUX.2-klein-4B"))
    assert params.settings == {"steps": 4, "seed": 3, "width": 512, "height": 512, "model": "klein-4b"}
    assert "Model" not in params.extra


def test_other_tools_models_stay_extra():
    params = parse_a1111(A1111)
    assert "model" not in params.settings and params.extra["Model"] == "sdxl_base"


STORED = ImageParameters("flux2", "a red circle", {"model": "tiny", "steps": 5, "seed": 40, "batch": 2,
                                                   "orientation": "square", "size": "2mp"},
                         {"reference_images": [], "strength": None})


def test_replay_keeps_what_the_user_did_not_give():
    replay = plan_replay(STORED, {"steps": None, "seed": None})
    assert replay.spec.name == "tiny" and replay.prompt == "a red circle"
    assert replay.settings == {"steps": 5, "seed": 40, "batch": 2, "orientation": "square", "size": "2mp"}
    assert replay.notices == () and replay.strength is None
    request = GenerationRequest.create(replay.prompt, model=replay.spec, **replay.settings)
    assert (request.width, request.height, request.seeds) == (128, 128, [40, 41])


def test_given_values_win_and_dimensions_go_as_a_group():
    replay = plan_replay(STORED, {"seed": 1, "batch": 1, "orientation": "portrait"}, prompt="a blue square")
    assert replay.prompt == "a blue square"
    assert replay.settings == {"steps": 5, "seed": 1, "batch": 1, "orientation": "portrait", "size": "2mp"}
    explicit = plan_replay(STORED, {"width": 96, "height": 64})
    assert "orientation" not in explicit.settings and "size" not in explicit.settings
    assert (explicit.settings["width"], explicit.settings["height"]) == (96, 64)
    back = plan_replay(ImageParameters("a1111", "x", {"width": 512, "height": 512}), {"size": "2mp"}, model="tiny")
    assert back.settings == {"size": "2mp"}


def test_model_flags_beat_the_stored_model_and_distilled_models_drop_stored_guidance():
    dev_image = ImageParameters("flux2", "a cat", {"model": "dev", "steps": 30, "guidance": 4.5, "seed": 1})
    assert plan_replay(dev_image, {}).settings["guidance"] == 4.5
    klein = plan_replay(dev_image, {}, model="klein-4b")
    assert klein.spec.name == "klein-4b" and "guidance" not in klein.settings
    assert plan_replay(dev_image, {"guidance": 2.0}, model="klein-4b").settings["guidance"] == 2.0  # the user's
    assert plan_replay(dev_image, {}, gguf="q8").spec.name == "dev-gguf-q8"


def test_images_without_a_model_use_the_default_the_front_end_passes():
    stored = parse_a1111("a dog\nSteps: 20, Seed: 5, Size: 512x512")
    assert plan_replay(stored, {}, default_model="tiny").spec.name == "tiny"
    assert plan_replay(stored, {}).spec.name == "dev-bnb4"


def test_unknown_stored_model_says_what_to_do():
    with pytest.raises(InvalidRequest, match="made with model 'flux9'.*--model"):
        plan_replay(ImageParameters("flux2", "a cat", {"model": "flux9"}), {})


def test_references_are_not_replayed_silently():
    stored = ImageParameters("flux2", "a cat", {"model": "tiny", "strength": 0.4}, {"reference_images": ["ref.png"]})
    assert "--input-image" in plan_replay(stored, {}).notices[0]
    again = plan_replay(stored, {}, references=1)
    assert again.notices == () and again.strength == 0.4
    assert plan_replay(stored, {}, references=1, strength=0.9).strength == 0.9


def test_replay_command_is_a_shell_line():
    line = replay_command(ImageParameters("a1111", "it's a \"cat\"", {"steps": 20, "guidance": 6.5, "batch": 1}))
    assert line == """flux2 generate 'it'"'"'s a "cat"' --steps 20 --guidance 6.5"""
