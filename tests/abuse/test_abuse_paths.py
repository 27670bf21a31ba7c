"""GET /images/ and /static/ against traversal and smuggled names.

The record: ComfyUI CVE-2024-10099 / CVE-2024-10481 (files read and served from outside
the output folder), aiohttp CVE-2024-23334 (static routes following ``..``). Every request
target is sent byte for byte over a raw socket: no client normalises it first.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from guarded_server import get_raw, refused
from images import png_bytes
from server_fixtures import TINY_PROMPT, assert_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PLANTED_PNG = "flux2_20250101_000000_deadbeef.png"  # the server's naming pattern, not its file


@pytest.fixture(scope="module")
def folder(server, tmp_path_factory):
    """Two real images, a secret outside the folder, and things planted inside it."""
    reply = server.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 1, "seed": 7, "batch": 2})
    assert reply.status == 200, reply.body
    kept, victim = (image["filename"] for image in reply.json()["images"])
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes(png_bytes((32, 32)))
    out = server.config.output_dir
    # A written image swapped for a symlink out of the folder: the name is on the allow-list.
    (out / victim).unlink()
    (out / victim).symlink_to(outside / "secret.png")
    server.plant(PLANTED_PNG, b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')
    server.plant("evil.html", b"<script>alert(document.domain)</script>")
    server.plant("evil.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    (out / "link-out.png").symlink_to(outside / "secret.png")
    server.planted.add("link-out.png")
    return {"kept": kept, "victim": victim, "outside": outside, "out": out}


def _targets(folder) -> list[str]:
    kept, out, outside = folder["kept"], folder["out"], folder["outside"]
    secret = str(outside / "secret.png")
    up = "/".join([".."] * (len(out.parts) - 1))  # from the output folder to /
    return [
        # missing, and outside the root: one answer for both
        "/images/nothing-here.png",
        "/images/flux2_20991231_235959_0badf00d.png",
        f"/images/{folder['victim']}",  # a written name, now a symlink out of the folder
        "/images/link-out.png",  # a symlink planted in the folder
        f"/images/{PLANTED_PNG}",  # the naming pattern, but not this server's file
        "/images/evil.html",
        "/images/evil.svg",
        # traversal, raw and encoded
        "/images/../../../../etc/passwd",
        f"/images/{up}/etc/passwd",
        "/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/images/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/images/%252e%252e%252fetc%252fpasswd",
        "/images/..%5C..%5C..%5Cwindows%5Cwin.ini",
        "/images/..\\..\\..\\etc\\passwd",
        f"/images/..%2f{outside.name}%2fsecret.png",
        f"/images/..%2f..%2f{outside.parent.name}%2f{outside.name}%2fsecret.png",
        # absolute paths
        "/images//etc/passwd",
        "/images/%2Fetc%2Fpasswd",
        f"/images/{quote(secret, safe='')}",
        f"/images{secret}",
        f"/images/{quote(str(out / kept), safe='')}",
        f"/images/{out}/{kept}".replace("//", "/"),
        # NUL bytes, drive letters and streams, case and suffix games
        f"/images/{kept}%00.png",
        f"/images/{kept[:-4]}%00.png",
        "/images/%00",
        "/images/a:b",
        f"/images/{kept}:Zone.Identifier",
        "/images/C:%5Cwindows%5Cwin.ini",
        f"/images/{kept.upper()}",
        f"/images/{kept}.txt",
        f"/images/{kept}/",
        f"/images/{kept[:-4]}.prompt",
        "/images/",
        "/images",
    ]


def test_only_files_this_server_wrote_are_served_and_every_other_name_is_the_same_404(server, folder):
    bodies = set()
    for target in _targets(folder):
        reply = get_raw(server, target.encode())
        assert reply.status == 404, (target, reply.status, reply.body[:200])
        assert_error(reply, 404)
        assert b"root:" not in reply.body and b"<script" not in reply.body
        bodies.add((reply.body, reply.headers["Content-Type"]))
        server.assert_survived()
    assert len(bodies) == 1, bodies  # nothing tells a missing file from a refused one
    served = get_raw(server, f"/images/{folder['kept']}".encode())
    assert served.status == 200 and served.body == (folder["out"] / folder["kept"]).read_bytes()
    assert served.headers["Content-Type"] == "image/png"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in served.headers["Content-Security-Policy"]


@pytest.mark.parametrize("target", [
    "/static/../app.py",
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/app.py",
    "/static/%2e%2e%2f%2e%2e%2fpipeline%2fengine.py",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/..%5c..%5cserver%5capp.py",
    "/static//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
])
def test_static_files_do_not_reach_outside_their_folder(server, target):
    reply = get_raw(server, target.encode())
    refused(server, reply, 404)
    assert b"import " not in reply.body and b"root:" not in reply.body


@pytest.mark.parametrize("target", [
    b"/images/a\x00b.png",
    b"/images/a b.png",
    b"/images/\xff\xfe",
    b"/images/" + b"a" * 9000,
])
def test_malformed_request_targets_are_refused_before_any_route(server, target):
    """The HTTP parser answers these itself (plain text): no file, no traceback, no path."""
    reply = get_raw(server, target)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:200])
    assert b"Traceback" not in reply.body and b"/work/" not in reply.body and b"/tmp/" not in reply.body
    server.assert_survived()
