"""The settings registry: flag > environment > config.toml > the caller's default, in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux2cli import settings
from flux2cli.errors import ConfigError
from flux2cli.pipeline.registry import DEFAULT_MODEL


@pytest.fixture
def config(tmp_path, monkeypatch):
    """Write config.toml text to a file FLUX2_CONFIG points at."""
    path = tmp_path / "config.toml"
    monkeypatch.setenv("FLUX2_CONFIG", str(path))
    for setting in settings.SETTINGS:
        if setting.in_file:
            monkeypatch.delenv(setting.env, raising=False)

    def write(text: str) -> Path:
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_precedence_flag_environment_file_default(config, monkeypatch):
    assert settings.resolve_with_source("model") == (None, "default")
    assert settings.default_model() == DEFAULT_MODEL
    config('model = "klein-4b"\n')
    assert settings.resolve_with_source("model") == ("klein-4b", "file")
    assert settings.default_model() == "klein-4b"
    monkeypatch.setenv("FLUX2_MODEL", "tiny")
    assert settings.resolve_with_source("model") == ("tiny", "environment")
    assert settings.resolve_with_source("model", "dev") == ("dev", "flag")


def test_typed_values_from_the_file(config):
    config('output_dir = "~/pictures"\nport = 8080\ndebug = true\nhost = "0.0.0.0"\n')
    assert settings.output_dir() == Path("~/pictures").expanduser()
    assert settings.output_dir(Path("given")) == Path("given")
    assert settings.resolve("port") == 8080 and settings.resolve("host") == "0.0.0.0"
    assert settings.debug_enabled() is True


def test_defaults_apply_only_when_nobody_set_a_value(config):
    assert settings.output_dir() == Path("outputs")
    assert settings.resolve("port") is None and settings.debug_enabled() is False


def test_the_file_is_read_again_after_it_changes(config):
    path = config("port = 1\n")
    assert settings.resolve("port") == 1
    path.write_text("port = 20000\n")
    assert settings.resolve("port") == 20000


@pytest.mark.parametrize("text,message", [
    ("port = 2222\nmodle = 'tiny'\n", "unknown key 'modle'; the keys are model, output_dir"),
    ("home = '/tmp'\n", "unknown key 'home'"),
    ("[serve]\nport = 1\n", "unknown key 'serve'"),
    ("port = '2222'\n", "key 'port': must be a whole number (got '2222')"),
    ("port = 70000\n", "key 'port': must be from 0 to 65535 (got 70000)"),
    ("debug = 1\n", "key 'debug': must be true or false (got 1)"),
    ("model = 'flux3'\n", "key 'model': unknown model 'flux3'; choose one of: dev-bnb4"),
    ("model = ''\n", "key 'model': must not be empty"),
    ("encoder_url = 'gpu-box:2223'\n", "key 'encoder_url': must be an http(s):// URL"),
    ("model = \n", "not valid TOML (Invalid value (at line 1, column 9))"),
])
def test_a_bad_file_is_one_line_naming_file_and_key(config, text, message):
    path = config(text)
    with pytest.raises(ConfigError) as raised:
        settings.resolve("output_dir")
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 2


def test_a_bad_file_does_not_matter_when_flag_or_environment_decide(config, monkeypatch):
    config("port = 'x'\n")
    assert settings.resolve("port", 1234) == 1234
    monkeypatch.setenv("FLUX2_PORT", "4321")
    assert settings.resolve("port") == 4321


@pytest.mark.parametrize("name,value,message", [
    ("FLUX2_PORT", "http", "FLUX2_PORT: must be a whole number from 0 to 65535 (got 'http')"),
    ("FLUX2_PORT", "65536", "FLUX2_PORT: must be from 0 to 65535 (got 65536)"),
    ("FLUX2_MODEL", "flux3", "FLUX2_MODEL: unknown model 'flux3'"),
])
def test_bad_environment_values_name_the_variable(config, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        settings.resolve(name.removeprefix("FLUX2_").lower())
    assert str(raised.value).startswith(message)


def test_debug_never_raises(config, monkeypatch):
    config("debug = 'loud'\n")
    assert settings.debug_enabled() is False  # the error boundary asks while reporting this very error
    monkeypatch.setenv("FLUX2_DEBUG", "1")
    assert settings.debug_enabled() is True
    monkeypatch.setenv("FLUX2_DEBUG", "0")
    assert settings.debug_enabled() is False


def test_where_the_config_file_is(monkeypatch, tmp_path):
    monkeypatch.delenv("FLUX2_CONFIG", raising=False)
    monkeypatch.setenv("FLUX2_HOME", str(tmp_path / "home"))
    assert settings.config_path() == tmp_path / "home" / "config.toml"
    monkeypatch.setenv("FLUX2_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert settings.config_path() == tmp_path / "elsewhere.toml"
    monkeypatch.delenv("FLUX2_CONFIG")
    monkeypatch.delenv("FLUX2_HOME")
    assert settings.config_path().name == "config.toml" and "flux2cli" in settings.config_path().parts


def test_a_home_inside_a_file_means_no_config(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.delenv("FLUX2_CONFIG", raising=False)
    monkeypatch.setenv("FLUX2_HOME", str(blocker / "home"))
    assert settings.load_config() == {}


def test_describe_masks_secrets_and_names_sources(config, monkeypatch):
    config('api_key = "file-secret"\nmodel = "tiny"\n')
    monkeypatch.setenv("FLUX2_ENCODER_TOKEN", "env-secret")
    rows = {row["env"]: row for row in settings.describe()}
    assert set(rows) == set(settings.ENV_VARS)
    assert (rows["FLUX2_API_KEY"]["value"], rows["FLUX2_API_KEY"]["source"]) == ("***", "file")
    assert (rows["FLUX2_ENCODER_TOKEN"]["value"], rows["FLUX2_ENCODER_TOKEN"]["source"]) == ("***", "environment")
    assert (rows["FLUX2_MODEL"]["value"], rows["FLUX2_MODEL"]["key"]) == ("tiny", "model")
    assert rows["FLUX2_HOME"]["key"] is None and rows["FLUX2_CONFIG"]["source"] == "environment"
    assert not any("-secret" in str(row["value"]) for row in rows.values())


def test_encoder_settings_reach_the_loading_options(config, monkeypatch):
    from flux2cli.api import load_options  # what every front end loads with

    config('encoder_token = "from-file"\nencoder_url = "http://gpu-box:2223/predict"\n')
    options = load_options()
    assert (options.encoder_token, options.encoder_url) == ("from-file", "http://gpu-box:2223/predict")
    monkeypatch.setenv("FLUX2_ENCODER_TOKEN", "from-env")
    assert load_options().encoder_token == "from-env"


def test_every_variable_read_anywhere_is_in_the_registry():
    import re

    package = Path(settings.__file__).parent
    read = set()
    for source in package.rglob("*.py"):
        read |= set(re.findall(r"\b(FLUX2_[A-Z_]+)\b", source.read_text(encoding="utf-8")))
    assert read <= set(settings.ENV_VARS), read - set(settings.ENV_VARS)


def test_epilog_lists_the_variables_with_their_keys():
    text = settings.epilog("model", "home")
    rows = dict(line.split(settings.EPILOG_COLUMN) for line in text.split("\n\n", 1)[1].splitlines())
    assert list(rows) == ["FLUX2_MODEL", "FLUX2_HOME"]
    assert rows["FLUX2_MODEL"].startswith("default model name") and rows["FLUX2_MODEL"].endswith("config.toml: model")
    assert "config.toml:" not in rows["FLUX2_HOME"]  # it locates the file, so it cannot be set in it
    assert "FLUX2_ENCODER_URL" not in text
