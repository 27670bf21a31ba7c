"""GET /history and GET /images over real HTTP: the output folder, earlier runs' images included,
and nothing but our own images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from flux2cli.server import history
from flux2cli.server.config import ServerConfig
from images import png_bytes, saved_images
from server_fixtures import TINY_PROMPT, LiveServer, assert_error

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BIG_SEED = 338088639479980434  # above 2**53: exact only as a JSON integer read with care


def _history(server, query: str = "") -> dict:
    reply = server.call("GET", f"/history{query}")
    assert reply.status == 200, reply.body[:300]
    return reply.json()


def test_a_restarted_server_lists_and_serves_the_images_an_earlier_run_made(tiny_engine, tmp_path):
    config = ServerConfig(output_dir=tmp_path)
    with LiveServer(tiny_engine, config) as first:
        made = first.call("POST", "/generate", {"prompt": TINY_PROMPT, "steps": 2, "seed": BIG_SEED, "batch": 2,
                                                "orientation": "portrait"})
        assert made.status == 200, made.body
        names = [image["filename"] for image in made.json()["images"]]
        served = {name: first.call("GET", f"/images/{name}").body for name in names}
    with LiveServer(tiny_engine, config) as second:
        page = _history(second)
        assert sorted(image["filename"] for image in page["images"]) == sorted(names)
        assert page["next"] is None
        for image in page["images"]:
            assert image["prompt"] == TINY_PROMPT and image["url"] == f"/images/{image['filename']}"
            settings = image["settings"]
            assert settings["batch"] == 2 and settings["steps"] == 2 and settings["model"] == "tiny"
            assert (settings["orientation"], settings["size"]) == ("portrait", "1mp")
            assert "width" not in settings and "reference_images" not in image["settings"]
            assert image["seed"] == settings["seed"] and image["model_name"] == "flux2-tiny"
            assert image["timings"]["diffusion"] > 0 and image["created"].startswith(image["filename"][6:10])
            reply = second.call("GET", image["url"])
            assert reply.status == 200 and reply.headers["Content-Type"] == "image/png"
            assert reply.body == served[image["filename"]]
        # The seeds are exact in the body's text, not just after Python's json reads it.
        assert sorted(image["seed"] for image in page["images"]) == [BIG_SEED, BIG_SEED + 1]
        text = second.call("GET", "/history").text
        assert f'"seed": {BIG_SEED}' in text or f'"seed":{BIG_SEED}' in text


def test_only_our_images_are_listed_or_served(server, tmp_path):
    out = server.config.output_dir
    ours = saved_images(out, 1)[0]
    # A copy of our image under another name, and one outside the folder behind a link of our pattern.
    (out / "copy.png").write_bytes((out / ours).read_bytes())
    (out / "flux2_20250101_000000_0000000a.png").write_bytes((out / ours).read_bytes().replace(b"flux2", b"other"))
    (out / "flux2_20250101_000000_0000000b.png").write_bytes(png_bytes((16, 16)))  # a PNG without our chunk
    (out / "flux2_20250101_000000_0000000c.png").write_bytes(b"<svg onload=alert(1)>")  # not a PNG at all
    a1111 = PngInfo()
    a1111.add_text("parameters", "a circle\nSteps: 4, Seed: 1, Size: 16x16")
    Image.new("RGB", (16, 16)).save(out / "flux2_20250101_000000_0000000d.png", pnginfo=a1111)  # another tool's
    damaged = PngInfo()
    damaged.add_text("flux2", "{not json")
    Image.new("RGB", (16, 16)).save(out / "flux2_20250101_000000_0000000e.png", pnginfo=damaged)
    outside = tmp_path / "flux2_20250101_000000_0000000f.png"
    outside.write_bytes((out / ours).read_bytes())
    (out / outside.name).symlink_to(outside)  # a symlink out of the folder, carrying our chunk
    (out / "flux2_20250101_000000_00000010.png").mkdir()  # a folder of our name
    sub = out / "sub"
    sub.mkdir()
    (sub / "flux2_20250101_000000_00000011.png").write_bytes((out / ours).read_bytes())  # below the folder
    refused = ["copy.png", *(f"flux2_20250101_000000_{n:08x}.png" for n in range(0xa, 0x12)),
               "sub/flux2_20250101_000000_00000011.png", "sub%2Fflux2_20250101_000000_00000011.png"]

    listed = [image["filename"] for image in _history(server, "?limit=100")["images"]]
    assert ours in listed
    assert not set(listed) & {Path(name).name for name in refused}, listed
    assert server.call("GET", f"/images/{ours}").status == 200
    for name in refused:
        assert_error(server.call("GET", f"/images/{name}"), 404)


def test_pages_are_newest_first_and_cover_everything_once(tiny_engine, tmp_path):
    made = []
    for second in range(3):  # names differ in their time part too, not only in their random part
        made += saved_images(tmp_path, 3, prompt=f"circle {second}", seed=second * 10)
        # a non-image of our pattern between them: skipped, never counted
        (tmp_path / f"flux2_20000101_00000{second}_ffffffff.png").write_bytes(b"junk")
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path)) as live:
        pages, before = [], None
        while True:
            page = _history(live, "?limit=4" + (f"&before={before}" if before else ""))
            pages.append([image["filename"] for image in page["images"]])
            before = page["next"]
            if before is None:
                break
        seen = [name for page in pages for name in page]
        assert seen == sorted(made, reverse=True)  # each once, newest first
        assert [len(page) for page in pages] == [4, 4, 1]
        assert _history(live, f"?before={seen[0]}&limit=2")["images"][0]["filename"] == seen[1]
        assert _history(live, "?limit=2")["next"] == seen[1]


def test_a_page_opens_a_bounded_number_of_files(tiny_engine, tmp_path, monkeypatch):
    """A folder of thousands of names costs a listing, not thousands of reads per request."""
    kept = saved_images(tmp_path, 2)
    for n in range(2000):  # newer than ours: every request must step over them
        (tmp_path / f"flux2_29990101_000000_{n:08x}.png").write_bytes(b"not ours")
    opened = []
    real_open = history._open_regular
    monkeypatch.setattr(history, "_open_regular", lambda path: opened.append(path.name) or real_open(path))
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path)) as live:
        page = _history(live, "?limit=5")
        assert page["images"] == [] and page["next"] is not None  # cut short, and says where to go on
        assert len(opened) == 5 + history.EXTRA_READS
        found, before, requests = [], page["next"], 1
        while before is not None:
            page = _history(live, f"?limit=5&before={before}")
            found += [image["filename"] for image in page["images"]]
            before, requests = page["next"], requests + 1
        assert found == sorted(kept, reverse=True)
        assert len(opened) <= requests * (5 + history.EXTRA_READS)


@pytest.mark.parametrize("query", ["?limit=0", "?limit=101", "?limit=abc", "?limit=", "?limit=%C2%B2",
                                   "?before=../../etc/passwd", "?before=", "?before=flux2_x.png"])
def test_bad_paging_values_are_one_line_400s(server, query):
    message = assert_error(server.call("GET", f"/history{query}"), 400)
    assert ("limit" if "limit" in query else "before") in message


def test_history_is_in_the_openapi_document(server):
    document = server.call("GET", "/openapi.json").json()
    operation = document["paths"]["/history"]["get"]
    assert {parameter["name"] for parameter in operation["parameters"]} == {"limit", "before"}
    schema = document["components"]["schemas"]["History"]
    assert set(schema["required"]) == {"success", "images", "next"}
    assert json.dumps(document)  # the whole document stays serialisable
