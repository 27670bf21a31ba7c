"""The spec's Python API: from flux2cli import load_model, generate_image."""

import numpy as np
import pytest


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, flux2cli; flux2cli.generate_image; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_load_model_and_generate_image():
    from flux2cli import generate_image, load_model

    engine = load_model(model="tiny")
    assert engine.spec.name == "tiny"
    image, seed, timings = generate_image(prompt="a red square on a green background", seed=12345, steps=2)
    assert seed == 12345 and image.size == (80, 48)  # the model's default: landscape 1 MP
    assert {"encoding", "diffusion", "total"} <= set(timings)
    again, _, _ = generate_image("a red square on a green background", seed=12345, steps=2,
                                 width=64, height=64)
    assert again.size == (64, 64)
    random_seed = generate_image("a red square on a green background", steps=2)[1]
    assert isinstance(random_seed, int) and random_seed >= 0
    repeat, _, _ = generate_image("a red square on a green background", seed=12345, steps=2)
    assert np.array_equal(np.asarray(image), np.asarray(repeat))


def test_generate_image_validates_like_everything_else():
    from flux2cli import generate_image, load_model
    from flux2cli.errors import InvalidRequest

    load_model(model="tiny")
    with pytest.raises(InvalidRequest, match="steps"):
        generate_image("x", steps=0)


def test_generate_image_follows_the_cli_rules_for_reference_images(tmp_path):
    from PIL import Image

    from flux2cli import generate_image, load_model
    from flux2cli.errors import InvalidRequest

    load_model(model="tiny")
    with pytest.raises(InvalidRequest, match="strength needs an input_image"):
        generate_image("a red square on a green background", steps=2, strength=0.4)
    # the reference's own example passes input_image=None with strength=0.75: it keeps working
    generate_image("a red square on a green background", steps=2, input_image=None, strength=0.75)
    path = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (20, 200, 40)).save(path)
    from_path, _, _ = generate_image("a red square on a green background", seed=4, steps=2, input_image=str(path),
                                     strength=0.5, width=64, height=64)
    from_image, _, _ = generate_image("a red square on a green background", seed=4, steps=2,
                                      input_image=Image.open(path), strength=0.5, width=64, height=64)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_image))
    with pytest.raises(InvalidRequest, match="does not exist"):
        generate_image("x", steps=2, input_image=str(tmp_path / "missing.png"))


def test_on_preview_sees_the_image_form_and_approach_the_result():
    from flux2cli import generate_image, load_model

    load_model(model="tiny")
    previews = []
    image, _, _ = generate_image("a yellow circle on a blue background", seed=21, steps=8, width=64, height=64,
                                 on_preview=previews.append)
    assert len(previews) == 7  # every step but the first, which has no estimate of the result yet
    assert all(max(p.size) <= 256 for p in previews)
    final = np.asarray(image.resize(previews[-1].size), dtype=float)
    distances = [np.abs(np.asarray(p, dtype=float) - final).mean() for p in previews]
    assert distances[-1] < distances[0], distances  # the colours approach the final image's
    assert distances[-1] < 45, distances  # close: the linear map itself is off by 34/255 on average
