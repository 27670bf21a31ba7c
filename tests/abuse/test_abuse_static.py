"""/static/ is public (the page needs it before it has a key): every name that reaches the file
lookup answers the same JSON 404, never a 500, and nothing a request puts in its path reaches
the log raw.

The record: issue 18 found a 500 with a traceback for a very long name or an encoded NUL,
even with --api-key set, and the decoded path logged raw (forged lines, terminal escapes),
reachable from any web page through an <img> tag.
"""

from __future__ import annotations

import logging

import pytest

from flux2cli.server.config import ServerConfig
from guarded_server import GuardedServer, get_raw, refused

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def keyed(tiny_engine, tmp_path_factory):
    config = ServerConfig(output_dir=tmp_path_factory.mktemp("static-out"), api_key="k3y")
    with GuardedServer(tiny_engine, config) as live:
        yield live


class Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("target", [
    b"/static/" + b"a" * 5000,  # past NAME_MAX: the lookup fails with ENAMETOOLONG
    b"/static/" + b"/".join([b"d" * 200] * 30),  # past PATH_MAX
    b"/static/app.js%00.png",  # an encoded NUL: the lookup raises ValueError
    b"/static/%00",
    b"/static/a%00/../app.js",
    b"/static/%1b%5b2J%1b%5b31mforged%0d%0a12:00:00%20GET%20/admin",  # escapes and a forged line
    b"/static/%e2%80%ae%67%6e%70%2e%6a%73",  # a right-to-left override
    b"/static/..%00/..%00/etc/passwd",
])
def test_every_static_name_is_a_clean_404_and_nothing_reaches_the_log_raw(keyed, target):
    errors = Errors()
    logger = logging.getLogger("flux2cli.server")
    logger.addHandler(errors)
    try:
        reply = get_raw(keyed, target)
        refused(keyed, reply, 404)
    finally:
        logger.removeHandler(errors)
    assert errors.lines == []  # a refused name is no error worth a line, let alone a traceback
    assert b"\x1b" not in reply.body and b"forged" not in reply.body


def test_the_ui_files_are_still_served_without_the_key(keyed):
    reply = get_raw(keyed, b"/static/app.js")
    assert reply.status == 200 and reply.body
