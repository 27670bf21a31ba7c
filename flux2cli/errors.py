"""The one exception hierarchy of flux2cli.

Every message is a single line that tells a person what to do next. The CLI maps
``exit_code`` to its exit status and the server maps ``http_status`` to its response,
so neither boundary needs its own table of exception types.
"""

from __future__ import annotations


class Flux2Error(Exception):
    """Base class: ``str(error)`` is the one line shown to the user."""

    exit_code = 1
    http_status = 500
    code: str | None = None  # a machine-readable name where the status alone is ambiguous (OpenAI's `code`)


class InvalidRequest(Flux2Error):
    """A value the user gave is not allowed; the message says what is.

    ``field`` names the request field concerned (its wire name), when there is one, so a
    boundary can point at it (OpenAI's ``param``) without reading the message.
    """

    exit_code = 2
    http_status = 400

    def __init__(self, message: str = "", *, field: str | None = None):
        super().__init__(message)
        self.field = field


class UnknownModel(InvalidRequest):
    """A model name that is not in the registry."""


class ConfigError(InvalidRequest):
    """A FLUX2_* variable or config.toml key holds a value that is not allowed; the message names it."""


class ModelLoadError(Flux2Error):
    """Weights could not be found, downloaded or loaded."""


class EncoderError(Flux2Error):
    """The text encoder (local or remote) failed to produce usable embeddings."""

    http_status = 502


class GenerationError(Flux2Error):
    """The pipeline failed while generating."""


class OutOfMemory(GenerationError):
    """The device ran out of memory; smaller sizes, batches or offloading help."""

    http_status = 507
    code = "out_of_memory"


class OutputFolderError(InvalidRequest):
    """The output folder cannot be used (a file, a broken link, read-only, ...); checked before any loading."""


class StorageError(GenerationError):
    """An image could not be written to the output folder (permission, I/O error)."""


class StorageFull(StorageError):
    """The output folder's disk (or quota) is full."""

    http_status = 507
    code = "storage_full"


class GenerationCancelled(Flux2Error):
    """A generation stopped at a user's request (Ctrl-C, DELETE, disconnect)."""

    exit_code = 130
    http_status = 499

    def __init__(self, step: int = 0, total_steps: int = 0):
        self.step = step
        self.total_steps = total_steps
        super().__init__(f"generation cancelled at step {step}/{total_steps}")


class Busy(Flux2Error):
    """Another generation is running; try again shortly."""

    http_status = 503
