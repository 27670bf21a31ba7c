"""The REPL's state and logic, without a terminal: ``handle(line)`` returns an action.

Which settings stick: all of them. Every modifier (/steps /seed /batch, the orientations
and sizes), typed alone or inside a prompt, stays set for the prompts after it, and the
reply says so ("now: portrait 2k (96x160)"); so do /image, /strength and /guidance. `same` always
draws a new seed, even when /seed fixed one: the same seed would give the same image.
`reseed N` uses N for that one generation. The sidecar's "Raw input" is the line as
typed ("same", "a sunset /4k"), its "Prompt" the text the model saw.

Every request is built by ``GenerationRequest.create``; a change of settings alone is
checked the same way, with a stand-in prompt, so the limits live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.modifiers import parse_modifiers
from flux2cli.pipeline.registry import ModelSpec
from flux2cli.pipeline.fields import DEFAULT_STRENGTH, FIELD
from flux2cli.pipeline.request import SIZE_ALIASES, GenerationRequest, MaskImage, ReferenceImage, parse_expand
from flux2cli.repl.actions import Action, Generate, Reply
from flux2cli.repl.commands import CLEAR_WORDS, find_command
from flux2cli.repl.loras import ReplLoras

SIZE_LABELS = {size: alias for alias, size in SIZE_ALIASES.items()}  # "2mp" → "2k", as typed
_PROBE_PROMPT = "settings check"  # validates a change of settings that has no prompt yet


@dataclass(frozen=True)
class Settings:
    steps: int
    orientation: str = FIELD["orientation"].default
    size: str = FIELD["size"].default
    seed: int | None = None  # fixed by /seed N; None draws a new seed per generation
    batch: int = 1
    reference: ReferenceImage | None = None
    strength: float | None = None  # None: the default strength when there is a reference
    negative_prompt: str | None = None  # /negative TEXT, for models that run classifier-free guidance
    guidance: float | None = None  # /guidance N; None: the model's default
    mask: MaskImage | None = None  # /mask PATH, over the reference image
    expand: tuple[int, int, int, int] | None = None  # /expand L,T,R,B

    def request_kwargs(self) -> dict[str, Any]:
        edit = {"mask": self.mask, "expand": self.expand}
        if self.mask is not None or self.expand is not None:  # the image's own size, not the session's
            return {**self._kwargs(), **edit, "orientation": None, "size": None}
        return {**self._kwargs(), **edit}

    def _kwargs(self) -> dict[str, Any]:
        return {
            "orientation": self.orientation,
            "size": self.size,
            "steps": self.steps,
            "seed": self.seed,
            "batch": self.batch,
            "reference_images": (self.reference,) if self.reference else (),
            "strength": self.strength,
            "negative_prompt": self.negative_prompt,
            "guidance": self.guidance,
        }


class ReplSession:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        steps: int | None = None,
        output_dir: Path | None = None,
    ):
        self.spec = spec
        self.output_dir = output_dir  # shown by /show; the app writes there
        self.loras = ReplLoras()  # /lora; the command gives it the catalog, the --lora set and a loader
        # A bad --steps fails here, before minutes of model loading.
        self.settings = self._checked(Settings(steps=spec.default_steps if steps is None else steps))
        self.last_prompt: str | None = None  # what `same` repeats: the last prompt typed, made or not
        self.last_seed: int | None = None
        self.last_image: tuple[Path, str, int] | None = None  # the last image really saved: path, prompt, seed

    # -- the one entry point -------------------------------------------------------
    def handle(self, line: str) -> Action:
        """Turn one typed line into an action; a bad command or value becomes an error reply."""
        text = line.strip()
        if not text:
            return None
        try:
            command, arg = find_command(text)
            if command is None:
                return self.prompt(text)
            return command.handler(self, arg, text)
        except InvalidRequest as error:
            return Reply(str(error), "error")

    def record(self, request: GenerationRequest, paths: Sequence[Path]) -> None:
        """A generation of ``request`` saved ``paths``; a cancelled one is never recorded."""
        self.last_seed = request.seed
        if paths:
            self.last_image = (paths[-1], request.prompt, request.seeds[len(paths) - 1])

    # -- what the commands do --------------------------------------------------------
    def prompt(self, line: str) -> Action:
        """A prompt with inline modifiers, or modifiers alone (a change of settings)."""
        parsed = parse_modifiers(line)
        settings = replace(self.settings, **parsed.overrides)
        change = self._describe(settings, parsed.overrides)
        if not parsed.prompt:
            self.settings = self._checked(settings)
            return Reply(change or "nothing to do", "note")
        request = self._request(parsed.prompt, settings, raw_input=line)
        self.settings = settings
        self.last_prompt = request.prompt
        return Generate(request, tuple(n for n in (change, *request.notices) if n))

    def regenerate(self, *, seed: int | None, raw_input: str) -> Action:
        """`same` (seed None: a new random one) and `reseed N`: the last prompt again."""
        if self.last_prompt is None:
            raise InvalidRequest("nothing to repeat yet; type a prompt first")
        request = self._request(self.last_prompt, replace(self.settings, seed=seed), raw_input=raw_input)
        return Generate(request, request.notices)

    def unpin_seed(self) -> Action:
        self.settings = replace(self.settings, seed=None)
        return Reply("now: a new random seed for each generation", "note")

    def set_reference(self, arg: str) -> Action:
        """/image PATH: a reference image for the prompts that follow (it sticks too)."""
        from flux2cli.pipeline.images import load_reference_file  # decodes safely, one-line errors

        if not arg:
            raise InvalidRequest("/image needs a file path, or `off` to drop the reference image")
        if arg.lower() in CLEAR_WORDS:
            edited = self.settings.mask is not None or self.settings.expand is not None
            self.settings = replace(self.settings, reference=None, strength=None, mask=None, expand=None)
            return Reply("now: no reference image" + (" (and no mask or expansion)" if edited else ""), "note")
        path = arg.strip("'\"")  # a path pasted or dropped in quotes
        self.settings = self._checked(replace(self.settings, reference=load_reference_file(path)))
        return Reply(f"now: {self._reference_text()}", "note")

    def set_mask(self, arg: str) -> Action:
        """/mask PATH: white = regenerate, over the reference image; `/mask off` drops it."""
        from flux2cli.pipeline.images import load_mask_file

        if not arg:
            raise InvalidRequest("/mask needs a file path (white = regenerate), or `off` to drop the mask")
        if arg.lower() in CLEAR_WORDS:
            self.settings = replace(self.settings, mask=None)
            return Reply("now: no mask", "note")
        if self.settings.reference is None:
            raise InvalidRequest("/mask acts on a reference image; set one first with /image PATH")
        mask = load_mask_file(arg.strip("'\""))
        self.settings = self._checked(replace(self.settings, mask=mask))
        return Reply(f"now: mask {mask.source} over the reference image (white = regenerate)", "note")

    def set_expand(self, arg: str) -> Action:
        """/expand L,T,R,B: pixels to add around the reference image; `/expand off` drops it."""
        if arg.lower() in CLEAR_WORDS:
            self.settings = replace(self.settings, expand=None)
            return Reply("now: no expansion", "note")
        sides = parse_expand(arg, "/expand")
        if self.settings.reference is None:
            raise InvalidRequest("/expand grows a reference image; set one first with /image PATH")
        self.settings = self._checked(replace(self.settings, expand=FIELD["expand"].check(sides, self.spec)))
        shown = ",".join(map(str, self.settings.expand or (0, 0, 0, 0)))
        return Reply(f"now: expand {shown} (left, top, right, bottom)", "note")

    def set_negative(self, arg: str) -> Action:
        """/negative TEXT: what the prompts that follow steer away from; `/negative off` drops it."""
        if not arg:
            raise InvalidRequest("/negative needs text to steer away from, or `off` to drop the negative prompt")
        if arg.lower() in CLEAR_WORDS:
            self.settings = replace(self.settings, negative_prompt=None)
            return Reply("now: no negative prompt", "note")
        self.settings = self._checked(replace(self.settings, negative_prompt=arg))
        return Reply(f"now: negative prompt {arg!r}", "note")

    def set_guidance(self, arg: str) -> Action:
        """/guidance N for the prompts that follow; `/guidance off` goes back to the model's default."""
        if arg.lower() in CLEAR_WORDS:
            self.settings = replace(self.settings, guidance=None)
            return Reply(f"now: guidance {self._guidance_text()}", "note")
        lo, hi = FIELD["guidance"].bounds(self.spec)
        try:
            value = float(arg)
        except ValueError:
            raise InvalidRequest(f"/guidance needs a number from {lo:g} to {hi:g}, e.g. /guidance 4, "
                                 "or `off` for the model's default") from None
        if self.spec.distilled:  # kept out of the settings: every prompt would repeat the notice
            return Reply(f"{self.spec.display_name} is distilled and takes no guidance: /guidance is ignored", "note")
        self.settings = self._checked(replace(self.settings, guidance=value))
        return Reply(f"now: guidance {self._guidance_text()}", "note")

    def set_strength(self, arg: str) -> Action:
        try:
            value = float(arg)
        except ValueError:
            raise InvalidRequest("/strength needs a number from 0.01 to 1, e.g. /strength 0.6") from None
        if self.settings.reference is None:
            raise InvalidRequest("/strength acts on a reference image; set one first with /image PATH")
        self.settings = self._checked(replace(self.settings, strength=value))
        return Reply(f"now: {self._reference_text()}", "note")

    # -- what the terminal shows -----------------------------------------------------
    def status_line(self) -> str:
        """The bottom toolbar: model, orientation, size, steps, seed."""
        s = self.settings
        parts = [self.spec.display_name, self._shape(s), f"{s.steps} steps",
                 "seed random" if s.seed is None else f"seed {s.seed} (fixed)"]
        if s.batch > 1:
            parts.append(f"batch {s.batch}")
        if s.reference is not None:
            parts.append("reference image")
        parts.append(f"last seed {self.last_seed}" if self.last_seed is not None else "no image yet")
        return " | ".join(parts)

    def describe(self) -> str:
        """The answer to /show."""
        s = self.settings
        lo, hi = self.spec.step_range
        rows = [
            ("model", f"{self.spec.display_name} ({self.spec.name})"),
            ("size", self._shape(s)),
            ("steps", f"{s.steps} (model default {self.spec.default_steps}, range {lo}-{hi})"),
            ("seed", "random for each generation" if s.seed is None else f"{s.seed}, fixed (/seed random)"),
            ("batch", str(s.batch)),
            ("reference", self._reference_text() if s.reference else "none"),
            ("guidance", self._guidance_text()),
            ("negative", repr(s.negative_prompt) if s.negative_prompt else "none"),
            ("last", "no image yet" if self.last_image is None
             else f"{self.last_image[0]}: {self.last_image[1]!r}, seed {self.last_image[2]}"),
        ]
        if self.output_dir is not None:
            rows.append(("output", str(self.output_dir)))
        return "\n".join(f"{name:<10} {value}" for name, value in rows)

    # -- helpers -------------------------------------------------------------------
    def _request(self, prompt: str, settings: Settings, raw_input: str) -> GenerationRequest:
        return GenerationRequest.create(prompt, model=self.spec, raw_input=raw_input, loras=self.loras.refs(),
                                        **settings.request_kwargs())

    def _checked(self, settings: Settings) -> Settings:
        self._request(_PROBE_PROMPT, settings, raw_input=_PROBE_PROMPT)
        return settings

    def _shape(self, s: Settings) -> str:
        width, height = self.spec.dimensions(s.orientation, s.size)
        return f"{s.orientation} {SIZE_LABELS.get(s.size, s.size)} ({width}x{height})"

    def _describe(self, s: Settings, overrides: dict[str, Any]) -> str:
        """Say which settings a line set (they stick), in the words of the commands."""
        parts = []
        if "orientation" in overrides or "size" in overrides:
            parts.append(self._shape(s))
        if "steps" in overrides:
            parts.append(f"{s.steps} steps")
        if "seed" in overrides:
            parts.append(f"seed {s.seed} fixed (/seed random to unfix)")
        if "batch" in overrides:
            parts.append(f"batch {s.batch}")
        return f"now: {', '.join(parts)}" if parts else ""

    def _guidance_text(self) -> str:
        if self.spec.distilled:
            return "none (the model is distilled and takes none)"
        default = f"{self.spec.default_guidance:g}"
        if self.settings.guidance is None:
            return f"{default} (model default)"
        return f"{self.settings.guidance:g} (model default {default}; /guidance off)"

    def _reference_text(self) -> str:
        ref = self.settings.reference
        strength = self.settings.strength
        edit = self.settings.mask is not None or self.settings.expand is not None
        default = "1 (default with a mask or expansion)" if edit else f"{DEFAULT_STRENGTH:g} (default)"
        strength_text = default if strength is None else f"{strength:g}"
        text = f"reference image {ref.source} ({ref.size[0]}x{ref.size[1]}), strength {strength_text}"
        if self.settings.mask is not None:
            text += f", mask {self.settings.mask.source}"
        if self.settings.expand is not None:
            text += f", expand {','.join(map(str, self.settings.expand))}"
        return text
