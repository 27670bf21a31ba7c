"""The REPL without a terminal: the command table, the session, and the loop with a fake engine."""

from __future__ import annotations

import _thread
import io
import itertools
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from flux2cli.errors import GenerationCancelled, GenerationError, InvalidRequest
from flux2cli.pipeline.events import StepEvent
from flux2cli.pipeline.modifiers import FLAG_MODIFIERS, VALUE_MODIFIERS
from flux2cli.pipeline.output import SavedImage
from flux2cli.pipeline.registry import get_model
from flux2cli.repl.actions import Generate, Quit, Reply
from flux2cli.repl.app import ReplApp, StreamReader
from flux2cli.repl.commands import COMMANDS, find_command, help_text
from flux2cli.repl.session import ReplSession

TINY = get_model("tiny")
PROMPT = "a red circle on a white background"


def session(**kwargs) -> ReplSession:
    return ReplSession(TINY, **kwargs)


def generate(s: ReplSession, line: str) -> Generate:
    action = s.handle(line)
    assert isinstance(action, Generate), action
    return action


def error(s: ReplSession, line: str) -> str:
    action = s.handle(line)
    assert isinstance(action, Reply) and action.kind == "error", action
    return action.text


class FakeEngine:
    """Records requests; reports encoding 0 for a prompt it has seen, like the real cache."""

    def __init__(self, fail: BaseException | None = None, interrupt_at_step: int | None = None):
        self.requests = []
        self.encoded: list[str] = []
        self.fail = fail
        self.interrupt_at_step = interrupt_at_step  # press Ctrl-C once, at that step
        self.cancelled_at: int | None = None

    def generate_and_save(self, request, output_dir, *, on_step=None, cancel=None):
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        encoding = 0.0 if request.prompt in self.encoded else 0.5
        if encoding:
            self.encoded.append(request.prompt)
        for step in range(1, request.steps + 1):
            if on_step:
                on_step(StepEvent(step, request.steps, request.batch))
            if step == self.interrupt_at_step:
                self.interrupt_at_step = None
                _thread.interrupt_main()  # KeyboardInterrupt in the main thread, which waits on us
                cancel.wait(10)  # the app's answer to it
            if cancel is not None and cancel.is_set():
                self.cancelled_at = step
                raise GenerationCancelled(step, request.steps)
        return [SavedImage(Path(output_dir) / f"img_{seed}.png", Path(output_dir) / f"img_{seed}.prompt", seed,
                           {"encoding": encoding, "diffusion": 1.0, "save": 0.01, "total": 1.51})
                for seed in request.seeds]


def run_app(lines, engine=None, s=None, tmp_path=Path("out"), piped=False):
    """Run the loop over piped lines; returns (exit code, stdout text, stderr text, session).
    ``piped``: as `flux2 repl` runs a script from a pipe; else as in a terminal."""
    s = s or session(output_dir=tmp_path)
    out, err = io.StringIO(), io.StringIO()
    app = ReplApp(s, engine or FakeEngine(), tmp_path,
                  out=Console(file=out, width=300, highlight=False),
                  err=Console(file=err, width=300, highlight=False), piped=piped)
    code = app.run(StreamReader(io.StringIO("".join(f"{line}\n" for line in lines))))
    return code, out.getvalue(), err.getvalue(), s


# -- the command table ------------------------------------------------------------------
def test_every_command_of_the_spec_table_is_in_the_command_table():
    names = {name for command in COMMANDS for name in command.names}
    spec_table = {"quit", "q", "same", "s", "reseed", "/steps", "/square", "/portrait", "/landscape",
                  "/16:9", "/1k", "/2k", "/4k"}
    issue_extras = {"/help", "/batch", "/seed", "/image", "/strength", "/show"}
    assert spec_table | issue_extras <= names


def test_inline_commands_are_exactly_the_modifiers_parse_modifiers_reads():
    inline = {name for command in COMMANDS if command.inline for name in command.names}
    assert inline == set(FLAG_MODIFIERS) | set(VALUE_MODIFIERS)


def test_help_is_generated_from_the_table():
    text = help_text(TINY)
    for command in COMMANDS:
        assert command.help in text
        for name in command.names:
            assert name in text


@pytest.mark.parametrize("line,name,arg", [
    ("quit", "quit", ""), ("Q", "quit", ""), ("exit", "quit", ""), ("same", "same", ""), ("s", "same", ""),
    ("reseed 42", "reseed", "42"), ("reseed", "reseed", ""), ("/STEPS 12", "/steps", "12"),
    ("/4mp", "/4k", ""), ("/help", "/help", ""), ("?", "/help", ""), ("/image  a b.png ", "/image", "a b.png"),
])
def test_find_command(line, name, arg):
    command, found_arg = find_command(line.strip())
    assert command.name == name and found_arg == arg


@pytest.mark.parametrize("line", ["same old story", "s-curve road at dusk", "quit smoking poster", "help me",
                                  "AC/DC live", "1/2 moon", "/r/pics style photo"])
def test_prompts_that_start_like_commands_stay_prompts(line):
    assert find_command(line) == (None, line)


# -- prompts and modifiers ------------------------------------------------------------
def test_a_prompt_uses_the_models_defaults():
    request = generate(session(), PROMPT).request
    assert (request.prompt, request.raw_input) == (PROMPT, PROMPT)
    assert (request.width, request.height) == TINY.dimensions("landscape", "1mp")
    assert request.steps == TINY.default_steps and request.batch == 1 and request.reference_images == ()


def test_inline_modifiers_apply_and_stay_set():
    s = session()
    action = generate(s, "a beautiful sunset /4k /portrait")
    request = action.request
    assert request.prompt == "a beautiful sunset"
    assert request.raw_input == "a beautiful sunset /4k /portrait"  # the sidecar's "Raw input"
    assert (request.width, request.height) == TINY.dimensions("portrait", "4mp")
    w, h = TINY.dimensions("portrait", "4mp")
    assert action.notes == (f"now: portrait 4k ({w}x{h})",)
    follow = generate(s, "a quiet lake").request
    assert (follow.width, follow.height) == (w, h) and follow.raw_input == "a quiet lake"


def test_every_orientation_and_size_combination_inline_and_alone():
    orientations = ["/square", "/portrait", "/landscape", "/16:9"]
    sizes = {"/1k": "1mp", "/2k": "2mp", "/4k": "4mp", "/1mp": "1mp", "/2mp": "2mp", "/4mp": "4mp"}
    for o, (size_word, size) in itertools.product(orientations, sizes.items()):
        expected = TINY.dimensions(o[1:], size)
        # inline, modifiers before, between and after the words
        for line in (f"{o} {size_word} a cat", f"a {size_word} cat {o}", f"a cat {o} {size_word}"):
            request = generate(session(), line).request
            assert (request.prompt, (request.width, request.height)) == ("a cat", expected), line
        # alone: a change of settings, no generation, then the next prompt uses it
        s = session()
        assert s.handle(f"{o} {size_word}").kind == "note"
        request = generate(s, "a dog").request
        assert (request.width, request.height) == expected
        assert (request.orientation, request.size) == (o[1:], size)


def test_steps_batch_and_seed_modifiers_combine():
    s = session()
    request = generate(s, "a cat /steps 12 /batch 2 /seed 7 /square").request
    assert (request.steps, request.batch, request.seed, request.prompt) == (12, 2, 7, "a cat")
    assert request.seeds == [7, 8]
    again = generate(s, "a dog").request
    assert (again.steps, again.batch, again.seed) == (12, 2, 7)  # they stick


@pytest.mark.parametrize("line", ["/steps 0", "/steps 51", "/steps", "/steps x", "/batch 5", "/batch 0",
                                  "/seed", "a cat /steps 999", "a cat /portrait /batch 9"])
def test_bad_values_are_one_line_and_change_nothing(line):
    s = session()
    before = s.settings
    message = error(s, line)
    assert "\n" not in message and message
    assert s.settings == before and s.last_prompt is None


def test_steps_alone_changes_the_setting_and_says_so():
    s = session()
    reply = s.handle("/steps 12")
    assert reply == Reply("now: 12 steps", "note")
    assert generate(s, PROMPT).request.steps == 12


def test_empty_lines_and_modifier_only_lines_do_not_generate():
    s = session()
    assert s.handle("") is None and s.handle("   ") is None
    assert isinstance(s.handle("/portrait /2k"), Reply)
    assert s.last_prompt is None


def test_unknown_command_is_an_error_not_a_prompt():
    assert error(session(), "/sqaure") == "unknown command /sqaure; /help lists the commands"


# -- same, reseed, seed ---------------------------------------------------------------
def test_same_and_reseed_need_a_prompt_first():
    s = session()
    assert "type a prompt first" in error(s, "same")
    assert "type a prompt first" in error(s, "reseed 42")


def test_same_repeats_the_prompt_with_a_new_seed_and_the_current_settings():
    s = session()
    first = generate(s, f"{PROMPT} /portrait").request
    s.handle("/steps 12")
    again = generate(s, "same").request
    short = generate(s, "s").request
    assert again.prompt == short.prompt == PROMPT
    assert again.raw_input == "same" and short.raw_input == "s"
    assert again.steps == 12 and (again.width, again.height) == (first.width, first.height)
    assert len({first.seed, again.seed, short.seed}) == 3


def test_reseed_uses_that_seed_once():
    s = session()
    generate(s, PROMPT)
    request = generate(s, "reseed 42").request
    assert (request.prompt, request.seed, request.raw_input) == (PROMPT, 42, "reseed 42")
    assert s.settings.seed is None
    assert "whole number" in error(s, "reseed forty")
    assert "whole number" in error(s, "reseed -1")


def test_a_fixed_seed_holds_for_new_prompts_but_not_for_same():
    s = session()
    assert s.handle("/seed 1234").kind == "note"
    assert generate(s, "a cat").request.seed == 1234
    assert generate(s, "a dog").request.seed == 1234
    assert generate(s, "same").request.seed != 1234  # `same` is for a new variation
    assert s.handle("/seed random") == Reply("now: a new random seed for each generation", "note")
    assert generate(s, "a cat").request.seed != 1234


def test_record_keeps_the_last_seed_for_the_toolbar():
    s = session()
    request = generate(s, "a cat /seed 99").request
    assert "no image yet" in s.status_line()
    s.record(request, [Path("out/a.png")])
    status = s.status_line()
    for part in ("flux2-tiny", "landscape 1k", "8 steps", "seed 99 (fixed)", "last seed 99"):
        assert part in status


def test_show_lists_the_current_settings(tmp_path):
    s = session(output_dir=tmp_path)
    s.record(generate(s, "a cat /portrait /steps 5").request, [tmp_path / "a.png"])
    text = s.handle("/show").text
    for part in ("flux2-tiny", "portrait 1k (48x80)", "5 (model default 8, range 1-50)", "random",
                 "'a cat'", str(tmp_path)):
        assert part in text
    assert "Commands" in s.handle("/help").text


def test_quit_words():
    for line in ("quit", "q", "exit", "QUIT", "  q  "):
        assert isinstance(session().handle(line), Quit)


def test_bad_steps_option_fails_before_loading():
    with pytest.raises(InvalidRequest, match="steps must be between 1 and 50"):
        session(steps=99)
    assert session(steps=3).settings.steps == 3


# -- reference images ---------------------------------------------------------------
def test_image_and_strength(tmp_path):
    png = tmp_path / "ref image.png"
    Image.new("RGB", (64, 64), (30, 180, 60)).save(png)
    s = session()
    assert "acts on a reference image" in error(s, "/strength 0.5")
    assert "does not exist" in error(s, f"/image {tmp_path / 'missing.png'}")
    (tmp_path / "notes.txt").write_text("not an image")
    assert "is not a PNG, JPEG or WebP image" in error(s, f"/image {tmp_path / 'notes.txt'}")
    reply = s.handle(f'/image "{png}"')
    assert reply.kind == "note" and "strength 0.75 (default)" in reply.text
    request = generate(s, "a cat").request
    assert request.reference_images[0].source == str(png) and request.strength == 0.75
    assert s.handle("/strength 0.4").kind == "note"
    assert "between 0.01 and 1" in error(s, "/strength 2")
    assert "number" in error(s, "/strength lots")
    assert generate(s, "same").request.strength == 0.4
    assert s.handle("/image off") == Reply("now: no reference image", "note")
    request = generate(s, "a cat").request
    assert request.reference_images == () and request.strength is None


# -- the loop, with piped lines and a fake engine ------------------------------------------
def test_piped_lines_generate_and_report(tmp_path):
    engine = FakeEngine()
    code, out, err, s = run_app([PROMPT, "same", "reseed 42", "/steps 12", "/bogus",
                                 "a blue square /portrait /2k", "quit", "never read"], engine, tmp_path=tmp_path)
    assert code == 0
    assert [r.raw_input for r in engine.requests] == [PROMPT, "same", "reseed 42", "a blue square /portrait /2k"]
    assert engine.requests[2].seed == 42 and engine.requests[3].steps == 12
    lines = out.splitlines()  # stdout: one line per image, nothing else
    assert len(lines) == 4 and all(line.startswith(str(tmp_path)) for line in lines)
    assert "seed 42" in lines[2] and "encoding 0.00s" in lines[1] and "encoding 0.50s" in lines[0]
    assert "error: unknown command /bogus" in err and "now: 12 steps" in err
    assert s.last_seed == engine.requests[3].seed
    assert "Traceback" not in out + err


def test_end_of_input_exits_zero():
    assert run_app([PROMPT])[0] == 0


def test_engine_errors_are_one_line_and_the_loop_goes_on(tmp_path):
    code, out, err, s = run_app([PROMPT, "/show"], FakeEngine(fail=GenerationError("the pipeline broke")),
                                tmp_path=tmp_path)
    assert code == 0 and "error: the pipeline broke" in err and "model" in out
    assert s.last_seed is None


def test_a_bug_is_one_line_without_traceback_unless_debugging(tmp_path, monkeypatch, capsys):
    code, out, err, _ = run_app([PROMPT], FakeEngine(fail=RuntimeError("boom")), tmp_path=tmp_path)
    assert code == 0 and err.strip() == "error: unexpected RuntimeError: boom (FLUX2_DEBUG=1 shows the traceback)"
    monkeypatch.setenv("FLUX2_DEBUG", "1")
    run_app([PROMPT], FakeEngine(fail=RuntimeError("boom")), tmp_path=tmp_path)
    assert "Traceback" in capsys.readouterr().err


def test_unwritable_output_folder_is_one_line(tmp_path):
    code, out, err, _ = run_app([PROMPT], FakeEngine(fail=PermissionError(13, "Permission denied")),
                                tmp_path=tmp_path)
    assert f"error: could not write to {tmp_path}: Permission denied" in err


def test_ctrl_c_during_a_generation_cancels_it_and_the_loop_goes_on(tmp_path):
    """A real KeyboardInterrupt in the main thread, as a terminal's Ctrl-C delivers it."""
    engine = FakeEngine(interrupt_at_step=2)
    code, out, err, s = run_app([f"{PROMPT} /steps 5", "/steps 3", "same"], engine, tmp_path=tmp_path)
    assert code == 0
    assert "generation cancelled at step 2/5; nothing was saved" in err
    assert engine.cancelled_at == 2
    lines = out.splitlines()  # only `same` saved an image, after the cancel, with 3 steps
    assert len(lines) == 1 and engine.requests[1].steps == 3


def test_a_script_gets_only_paths_on_stdout_and_fails_after_an_error(tmp_path):
    script = [f"{PROMPT} /seed 3", "/show", "/help", "/steps 2", "reseed 4"]
    code, out, err, _ = run_app(script, tmp_path=tmp_path, piped=True)
    assert code == 0
    assert out.splitlines() == [str(tmp_path / "img_3.png"), str(tmp_path / "img_4.png")]
    assert "model      flux2-tiny" in err and "Commands:" in err and "now: 2 steps" in err
    assert f"{tmp_path / 'img_3.png'}  seed 3  (encoding" in err
    for bad in ("/bogus", "/steps 0", "reseed x"):  # each kind of error fails the script at its end
        code, out, err, _ = run_app([bad, f"{PROMPT} /seed 3"], tmp_path=tmp_path, piped=True)
        assert code == 1 and "error:" in err and out.splitlines() == [str(tmp_path / "img_3.png")]
    code, *_ = run_app([PROMPT], FakeEngine(fail=GenerationError("the pipeline failed")), piped=True)
    assert code == 1
    code, *_ = run_app(["/bogus", "quit"], piped=True)
    assert code == 1
    code, *_ = run_app(["/bogus"])  # typed in a terminal, an error is just a line
    assert code == 0


def test_show_after_a_cancel_reports_the_last_image_really_made(tmp_path):
    engine = FakeEngine(interrupt_at_step=2)
    code, out, err, s = run_app([f"{PROMPT} /seed 7 /steps 1", "a blue square /steps 5 /seed 8", "/show"], engine,
                                tmp_path=tmp_path)
    assert "generation cancelled at step 2/5" in err
    saved, shown = out.splitlines()[0], out.split("\nlast", 1)[1].splitlines()[0]
    assert saved.startswith(str(tmp_path / "img_7.png"))
    assert shown.strip() == f"{tmp_path / 'img_7.png'}: {PROMPT!r}, seed 7"
    assert "blue square" not in shown and s.status_line().endswith("last seed 7")


def test_guidance_sticks_on_a_model_that_takes_it_and_is_ignored_by_a_distilled_one():
    base = ReplSession(get_model("klein-base-4b"))
    assert base.handle("/guidance 2.5") == Reply("now: guidance 2.5 (model default 4; /guidance off)", "note")
    assert generate(base, "a cat").request.guidance == 2.5
    assert "guidance   2.5" in base.handle("/show").text
    assert base.handle("/guidance off").text == "now: guidance 4 (model default)"
    assert generate(base, "a cat").request.guidance == 4.0
    assert error(base, "/guidance lots") == ("/guidance needs a number from 0 to 30, e.g. /guidance 4, or `off` "
                                             "for the model's default")
    assert "guidance" in error(base, "/guidance 31") and base.settings.guidance is None

    tiny = session()
    assert tiny.handle("/guidance 5") == Reply("flux2-tiny is distilled and takes no guidance: /guidance is "
                                               "ignored", "note")
    action = generate(tiny, "a cat")
    assert action.request.guidance is None and not action.notes  # no notice at every prompt
    assert "takes none" in tiny.handle("/show").text


def test_the_bar_says_decoding_after_the_last_step():
    from flux2cli.console import step_progress

    out = io.StringIO()
    with step_progress("80x48", 4, console=Console(file=out, force_terminal=True, width=100)) as on_step:
        for step in (1, 2, 3):
            on_step(StepEvent(step, 4, 1))
        assert "decoding" not in out.getvalue()
        on_step(StepEvent(4, 4, 1))
        assert "80x48 decoding…" in out.getvalue()  # drawn at once, while the VAE decodes
