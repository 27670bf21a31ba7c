"""The `flux2` console script: the Typer app and the error boundary."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from typer.exceptions import TyperException

from flux2cli.commands import plain_help
from flux2cli.commands.bench import bench
from flux2cli.commands.generate import generate
from flux2cli.commands.info import info
from flux2cli.commands.repl import repl
from flux2cli.commands.serve import serve
from flux2cli.errors import Flux2Error, GenerationCancelled
from flux2cli.settings import FILE_KEYS, debug_enabled, epilog

app = typer.Typer(
    name="flux2",
    help="Run Black Forest Labs' FLUX.2 image models from a terminal and a browser.",
    epilog=epilog(*FILE_KEYS, "home", "config"),
    no_args_is_help=True,
    cls=plain_help.Group,
    rich_markup_mode=None,  # plain help: rich's imports would double `flux2 --help` (docs/performance.md)
    pretty_exceptions_show_locals=False,  # locals hold prompts, tokens and tensors
    add_completion=True,
)


def failure(error: BaseException) -> tuple[str, int]:
    """The one line and the exit status for an error that ends a command."""
    if isinstance(error, GenerationCancelled):  # a person's Ctrl-C: what happened, not an error
        return f"cancelled at step {error.step}/{error.total_steps}; nothing saved", error.exit_code
    if isinstance(error, Flux2Error):
        return str(error), error.exit_code
    if isinstance(error, TyperException):  # a usage error: a bad option value, a missing argument
        return error.format_message(), getattr(error, "exit_code", 2)
    return f"unexpected {type(error).__name__}: {error} (FLUX2_DEBUG=1 shows the traceback)", 1


class JsonErrorsCommand(plain_help.Command):
    """`generate --json`: a failure also leaves as one JSON object on stdout, where a script
    reads the result; the stderr line and the exit status stay those of every command."""

    def make_context(self, info_name: Any, args: list[str], parent: Any = None, **extra: Any) -> Any:
        wants_json = "--json" in args  # before parsing, which consumes ``args``
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except TyperException as error:
            if wants_json:
                _print_json_failure(error)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            if ctx.params.get("json_output"):
                _print_json_failure(error)
            raise


def _print_json_failure(error: BaseException) -> None:
    message, code = failure(error)
    print(json.dumps({"success": False, "error": message, "exit_code": code}), flush=True)


app.command(cls=JsonErrorsCommand,
            epilog=epilog("model", "output_dir", "server", "api_key", "encoder_url", "encoder_token", "debug"))(generate)
app.command(cls=plain_help.Command, epilog=epilog("model", "output_dir", "home", "debug"))(repl)
app.command(cls=plain_help.Command,
            epilog=epilog("host", "port", "api_key", "model", "output_dir", "encoder_url", "encoder_token"))(serve)
app.command(cls=plain_help.Command, epilog=epilog("config", "home"))(info)
app.command(cls=plain_help.Command)(bench)


def main() -> None:
    """Run the app; every error leaves as one line that says what to do next.

    Typer reports its own usage errors (exit 2) and turns Ctrl-C into "Aborted!";
    our errors and anything unexpected come out of ``app()`` and end here.
    """
    try:
        app()
    except Exception as error:
        _fail(error)


def _fail(error: BaseException) -> None:
    message, code = failure(error)
    if debug_enabled():
        import traceback

        traceback.print_exception(error)
    print(message if isinstance(error, GenerationCancelled) else f"error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
