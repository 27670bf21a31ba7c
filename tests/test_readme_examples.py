"""The README's command examples run, as written, through the installed console script.

Every ```bash (or sh/shell) block of README.md is read when the tests are collected, so the
test follows whatever the README says today. Lines starting with `flux2 ` (after optional
VAR=value prefixes; `\\` continuations joined) run when they can run offline on a CPU: they
use the tiny model (`--model tiny`, `-m tiny`, `FLUX2_MODEL=tiny`), the tiny benchmark
architecture (`--arch tiny-arch`), or are `flux2 info` or a `--help`. `flux2 serve` runs
until stopped and is left out unless it asks for --help; everything else (real models, curl,
make) is left out. Each block runs in order in a fresh folder under bash, so a line may use
files an earlier line of its block wrote (`refs/*.png`); images default to ./outputs there.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from console_script import FLUX2, PLAIN

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(bash|sh|shell)\s*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Example:
    line: int  # in README.md, of the block's first runnable command
    commands: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"README.md:{self.line}"


def command_words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote: not a command we can judge
        return []


def runs_offline(command: str) -> bool:
    words = command_words(command)
    while words and ASSIGNMENT.match(words[0]):
        if words[0] == "FLUX2_MODEL=tiny":
            return words[1:2] == ["flux2"] and "serve" not in words
        words = words[1:]
    if words[:1] != ["flux2"]:
        return False
    if "--help" in words:
        return True
    subcommand = words[1] if len(words) > 1 else ""
    if subcommand == "serve":
        return False
    if subcommand == "info":
        return True
    tiny = any(words[i] in ("--model", "-m") and words[i + 1:i + 2] == ["tiny"] for i in range(len(words)))
    tiny = tiny or "--model=tiny" in words
    tiny_bench = subcommand == "bench" and any(
        words[i] == "--arch" and words[i + 1:i + 2] == ["tiny-arch"] for i in range(len(words)))
    return tiny or tiny_bench


def readme_examples(text: str) -> list[Example]:
    examples = []
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(2)) + 1
        commands, start = [], None
        lines = block.group(2).splitlines()
        i = 0
        while i < len(lines):
            at = i
            logical = lines[i]
            while logical.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                logical = logical.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            if runs_offline(logical.strip()):
                commands.append(logical.strip())
                start = first_line + at if start is None else start
        if commands:
            examples.append(Example(start, tuple(commands)))
    return examples


EXAMPLES = readme_examples(README.read_text(encoding="utf-8")) if README.is_file() else []


def test_the_readme_has_runnable_examples():
    assert EXAMPLES, "README.md has no ```bash line that runs offline (e.g. flux2 generate ... --model tiny)"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_readme_example_runs(example, tmp_path):
    env = {**os.environ, **PLAIN, "FLUX2_OUTPUT_DIR": str(tmp_path / "outputs"),
           "PATH": f"{Path(FLUX2).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in example.commands:
        result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=300)
        assert result.returncode == 0, f"{command!r} exited {result.returncode}: {result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-2000:]


SAMPLE = """\
Intro `flux2 generate "inline" --model tiny` is prose, not a block.

```bash
make demo
flux2 generate "a red circle on a blue background" --model tiny   # runs
flux2 generate "a sunset"                                          # the default model: skipped
flux2 serve --model tiny                                           # never returns: skipped
flux2 generate "a yellow circle" -m tiny --seed 5 \\
      --input-image refs/*.png --strength 0.5
FLUX2_MODEL=tiny flux2 repl
flux2 info
flux2 bench --arch tiny-arch --size 64
flux2 bench --arch klein-4b
curl -s localhost:2222/generate
```

```text
flux2 generate "text blocks are output, not commands" --model tiny
```

```sh
flux2 serve --help
```
"""


def test_the_parser_picks_runnable_lines():
    examples = readme_examples(SAMPLE)
    assert [example.commands for example in examples] == [
        ('flux2 generate "a red circle on a blue background" --model tiny   # runs',
         'flux2 generate "a yellow circle" -m tiny --seed 5 --input-image refs/*.png --strength 0.5',
         "FLUX2_MODEL=tiny flux2 repl",
         "flux2 info",
         "flux2 bench --arch tiny-arch --size 64"),
        ("flux2 serve --help",),
    ]
    assert [example.line for example in examples] == [5, 22]
