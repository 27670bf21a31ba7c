"""Click's plain --help, with options grouped under their panel and the settings as a table.

Typer's rich help imports rich, markdown-it and pygments: about 0.15 s on two cores, more
than the whole plain `flux2 --help` takes (docs/performance.md). Plain text keeps what the
panels were for: the model flags under "Model", the FLUX2_* variables aligned like options.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup

from flux2cli.settings import EPILOG_COLUMN


def _format_sections(command: Any, ctx: Any, formatter: Any) -> None:
    sections: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        fallback = "Arguments" if param.param_type_name == "argument" else "Options"
        sections.setdefault(getattr(param, "rich_help_panel", None) or fallback, []).append(record)
    for title, records in sections.items():
        with formatter.section(title):
            formatter.write_dl(records)


def _format_epilog(command: Any, formatter: Any) -> None:
    if not command.epilog:
        return
    intro, _, table = command.epilog.partition("\n\n")
    rows = [tuple(line.split(EPILOG_COLUMN, 1)) for line in table.splitlines()]
    formatter.write_paragraph()
    formatter.write_text(intro)
    if rows and all(len(row) == 2 for row in rows):
        formatter.write_paragraph()
        with formatter.indentation():
            formatter.write_dl(rows)
    elif table:
        formatter.write_paragraph()
        formatter.write_text(table)


class Command(TyperCommand):
    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_sections(self, ctx, formatter)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        _format_epilog(self, formatter)


class Group(TyperGroup):
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # Click's plain mode prints this help on stderr; `flux2 | less` should page it, as it did
        # with rich help. Exit 2 as before: no command was run.
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            print(ctx.get_help())
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_sections(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # Click cuts each summary to fit one line ("Generate images from one prompt and save...");
        # the whole first sentence, wrapped, says what the command is for.
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        _format_epilog(self, formatter)
