"""config.toml and FLUX2_* variables through the installed console script: flag > environment > file."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from console_script import run
from flux2cli.settings import ENV_VARS, SETTINGS


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "settings.toml"

    def write(text: str) -> dict[str, str]:
        path.write_text(text, encoding="utf-8")
        return {"FLUX2_CONFIG": str(path)}

    return write


@pytest.mark.slow
def test_the_file_supplies_model_and_output_dir(config, tmp_path):
    env = config(f'model = "tiny"\noutput_dir = "{tmp_path / "from-file"}"\n')
    result = run("generate", "a red circle on a blue background", "--steps", "1", "--json", env=env)
    assert result.returncode == 0, result.stderr
    path = Path(json.loads(result.stdout)["images"][0]["path"])
    assert path.parent == tmp_path / "from-file" and path.with_suffix(".prompt").is_file()


@pytest.mark.slow
def test_environment_beats_the_file_and_a_flag_beats_both(config, tmp_path):
    env = {**config(f'model = "klein-9b"\noutput_dir = "{tmp_path / "file"}"\n'),
           "FLUX2_MODEL": "tiny", "FLUX2_OUTPUT_DIR": str(tmp_path / "env")}
    result = run("generate", "a red circle on a blue background", "--steps", "1", "--json",
                 "-o", str(tmp_path / "flag"), env=env)
    assert result.returncode == 0, result.stderr  # klein-9b is not cached: the file's model was not used
    assert Path(json.loads(result.stdout)["images"][0]["path"]).parent == tmp_path / "flag"


def test_a_shorthand_flag_beats_the_model_variable(tmp_path):
    # --gguf names a model: FLUX2_MODEL=tiny must not contradict it (a flag wins), so this reaches the
    # download step for the q8 file instead of failing as a contradiction.
    result = run("generate", "a cat", "--gguf", "q8", env={"FLUX2_MODEL": "tiny"}, cwd=tmp_path)
    assert result.returncode == 1 and "not in the local Hugging Face cache" in result.stderr, result.stderr


@pytest.mark.parametrize("text,message", [
    ("modle = 'tiny'\n", "unknown key 'modle'"),
    ("model = 'flux3'\n", "key 'model': unknown model 'flux3'"),
    ("port = 'x'\n", "key 'port': must be a whole number"),
    ("model = \n", "not valid TOML"),
])
def test_a_bad_file_stops_with_one_line(config, tmp_path, text, message):
    env = config(text)
    result = run("generate", "a cat", "-o", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {env['FLUX2_CONFIG']}: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_variable_names_itself(tmp_path):
    result = run("serve", "--model", "tiny", env={"FLUX2_PORT": "http"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: FLUX2_PORT: must be a whole number from 0 to 65535 (got 'http')\n"


def test_serve_takes_host_and_port_from_file_and_environment(config, tmp_path):
    # A taken port makes `serve` stop before loading the model, naming the address it tried.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = config(f"port = {port}\n")
        result = run("serve", "--model", "tiny", env=env, cwd=tmp_path, timeout=60)
        assert result.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr
        result = run("serve", "--model", "tiny", env={**env, "FLUX2_HOST": "localhost"}, cwd=tmp_path, timeout=60)
        assert f"cannot listen on localhost:{port}" in result.stderr, result.stderr


def test_info_lists_every_setting_and_where_it_came_from(config, tmp_path):
    env = {**config('api_key = "file-secret"\nport = 8080\n'), "FLUX2_MODEL": "tiny"}
    result = run("info", "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config_file"] == {"path": env["FLUX2_CONFIG"], "exists": True}
    rows = {row["env"]: row for row in report["settings"]}
    assert list(rows) == [setting.env for setting in SETTINGS]
    assert (rows["FLUX2_MODEL"]["value"], rows["FLUX2_MODEL"]["source"]) == ("tiny", "environment")
    assert (rows["FLUX2_PORT"]["value"], rows["FLUX2_PORT"]["source"]) == (8080, "file")
    assert rows["FLUX2_API_KEY"]["value"] == "***" and "file-secret" not in result.stdout
    assert report["default_model"] == "tiny"

    table = run("info", env=env)
    assert table.returncode == 0 and f"Config file: {env['FLUX2_CONFIG']} (found)" in table.stdout
    assert all(name in table.stdout for name in ENV_VARS)


def test_help_epilogues_come_from_the_registry():
    main = run("--help")
    assert all(name in main.stdout for name in ENV_VARS), main.stdout
    serve = " ".join(run("serve", "--help").stdout.split())  # undo the wrapping
    assert "FLUX2_HOST address `flux2 serve` binds (default 127.0.0.1); config.toml: host" in serve
    assert "FLUX2_API_KEY API key `flux2 serve` requires" in serve and "config.toml: api_key" in serve
    generate = " ".join(run("generate", "--help").stdout.split())
    assert "FLUX2_MODEL default model name" in generate and "config.toml: model" in generate
    assert "FLUX2_HOST" not in generate
