"""The command table: the one list that drives dispatch, /help and Tab completion.

Anything typed that is not a command is a prompt. Commands marked ``inline`` are the
modifiers of ``flux2cli.pipeline.modifiers``: they may also appear anywhere in a prompt,
so they share the prompt path, where ``parse_modifiers`` reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Protocol

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.registry import SIZE_MULTIPLIERS, ModelSpec
from flux2cli.pipeline.request import SIZE_ALIASES
from flux2cli.repl.actions import Action, Quit, Reply


class ReplSession(Protocol):
    """What the handlers ask of the session (repl/session.py), which looks commands up in
    this table: the table states the interface instead of importing its user."""

    def prompt(self, line: str) -> Action: ...
    def regenerate(self, *, seed: int | None, raw_input: str) -> Action: ...
    def unpin_seed(self) -> Action: ...
    def set_reference(self, arg: str) -> Action: ...
    def set_strength(self, arg: str) -> Action: ...
    def set_guidance(self, arg: str) -> Action: ...
    def set_mask(self, arg: str) -> Action: ...
    def set_expand(self, arg: str) -> Action: ...
    def set_negative(self, arg: str) -> Action: ...
    def describe(self) -> str: ...


# handler(session, argument text, the whole line as typed)
Handler = Callable[[ReplSession, str, str], Action]

RANDOM_WORDS = ("random", "off", "none")
CLEAR_WORDS = ("off", "none")
# A first word that looks like a command but is none: a typo, not the start of a prompt.
# "/r/pics style" or "1/2 moon" do not match, so prompts may still contain slashes.
_COMMAND_LIKE = re.compile(r"^/[\w:.-]+$")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    args: str = ""  # how /help shows the argument: "<number>", "PATH"
    inline: bool = False  # a modifier: also allowed anywhere in a prompt, and it sticks
    paths: str = ""  # Tab completes paths after it: "images" (image files and folders) or "files"
    orientation: str | None = None  # /help adds this orientation's sizes for the loaded model

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


def whole_number(text: str, command: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequest(f"{command} needs a whole number, e.g. {command} 42")
    return int(text)


# Handlers stay small: the logic lives in the session, the reading of the argument
# here, so the table below reads as the list of what can be typed.
def _quit(session: ReplSession, arg: str, line: str) -> Action:
    return Quit()


def _same(session: ReplSession, arg: str, line: str) -> Action:
    return session.regenerate(seed=None, raw_input=line)


def _reseed(session: ReplSession, arg: str, line: str) -> Action:
    return session.regenerate(seed=whole_number(arg, "reseed"), raw_input=line)


def _modifier(session: ReplSession, arg: str, line: str) -> Action:
    return session.prompt(line)  # "/portrait" alone, or "/portrait a cat": one path


def _seed(session: ReplSession, arg: str, line: str) -> Action:
    if arg.lower() in RANDOM_WORDS:
        return session.unpin_seed()
    if not arg:
        raise InvalidRequest("/seed needs a whole number (fixes the seed) or `random`, e.g. /seed 42")
    return session.prompt(line)


def _image(session: ReplSession, arg: str, line: str) -> Action:
    return session.set_reference(arg)


def _strength(session: ReplSession, arg: str, line: str) -> Action:
    return session.set_strength(arg)


def _guidance(session: ReplSession, arg: str, line: str) -> Action:
    return session.set_guidance(arg)


def _mask(session: ReplSession, arg: str, line: str) -> Action:
    return session.set_mask(arg)


def _expand(session: ReplSession, arg: str, line: str) -> Action:
    return session.set_expand(arg)


def _negative(session: ReplSession, arg: str, line: str) -> Action:
    return session.set_negative(arg)


def _lora(session: ReplSession, arg: str, line: str) -> Action:
    return session.loras.command(arg)


def _show(session: ReplSession, arg: str, line: str) -> Action:
    return Reply(session.describe())


def _help(session: ReplSession, arg: str, line: str) -> Action:
    return Reply(help_text(session.spec))


def _orientation(name: str) -> Command:
    return Command(f"/{name}", f"{name} aspect ratio", _modifier, inline=True, orientation=name)


COMMANDS: tuple[Command, ...] = (
    Command("quit", "exit (Ctrl-D too)", _quit, aliases=("q", "exit")),
    Command("same", "same prompt, new random seed (cached embeddings: no encoding)", _same,
            aliases=("s",)),
    Command("reseed", "same prompt with that seed", _reseed, args="<number>"),
    Command("/steps", "inference steps (range depends on the model)", _modifier, args="<number>",
            inline=True),
    _orientation("square"),
    _orientation("portrait"),
    _orientation("landscape"),
    _orientation("16:9"),
    Command("/1k", "1K resolution (the orientation's size)", _modifier, aliases=("/1mp",), inline=True),
    Command("/2k", "2K resolution (2x each side)", _modifier, aliases=("/2mp",), inline=True),
    Command("/4k", "4K resolution (4x each side)", _modifier, aliases=("/4mp",), inline=True),
    Command("/seed", "fix the seed for the prompts that follow; `/seed random` unfixes it", _seed,
            args="<number>|random", inline=True),
    Command("/batch", "images per prompt, 1-4 (seeds seed, seed+1, ...)", _modifier, args="<number>",
            inline=True),
    Command("/image", "reference image for the prompts that follow; `/image off` drops it", _image,
            args="PATH|off", paths="images"),
    Command("/strength", "share of the steps re-run over the reference, 0.01 to 1", _strength,
            args="<number>"),
    Command("/guidance", "guidance scale for the prompts that follow; `/guidance off` goes back to the "
            "model's (distilled models ignore it)", _guidance, args="<number>|off"),
    Command("/mask", "mask over the reference image, white = regenerate; `/mask off` drops it", _mask,
            args="PATH|off", paths="images"),
    Command("/expand", "outpaint: pixels to add left,top,right,bottom of the reference; `/expand off`", _expand,
            args="L,T,R,B|off"),
    Command("/negative", "negative prompt for the prompts that follow (klein base); `/negative off` drops it",
            _negative, args="TEXT|off"),
    Command("/lora", "apply a LoRA (file, folder, hub repo or name) at a scale; `/lora off NAME`; "
            "`/lora` lists them", _lora, args="SOURCE [SCALE]|off NAME", paths="files"),
    Command("/show", "show the current settings", _show),
    Command("/help", "this list", _help, aliases=("help", "?")),
)

_BY_NAME: dict[str, Command] = {name: command for command in COMMANDS for name in command.names}


def lookup(word: str) -> Command | None:
    """The command named ``word`` (any case, any alias)."""
    return _BY_NAME.get(word.lower())


def find_command(line: str) -> tuple[Command | None, str]:
    """The command a stripped, non-empty line starts with, and its argument text.

    ``(None, line)`` means the line is a prompt. Plain words that take no argument
    (`same`, `q`, `help`) are commands only alone on the line.
    """
    first, _, rest = line.partition(" ")
    command = lookup(first)
    if command is None:
        if _COMMAND_LIKE.match(first):
            raise InvalidRequest(f"unknown command {first}; /help lists the commands")
        return None, line
    arg = rest.strip()
    if not first.startswith("/") and not command.args and arg:
        return None, line  # a prompt may start with a plain word: "same old story", "help me"
    return command, arg


def help_text(spec: ModelSpec) -> str:
    """The command list, with the orientations' sizes as ``spec`` draws them (the registry's table)."""
    rows = [("* " if c.inline else "  ") + ", ".join((f"{c.name} {c.args}".rstrip(), *c.aliases))
            for c in COMMANDS]
    width = max(len(row) for row in rows) + 2
    lines = [f"Type a prompt to generate an image with {spec.display_name}. Commands:"]
    lines += [row.ljust(width) + command.help + _sizes(spec, command.orientation)
              for row, command in zip(rows, COMMANDS)]
    lines += [
        "* also works inside a prompt (\"a beautiful sunset /4k /portrait\") and stays set",
        "  for the prompts that follow.",
        "Ctrl-C stops a generation or clears the line; Up/Down and Ctrl-R search the history;",
        "Tab completes commands, modifiers and the path after /image (image files only).",
    ]
    return "\n".join(lines)


def _sizes(spec: ModelSpec, orientation: str | None) -> str:
    """" (64x64 at 1k, 128x128 at 2k, ...)", and a word where rounding to multiples of 16 at a
    small model's scale makes two orientations one shape (16:9 and landscape on tiny)."""
    if orientation is None:
        return ""
    sizes = {size: spec.dimensions(orientation, size) for size in SIZE_MULTIPLIERS}
    label = {size: alias for alias, size in SIZE_ALIASES.items()}  # "2mp" is typed /2k
    text = ", ".join(f"{w}x{h} at {label.get(size, size)}" for size, (w, h) in sizes.items())
    same = [other for other in ("landscape", "portrait", "square") if other != orientation
            and all(spec.dimensions(other, size) == dims for size, dims in sizes.items())]
    if same:
        text += f"; the same as /{same[0]} at this model's scale"
    return f" ({text})"
