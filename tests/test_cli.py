"""The installed `flux2` console script, run as a user would, in subprocesses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from console_script import FLUX2, run


def test_console_script_is_installed():
    assert FLUX2, "flux2 is not on PATH: install the package (pip install -e .)"


def test_generate_json_writes_png_and_sidecar(tmp_path):
    result = run("generate", "a red circle on a blue background /square", "--model", "tiny",
                 "--seed", "7", "--steps", "3", "--batch", "2", "--output-dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["success"] is True and body["generation_time"] > 0
    assert [image["seed"] for image in body["images"]] == [7, 8]
    for image in body["images"]:
        path = Path(image["path"])
        assert path.parent == tmp_path and path.name == image["filename"]
        assert set(image["timings"]) == {"encoding", "diffusion", "save", "total"}
        with Image.open(path) as png:
            assert png.size == (64, 64)
        sidecar = path.with_suffix(".prompt").read_text().splitlines()
        assert sidecar[:5] == ["# Raw input: a red circle on a blue background /square",
                               "# Prompt: a red circle on a blue background",
                               "# Dimensions: 64x64", f"# Seed: {image['seed']}", "# Steps: 3"]
    assert "Traceback" not in result.stderr


def test_human_output_names_the_files(tmp_path):
    result = run("generate", "a white square on a black background", "--model", "tiny", "--steps", "2",
                 "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(written) == 1 and written[0] in result.stdout and "seed" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "steps must be between 1 and 50"),
    (["--orientation", "diagonal"], "orientation must be one of"),
    (["--batch", "9"], "batch must be between 1 and 4"),
    (["--model", "flux3"], "unknown model 'flux3'"),
    (["--gguf", "q5"], "--gguf takes one of"),
    (["--steps", "many"], "Invalid value for '--steps'"),
    (["a red circle /portrat"], "/portrat is not a modifier: did you mean /portrait?"),
    (["--orientation", "Square", "--width", "64"], "give both width and height"),  # Square read as square
])
def test_usage_errors_exit_2_with_one_line(args, message, tmp_path):
    prompt = args.pop(0) if args and not args[0].startswith("-") else "a cat"
    result = run("generate", prompt, "--model", "tiny", *args, "--output-dir", str(tmp_path))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_validation_error_is_exactly_one_line(tmp_path):
    result = run("generate", "a cat", "--model", "tiny", "--steps", "99", "--output-dir", str(tmp_path))
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: steps must be between 1 and 50")


def test_uncached_models_fail_clearly_offline(tmp_path):
    result = run("generate", "a cat", "--gguf", "q8", "--output-dir", str(tmp_path))
    assert result.returncode == 1
    assert "not in the local Hugging Face cache" in result.stderr and "Traceback" not in result.stderr


def test_debug_variable_shows_the_traceback(tmp_path):
    result = run("generate", "a cat", "--gguf", "q8", env={"FLUX2_DEBUG": "1"})
    assert "Traceback" in result.stderr and result.returncode == 1


def test_info_json_lists_models_and_versions():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    names = [row["name"] for row in report["models"]]
    assert names[0] == "dev-bnb4" and "tiny" in names
    tiny = next(row for row in report["models"] if row["name"] == "tiny")
    assert tiny["cached"] is True and tiny["license"] == "Apache-2.0"
    assert report["versions"]["flux2cli"] and report["versions"]["diffusers"]
    assert report["device"]["type"] in ("cpu", "cuda", "mps")


def test_env_var_picks_the_model_and_output_dir(tmp_path):
    result = run("generate", "a blue circle on a white background", "--steps", "2", "--json",
                 env={"FLUX2_MODEL": "tiny", "FLUX2_OUTPUT_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert Path(json.loads(result.stdout)["images"][0]["path"]).parent == tmp_path


@pytest.mark.parametrize("args", [["--help"], ["generate", "--help"], ["serve", "--help"], ["info"]])
def test_fast_commands_import_neither_torch_nor_diffusers(args):
    # -X importtime lists every module the installed script imports, on stderr.
    result = subprocess.run([sys.executable, "-X", "importtime", FLUX2, *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert {"typer", "flux2cli.commands.generate"} <= imported  # the listing is real
    assert not {"torch", "diffusers", "transformers"} & imported
    if "--help" in args:
        # What made `flux2 --help` take 0.39 s: rich's help renderer (markdown-it, pygments), Typer
        # 0.29's pydantic option parsing, and the commands' own imports (PIL, the request module).
        assert "Usage: flux2" in result.stdout
        assert not {"rich", "pydantic", "markdown_it", "pygments", "PIL", "flux2cli.pipeline.request"} & imported


def _help_sections(text: str) -> dict[str, str]:
    """--help's sections by heading ("Options", "Model", ...), each body with its wrapping undone."""
    sections: dict[str, list[str]] = {}
    current = sections.setdefault("", [])
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":") and not line.startswith("Usage"):
            current = sections.setdefault(line[:-1], [])
        else:
            current.append(line)
    return {title: " ".join(" ".join(lines).split()) for title, lines in sections.items()}


def test_plain_help_keeps_the_model_flags_apart_and_the_summaries_whole():
    sections = _help_sections(run("generate", "--help").stdout)
    assert "--gguf" in sections["Model"] and "--offload" in sections["Model"] and "--seed" not in sections["Model"]
    assert "--seed" in sections["Options"] and "--gguf" not in sections["Options"]
    assert list(sections)[1:4] == ["Arguments", "Options", "Model"]
    main = _help_sections(run("--help").stdout)
    assert "generate Generate images from one prompt and save them as PNG + .prompt files." in main["Commands"]


def test_bare_flux2_prints_the_help_on_stdout():
    result = run()
    assert result.returncode == 2 and result.stderr == ""
    assert result.stdout.startswith("Usage: flux2 [OPTIONS] COMMAND") and "Commands:" in result.stdout
