"""One module per subcommand; each parses, builds a request, calls the engine, shows the result.

They import what they run with inside the command, so `flux2 --help` loads none of it, and
they leave out ``from __future__ import annotations``: Typer would compile and evaluate every
option's annotation string several times while building the CLI (about 15 ms of each start).
"""
