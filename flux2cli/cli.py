"""The `flux2` console script: the Typer app and the error boundary."""

from __future__ import annotations

import sys

import typer

from flux2cli.commands import plain_help
from flux2cli.commands.bench import bench
from flux2cli.commands.generate import generate
from flux2cli.commands.info import info
from flux2cli.commands.repl import repl
from flux2cli.commands.serve import serve
from flux2cli.errors import Flux2Error
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
app.command(cls=plain_help.Command,
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
    except Flux2Error as error:
        _fail(str(error), error.exit_code, error)
    except Exception as error:
        _fail(f"unexpected {type(error).__name__}: {error} (FLUX2_DEBUG=1 shows the traceback)", 1, error)


def _fail(message: str, code: int, error: BaseException) -> None:
    if debug_enabled():
        import traceback

        traceback.print_exception(error)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
