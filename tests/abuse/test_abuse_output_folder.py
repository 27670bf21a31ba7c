"""An output folder that cannot be used fails `flux2 generate` and `flux2 serve` at once, in one
line with exit status 2, before any model is loaded.

The record (issue 18): `generate -o some_file` generated for the whole run and then failed
with "unexpected FileExistsError"; `serve -o some_file` failed only after loading the model.
The model here is [dev], which this offline test environment cannot load: a check made
after loading would fail with a message about the weights instead.
"""

from __future__ import annotations

import pytest

from console_script import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _folder(tmp_path, case: str):
    target = tmp_path / "out"
    if case == "a file":
        target.write_text("x")
    elif case == "a dangling link":
        target.symlink_to(tmp_path / "missing")
    elif case == "a link loop":
        target.symlink_to(tmp_path / "loop")
        (tmp_path / "loop").symlink_to(target)
    elif case == "a too-long name":
        target = tmp_path / ("x" * 300)
    elif case == "inside a file":
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / "out"
    return target


CASES = {"a file": "is a file", "a dangling link": "symbolic link to nothing", "a link loop": "loop of symbolic links",
         "a too-long name": "name is too long", "inside a file": "part of the path is a file"}


@pytest.mark.parametrize("case", CASES)
def test_generate_refuses_an_unusable_output_folder_before_loading(tmp_path, case):
    target = _folder(tmp_path, case)
    result = run("generate", "a red circle", "--model", "dev", "--steps", "10", "-o", str(target))
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert CASES[case] in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["a file", "a dangling link"])
def test_serve_refuses_an_unusable_output_folder_before_loading(tmp_path, case):
    target = _folder(tmp_path, case)
    result = run("serve", "--model", "dev", "--port", "0", "-o", str(target), timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert CASES[case] in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stdout == ""  # never got as far as serving
