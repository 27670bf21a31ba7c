"""Every ``FLUX2_*`` variable and ``config.toml`` key, and the one place a setting is resolved.

A setting's value comes from, in order: the command-line flag, the environment, the
config file, and otherwise the caller's own default (a registry model default, ./outputs,
127.0.0.1:2222). Flags reach ``resolve`` as ``None`` unless the user typed them, so a
default never hides a value from the environment or the file. Nothing else in flux2cli
reads ``FLUX2_*`` variables or the config file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flux2cli.errors import ConfigError, UnknownModel

DEFAULT_OUTPUT_DIR = "outputs"
# `flux2 serve`'s address; here, not in server/config.py, so that `flux2 info` and the
# resident-server client read them without importing aiohttp.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2222
CONFIG_NAME = "config.toml"


@dataclass(frozen=True)
class Setting:
    key: str  # name in config.toml
    env: str
    help: str
    kind: str = "text"  # text | path | port | flag
    in_file: bool = True  # FLUX2_HOME and FLUX2_CONFIG locate the file, so they cannot live in it
    secret: bool = False  # shown masked by `flux2 info`
    default: str | None = None  # what applies when nobody sets it, as `flux2 info` shows it


SETTINGS: tuple[Setting, ...] = (
    Setting("model", "FLUX2_MODEL", "default model name (see `flux2 info`; default dev-bnb4)"),  # default: registry
    Setting("output_dir", "FLUX2_OUTPUT_DIR", "folder for generated images (default ./outputs)", kind="path",
            default=f"./{DEFAULT_OUTPUT_DIR}"),
    Setting("encoder_url", "FLUX2_ENCODER_URL",
            "remote text encoder endpoint for FLUX.2 [dev] (default: the public one, if reachable)",
            default="the public endpoint, if reachable ([dev] only)"),
    Setting("encoder_token", "FLUX2_ENCODER_TOKEN",
            "bearer token sent to a non-Hugging Face encoder endpoint (its --api-key)", secret=True, default="none"),
    Setting("api_key", "FLUX2_API_KEY",
            "API key `flux2 serve` requires (Authorization: Bearer KEY or X-API-Key: KEY)", secret=True,
            default="none (loopback only is safe)"),
    Setting("host", "FLUX2_HOST", f"address `flux2 serve` binds (default {DEFAULT_HOST})", default=DEFAULT_HOST),
    Setting("port", "FLUX2_PORT", f"port `flux2 serve` listens on (default {DEFAULT_PORT}; 0 picks a free one)",
            kind="port", default=str(DEFAULT_PORT)),
    Setting("server", "FLUX2_SERVER", "a running `flux2 serve` that `flux2 generate` sends its requests to "
            "(default: http://127.0.0.1:FLUX2_PORT when it runs the requested model; off: always in-process)",
            default=f"http://{DEFAULT_HOST}:FLUX2_PORT, if it runs the model"),
    Setting("lora_dir", "FLUX2_LORA_DIR", "folder of LoRA .safetensors files, available by name "
            "(--lora NAME, the server's loras field)", kind="path", default="none (shipped LoRAs only)"),
    Setting("debug", "FLUX2_DEBUG", "set to 1 to show tracebacks", kind="flag", default="off"),
    Setting("preview", "FLUX2_PREVIEW", "set to 0 to draw no image previews in the terminal (default: drawn "
            "on a colour terminal)", kind="flag", default="on a colour terminal"),
    Setting("home", "FLUX2_HOME", "folder for history and config.toml (default: the user data folder)",
            kind="path", in_file=False),
    Setting("config", "FLUX2_CONFIG", "the config file to read (default: config.toml in FLUX2_HOME, "
            "else in the user config folder)", kind="path", in_file=False),
)
BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}
ENV_VARS: dict[str, str] = {setting.env: setting.help for setting in SETTINGS}
FILE_KEYS: tuple[str, ...] = tuple(setting.key for setting in SETTINGS if setting.in_file)

_FALSE = ("", "0", "false", "no", "off")


def resolve(key: str, given: Any = None) -> Any:
    """The value of setting ``key``: ``given`` (a flag), else the environment, else the file.

    None means nobody set it and the caller's default applies.
    """
    return resolve_with_source(key, given)[0]


def resolve_with_source(key: str, given: Any = None) -> tuple[Any, str]:
    """``resolve`` plus where the value came from: flag, environment, file or default."""
    setting = BY_KEY[key]
    if given is not None:
        return given, "flag"
    raw = os.environ.get(setting.env, "")
    if raw.strip():
        return _from_env(setting, raw), "environment"
    if setting.in_file:
        values = load_config()
        if key in values:
            return values[key], "file"
    return None, "default"


def output_dir(given: Path | None = None) -> Path:
    return resolve("output_dir", given) or Path(DEFAULT_OUTPUT_DIR)


def default_model() -> str:
    """FLUX2_MODEL, else config.toml's ``model``, else the spec's default (dev-bnb4)."""
    from flux2cli.pipeline.registry import DEFAULT_MODEL

    return resolve("model") or DEFAULT_MODEL


def debug_enabled() -> bool:
    """Never raises: the error boundary asks this while reporting, possibly a config error."""
    try:
        return bool(resolve("debug"))
    except ConfigError:
        return False


def home_dir() -> Path:
    explicit = os.environ.get("FLUX2_HOME")
    if explicit:
        return Path(explicit).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("flux2cli", appauthor=False))


def config_path() -> Path:
    """FLUX2_CONFIG, else config.toml in FLUX2_HOME, else in the platform's user config folder."""
    explicit = os.environ.get("FLUX2_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("FLUX2_HOME"):
        return home_dir() / CONFIG_NAME
    from platformdirs import user_config_dir

    return Path(user_config_dir("flux2cli", appauthor=False)) / CONFIG_NAME


def load_config() -> dict[str, Any]:
    """The checked values of the config file; {} when there is none (read each time: it is tiny)."""
    path = config_path()
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror}); fix it or set FLUX2_CONFIG") from None
    return _read_config(path)


def _read_config(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read ({error})") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        setting = BY_KEY.get(key)
        if setting is None or not setting.in_file:
            raise ConfigError(f"{path}: unknown key {key!r}; the keys are {', '.join(FILE_KEYS)}")
        try:
            values[key] = _from_file(setting, value)
        except ValueError as error:
            raise ConfigError(f"{path}: key {key!r}: {error}") from None
    return values


def _from_env(setting: Setting, raw: str) -> Any:
    try:
        return _CHECKS[setting.kind](setting, _parse_env(setting, raw))
    except ValueError as error:
        raise ConfigError(f"{setting.env}: {error}") from None


def _parse_env(setting: Setting, raw: str) -> Any:
    text = raw.strip()
    if setting.kind == "port":
        if not text.isdigit():
            raise ValueError(f"must be a whole number from 0 to 65535 (got {raw!r})")
        return int(text)
    if setting.kind == "flag":
        return text.lower() not in _FALSE
    return text


def _from_file(setting: Setting, value: Any) -> Any:
    expected = {"port": int, "flag": bool}.get(setting.kind, str)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        names = {int: "a whole number", bool: "true or false", str: "a string"}
        raise ValueError(f"must be {names[expected]} (got {value!r})")
    if expected is str and not value.strip():
        raise ValueError("must not be empty; remove the line to use the default")
    return _CHECKS[setting.kind](setting, value.strip() if expected is str else value)


def _check_text(setting: Setting, value: str) -> Any:
    if setting.key == "model":
        from flux2cli.pipeline.registry import get_model  # only when a model is set: --help needs no registry

        try:
            get_model(value)
        except UnknownModel as error:
            raise ValueError(str(error)) from None
    if setting.key == "encoder_url" and not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s):// URL (got {value!r})")
    if setting.key == "server" and not value.startswith(("http://", "https://")) and value.lower() != "off":
        raise ValueError(f"must be an http(s):// URL, or off (got {value!r})")
    return value


def _check_port(setting: Setting, value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be from 0 to 65535 (got {value})")
    return value


_CHECKS: dict[str, Callable[[Setting, Any], Any]] = {
    "text": _check_text,
    "path": lambda setting, value: Path(value).expanduser(),
    "port": _check_port,
    "flag": lambda setting, value: value,
}


def describe() -> list[dict[str, Any]]:
    """Each setting with its current value and source, secrets masked (for `flux2 info`)."""
    rows = []
    for setting in SETTINGS:
        if setting.key == "home":
            value, source = str(home_dir()), "environment" if os.environ.get("FLUX2_HOME") else "default"
        elif setting.key == "config":
            value, source = str(config_path()), "environment" if os.environ.get("FLUX2_CONFIG") else "default"
        else:
            value, source = resolve_with_source(setting.key)
            if value is not None:
                value = "***" if setting.secret else (str(value) if isinstance(value, Path) else value)
            elif setting.key == "model":
                value = default_model()
            else:
                value = setting.default
        rows.append({"env": setting.env, "key": setting.key if setting.in_file else None, "help": setting.help,
                     "value": value, "source": source})
    return rows


EPILOG_COLUMN = "\t"  # between a variable and its meaning: --help aligns the rows (commands/plain_help.py)


def epilog(*keys: str) -> str:
    """The --help epilogue: a sentence, a blank line, then one row per variable the command reads."""
    rows = []
    for key in keys:
        setting = BY_KEY[key]
        where = f"; config.toml: {setting.key}" if setting.in_file else ""
        rows.append(f"{setting.env}{EPILOG_COLUMN}{setting.help}{where}")
    return ("Environment variables and config.toml keys (a flag wins over the environment, the environment "
            "over the file; `flux2 info` shows the file and each value):\n\n" + "\n".join(rows))


def hf_hub_cache() -> Path:
    """The Hugging Face cache folder, resolved as huggingface_hub does, without importing it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(hf_home).expanduser() / "hub"
