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
