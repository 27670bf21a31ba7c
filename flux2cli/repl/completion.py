"""Tab completion, read from the command table.

- ``/word`` completes to commands at the start of a line and to modifiers anywhere
  (they work inside prompts); the menu shows each one's help.
- Plain words (`same`, `reseed`, `quit`) complete at the start of a line only, and only
  on Tab, never while typing: a prompt starting with "s" is not a command.
- After a command that takes a path, paths complete: after /image and /mask only image
  files (what the reference loader opens; not the .prompt sidecars next to them) and folders.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from flux2cli.repl.commands import COMMANDS, lookup


class ReplCompleter(Completer):
    def __init__(self) -> None:
        self._paths = {"files": PathCompleter(expanduser=True),
                       "images": PathCompleter(expanduser=True, file_filter=_image_or_folder)}

    def get_completions(self, document: Document, event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor.lstrip()
        first, space, rest = text.partition(" ")
        command = lookup(first) if space else None
        if command is not None and command.name == "/lora" and " " not in rest.lstrip():
            from flux2cli.lora.files import available  # the shipped names and "off", then paths

            yield from _words(rest.lstrip(), ("off", *available()))
        if command is not None and command.paths:
            # The path is completed as if it were the whole line: start positions stay right.
            rest = rest.lstrip()
            yield from self._paths[command.paths].get_completions(Document(rest, len(rest)), event)
            return
        if command is not None and command.name == "/seed" and " " not in rest.lstrip():
            yield from _words(rest.lstrip(), ("random",))
        word = document.get_word_before_cursor(WORD=True)
        if word.startswith("/"):
            yield from _names(word, inline_only=bool(space))
        elif not space and word and event.completion_requested:
            yield from _names(word, inline_only=False)


def _names(word: str, *, inline_only: bool) -> Iterable[Completion]:
    """Names that extend ``word``: "/s" only meets /commands, "sa" only plain words."""
    prefix = word.lower()
    for command in COMMANDS:
        if inline_only and not command.inline:
            continue
        for name in command.names:
            if name.startswith(prefix) and name != prefix:
                yield Completion(name, start_position=-len(word), display_meta=command.help)


def _words(typed: str, words: tuple[str, ...]) -> Iterable[Completion]:
    for word in words:
        if word.startswith(typed.lower()) and word != typed.lower():
            yield Completion(word, start_position=-len(typed))


def _image_or_folder(path: str) -> bool:
    return os.path.isdir(path) or os.path.splitext(path)[1].lower() in _image_suffixes()


@functools.cache
def _image_suffixes() -> frozenset[str]:
    """The file endings PIL gives the formats a reference image may be in (.png, .jpg, .webp, ...)."""
    from PIL import Image

    from flux2cli.pipeline.images import ALLOWED_FORMATS

    Image.init()  # registers every plugin's endings
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in ALLOWED_FORMATS)
