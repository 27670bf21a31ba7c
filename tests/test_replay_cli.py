"""`flux2 info IMAGE.png` and `flux2 generate --from-image`, through the installed console script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from console_script import FLUX2, run

pytestmark = pytest.mark.slow


def stored(path: str | Path) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text["flux2"])


def generate_json(*args: str) -> list[Path]:
    result = run("generate", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [Path(image["path"]) for image in json.loads(result.stdout)["images"]]


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    """The second image of a batch of two: seed 8, settings that differ from every default."""
    folder = tmp_path_factory.mktemp("original")
    paths = generate_json("a yellow square on a black background /portrait", "--model", "tiny", "--seed", "7",
                          "--steps", "3", "--batch", "2", "--size", "2mp", "-o", str(folder))
    return next(path for path in paths if stored(path)["seed"] == 8)


def test_info_prints_the_stored_parameters(original):
    result = run("info", str(original))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{original}: flux2 metadata"
    for name, value in [("prompt", "a yellow square on a black background"), ("model", "tiny"),
                        ("orientation", "portrait"), ("size", "2mp"), ("steps", "3"), ("seed", "8"),
                        ("batch", "2")]:
        assert any(line.split(None, 1) == [name, value] for line in lines), (name, lines)
    assert f"re-run:  flux2 generate --from-image {original}" in lines
    timings = next(line for line in lines if line.split(None, 1)[0] == "timings")  # words, not JSON
    assert re.fullmatch(r"\s+timings\s+encoding [\d.]+ s, diffusion [\d.]+ s, total [\d.]+ s", timings), timings
    assert "{" not in result.stdout
    assert ("or edit: flux2 generate 'a yellow square on a black background' --model tiny --orientation portrait "
            "--size 2mp --steps 3 --seed 8 --batch 2") in lines


def test_info_json(original):
    result = run("info", str(original), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["source"] == "flux2" and report["prompt"] == "a yellow square on a black background"
    assert report["settings"] == {"model": "tiny", "steps": 3, "seed": 8, "batch": 2, "orientation": "portrait",
                                  "size": "2mp"}
    assert report["extra"]["raw_input"] == "a yellow square on a black background /portrait"


def test_from_image_reruns_the_stored_settings(original, tmp_path):
    paths = generate_json("--from-image", str(original), "-o", str(tmp_path))
    assert len(paths) == 2  # the stored batch, starting at this image's own seed
    again = stored(paths[0])
    for key in ("prompt", "model", "width", "height", "orientation", "size", "steps", "batch"):
        assert again[key] == stored(original)[key], key
    assert sorted(stored(path)["seed"] for path in paths) == [8, 9]


def test_options_on_the_command_line_win(original, tmp_path):
    result = run("generate", "a blue circle on a white background /square", "--from-image", str(original),
                 "--steps", "2", "--seed", "3", "--batch", "1", "-o", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    [path] = [Path(image["path"]) for image in json.loads(result.stdout)["images"]]
    again = stored(path)
    assert (again["prompt"], again["steps"], again["seed"], again["batch"]) == (
        "a blue circle on a white background", 2, 3, 1)
    assert (again["orientation"], again["size"], again["model"]) == ("square", "2mp", "tiny")  # size kept
    assert again["raw_input"] == "a blue circle on a white background /square"


def test_a_foreign_a1111_image(tmp_path):
    info = PngInfo()
    info.add_text("parameters", "a red circle on a blue background\nNegative prompt: blurry\n"
                                "Steps: 4, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x48, Model: sd15")
    foreign = tmp_path / "foreign.png"
    Image.new("RGB", (64, 48)).save(foreign, pnginfo=info)

    shown = run("info", str(foreign))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"{foreign}: A1111-style parameters"
    assert "Negative prompt  blurry" in shown.stdout and "Sampler" in shown.stdout

    result = run("generate", "--from-image", str(foreign), "--model", "tiny", "-o", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    again = stored(json.loads(result.stdout)["images"][0]["path"])
    assert (again["prompt"], again["width"], again["height"], again["steps"], again["seed"]) == (
        "a red circle on a blue background", 64, 48, 4, 1234)
    assert "guidance" not in result.stderr  # CFG 7 belonged to the other model: dropped without a word


@pytest.mark.parametrize("args,message", [
    (["generate"], "error: give a prompt, or --from-image IMAGE.png"),
    (["generate", "--from-image", "missing.png"], "error: missing.png does not exist"),
    (["info", "missing.png"], "error: missing.png does not exist"),
    (["generate", "--from-image", "notes.txt"], "error: notes.txt is not a readable PNG image"),
])
def test_unusable_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("hello")
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert result.stderr.startswith(message), result.stderr
    assert not list(tmp_path.rglob("*.png"))


def test_reading_an_image_imports_no_torch(original):
    result = subprocess.run([sys.executable, "-X", "importtime", FLUX2, "info", str(original)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "PIL.PngImagePlugin" in imported and not {"torch", "diffusers", "transformers"} & imported
