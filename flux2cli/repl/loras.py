"""The REPL's LoRAs: `/lora SOURCE [SCALE]`, `/lora off NAME`, `/lora` (list).

The active set sticks like every other setting and goes into each request by name; the
engine keeps every LoRA it has loaded, so switching back and forth never reloads anything.
"""

from __future__ import annotations

from typing import Any, Callable

from flux2cli.errors import InvalidRequest
from flux2cli.lora.files import LoraCatalog, parse_source
from flux2cli.lora.refs import LoraRef
from flux2cli.repl.actions import Action, Reply

OFF_WORDS = ("off", "none")


class ReplLoras:
    def __init__(self, catalog: LoraCatalog | None = None, active: list[LoraRef] | tuple[LoraRef, ...] = ()):
        self.catalog = catalog or LoraCatalog()
        self.active: dict[str, float] = {ref.name: ref.scale for ref in active}
        # Set by the command once the engine is loaded: loads (and so checks) a LoRA at once.
        self.load: Callable[[str], Any] | None = None

    def refs(self) -> tuple[LoraRef, ...]:
        return tuple(LoraRef(name, scale) for name, scale in self.active.items())

    def command(self, arg: str) -> Action:
        words = arg.split()
        if not words:
            return Reply(self.describe())
        if words[0].lower() in OFF_WORDS:
            return self._off(words[1:])
        text = arg.strip()
        scale = 1.0
        if len(words) > 1:
            try:
                scale = float(words[-1])
                text = arg.strip()[: arg.strip().rfind(words[-1])].strip()
            except ValueError:
                pass
        source, given = parse_source(text)
        scale = given if given != 1.0 else scale
        entry = self.catalog.add(source.strip("'\""))
        if self.load is not None:
            self.load(entry.name)
        self.active[entry.name] = scale
        return Reply(f"now: {self._active_text()}", "note")

    def _off(self, names: list[str]) -> Action:
        if not names:
            self.active.clear()
            return Reply("now: no LoRAs", "note")
        for name in names:
            if self.active.pop(name, None) is None:
                raise InvalidRequest(f"LoRA {name!r} is not on; /lora lists those that are")
        return Reply(f"now: {self._active_text()}", "note")

    def _active_text(self) -> str:
        return ", ".join(f"{name} {scale:g}" for name, scale in self.active.items()) or "no LoRAs"

    def describe(self) -> str:
        return (f"on:        {self._active_text()}\n"
                f"available: {', '.join(self.catalog.names()) or 'none'} (or /lora PATH|owner/repo [SCALE])")
