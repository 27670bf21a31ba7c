"""The web UI in headless Chromium (Debian's `chromium`, driven by Playwright), real tiny model.

Screenshots land in test-artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from flux2cli.server.config import ServerConfig
from images import png_bytes, saved_images
from server_fixtures import TINY_PROMPT, FakeEngine, LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = os.environ.get("FLUX2_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (apt-get install -y chromium); CI installs it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def server(tiny_engine, tmp_path):
    """A server of its own for each test: the page shows the output folder's images on open,
    so every test starts from an empty gallery, as a first-time user does."""
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path / "out")) as live:
        yield live


def _page(browser, server, **context_options):
    context = browser.new_context(**context_options)
    page = context.new_page()
    requests, problems = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto(server.url + "/")
    _history_loaded(page)
    # Record every progress text the page shows, to check the bar was fed by the job's events.
    page.evaluate("""() => {
        window.__progress = [];
        new MutationObserver(() => window.__progress.push(document.getElementById('progress-text').textContent))
            .observe(document.getElementById('progress-text'), {childList: true, characterData: true, subtree: true});
    }""")
    return page, requests, problems


def _history_loaded(page) -> None:
    sync_api.expect(page.locator("#gallery")).not_to_have_attribute("aria-busy", "true")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_generate_from_the_page(browser, server):
    page, requests, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    sync_api.expect(page.locator("#model")).to_have_text("flux2-tiny with local encoder")
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "4")
    page.click("#dice")
    seed = page.input_value("#seed")
    assert re.fullmatch(r"\d+", seed)
    page.click("#generate")
    # the observer keeps every text the bar showed: a tiny generation may pass "Step n" between two polls
    page.wait_for_function("() => window.__progress.some((text) => /^Step \\d/.test(text))", timeout=120_000)
    _shot(page, "web-ui-progress.png")
    card = page.locator(".card").first
    sync_api.expect(card).to_be_visible(timeout=120_000)
    sync_api.expect(card.locator(".seed")).to_have_text(seed)
    sync_api.expect(card.locator(".size")).to_have_text("80 × 48")
    sync_api.expect(card.locator(".prompt")).to_have_text(TINY_PROMPT)
    assert "diffusion" in card.locator(".timings").inner_text()
    assert page.evaluate("() => document.querySelector('.card .image').naturalWidth") == 80
    download = card.locator("a.download")
    assert re.fullmatch(r"flux2_\d{8}_\d{6}_[0-9a-f]{8}\.png", download.get_attribute("download"))
    assert download.get_attribute("href").startswith("blob:")
    progress = page.evaluate("() => window.__progress")
    assert any(re.fullmatch(r"Step \d of 4", text) for text in progress), progress
    assert progress[-1].startswith("Done in")
    sync_api.expect(page.locator("#generate")).to_be_enabled()
    assert not problems, problems
    assert all(url.startswith((server.url, "blob:", "data:")) for url in requests), requests  # offline
    _shot(page, "web-ui-desktop.png")
    page.context.close()


def test_enter_submits_and_prompts_stay_text(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True, device_scale_factor=2)
    hostile = '<img src=x onerror="window.__owned=1">' + TINY_PROMPT
    page.fill("#prompt", hostile)
    page.fill("#steps", "2")
    page.fill("#seed", "9007199254740993")  # above 2**53: must survive the trip exactly
    page.press("#prompt", "Enter")
    card = page.locator(".card").first
    sync_api.expect(card).to_be_visible(timeout=120_000)
    sync_api.expect(card.locator(".prompt")).to_have_text(hostile)
    sync_api.expect(card.locator(".seed")).to_have_text("9007199254740993")
    assert page.evaluate("() => window.__owned") is None
    assert page.locator(".card .prompt img").count() == 0
    # Nothing overflows a phone-sized screen.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert not problems, problems
    _shot(page, "web-ui-phone.png")
    page.context.close()


def test_bad_input_shows_an_inline_error(browser, server):
    page, _, _ = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.click("#generate")  # no prompt at all: caught in the page
    sync_api.expect(page.locator("#error")).to_contain_text("Write a prompt first")
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "999")  # the server's answer is shown, in words
    page.click("#generate")
    error = page.locator("#error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_contain_text("steps must be between 1 and 50")
    sync_api.expect(page.locator("#generate")).to_be_enabled()
    assert page.locator(".card").count() == 0
    _shot(page, "web-ui-error.png")
    page.fill("#steps", "")
    page.fill("#seed", "12ab")
    page.click("#generate")
    sync_api.expect(error).to_contain_text("The seed must be a whole number")
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    sync_api.expect(error).to_contain_text("PNG, JPEG or WebP")
    page.context.close()


def test_reference_image_by_file_picker_shows_strength(browser, server):
    picture = png_bytes((40, 30), (250, 200, 0))
    page, _, _ = _page(browser, server, viewport={"width": 1280, "height": 820})
    assert page.locator("#strength-row").is_hidden()
    page.set_input_files("#file", files=[{"name": "ref.png", "mimeType": "image/png", "buffer": picture}])
    sync_api.expect(page.locator("#preview")).to_be_visible()
    sync_api.expect(page.locator("#strength-row")).to_be_visible()
    page.locator("#strength").fill("0.5")
    sync_api.expect(page.locator("#strength-value")).to_have_text("0.50")
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "1")
    page.click("#generate")
    page.wait_for_function("() => document.querySelector('.card') || !document.getElementById('error').hidden",
                           timeout=120_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    sync_api.expect(page.locator(".card .size").first).to_have_text("80 × 48")
    page.click("#clear-image")
    assert page.locator("#strength-row").is_hidden()
    page.context.close()


def test_the_page_asks_for_the_api_key(browser, tiny_engine, tmp_path):
    key = "ui-test-key"
    with LiveServer(tiny_engine, ServerConfig(output_dir=tmp_path, api_key=key)) as keyed:
        page, _, _ = _page(browser, keyed, viewport={"width": 1280, "height": 820})
        sync_api.expect(page.locator("#key-row")).to_be_visible()
        sync_api.expect(page.locator("#error")).to_contain_text("needs an API key")
        page.fill("#api-key", key)
        page.press("#api-key", "Tab")  # change event
        sync_api.expect(page.locator("#model")).to_have_text("flux2-tiny with local encoder")
        page.fill("#prompt", TINY_PROMPT)
        page.fill("#steps", "1")
        page.click("#generate")
        card = page.locator(".card").first
        sync_api.expect(card).to_be_visible(timeout=120_000)
        assert page.evaluate("() => document.querySelector('.card .image').naturalWidth") == 80
        page.context.close()


def test_drag_and_drop_sets_the_reference_image(browser, server):
    import base64

    picture = png_bytes((40, 30), (0, 120, 250))
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const drop = document.getElementById("drop");
        drop.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        drop.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", base64.b64encode(picture).decode())
    sync_api.expect(page.locator("#preview")).to_be_visible()
    sync_api.expect(page.locator("#strength-row")).to_be_visible()
    assert page.evaluate("() => document.getElementById('preview').naturalWidth") == 40
    assert not problems, problems
    page.context.close()


def test_cancel_stops_the_running_job(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "50")
    page.click("#generate")
    # the observer keeps every text the bar showed: a tiny generation may pass "Step n" between two polls
    page.wait_for_function("() => window.__progress.some((text) => /^Step \\d/.test(text))", timeout=120_000)
    page.click("#cancel")
    sync_api.expect(page.locator("#progress-text")).to_have_text("Cancelled.", timeout=60_000)
    sync_api.expect(page.locator("#generate")).to_be_enabled()
    assert page.locator(".card").count() == 0 and page.locator("#error").is_hidden()
    assert server.worker.history[-1].state == "cancelled"
    assert not problems, problems
    page.context.close()


def test_use_these_settings_fills_the_form_from_the_image(browser, server):
    # Steps left empty: the model's default (8) is known only from the image's own metadata.
    # A non-Latin-1 prompt is stored in an iTXt chunk; a seed above 2**53 must survive the JSON.
    prompt = TINY_PROMPT + " — ✓"
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.fill("#prompt", prompt)
    page.select_option("#orientation", "portrait")
    page.select_option("#size", "2mp")
    page.fill("#seed", "9007199254740995")
    page.click("#generate")
    card = page.locator(".card").first
    sync_api.expect(card).to_be_visible(timeout=120_000)
    sync_api.expect(card.locator(".size")).to_have_text("96 × 160")
    page.fill("#prompt", "something else")
    page.select_option("#orientation", "landscape")
    page.select_option("#size", "1mp")
    page.fill("#steps", "3")
    page.fill("#seed", "")
    card.locator(".reuse").click()
    sync_api.expect(page.locator("#steps")).to_have_value("8")
    assert page.input_value("#prompt") == prompt
    assert (page.input_value("#orientation"), page.input_value("#size")) == ("portrait", "2mp")
    assert page.input_value("#seed") == "9007199254740995"
    assert page.evaluate("() => document.activeElement.id") == "prompt"
    assert not problems, problems
    _shot(page, "web-ui-reuse.png")
    page.context.close()


def test_the_result_card_shows_the_image_forming(browser, tiny_engine, tmp_path):
    """Previews replace each other under the bar while it runs, then the final image comes."""
    config = ServerConfig(output_dir=tmp_path, preview_every=0.0)
    with LiveServer(tiny_engine, config) as live:
        page, _, problems = _page(browser, live, viewport={"width": 1280, "height": 820})
        page.evaluate("""() => {
            window.__frames = [];
            new MutationObserver(() => {
                const src = document.getElementById('forming').getAttribute('src');
                if (src && !window.__frames.includes(src)) window.__frames.push(src);
            }).observe(document.getElementById('forming'), {attributes: true, attributeFilter: ['src']});
        }""")
        page.fill("#prompt", TINY_PROMPT)
        page.fill("#steps", "30")
        page.click("#generate")
        card = page.locator(".card").first
        sync_api.expect(card).to_be_visible(timeout=180_000)
        frames = page.evaluate("() => window.__frames")
        assert len(frames) >= 2 and all(f.startswith("data:image/webp;base64,") for f in frames), frames[:3]
        assert page.locator("#forming").is_hidden()  # the final image took its place
        assert not problems, problems
        page.context.close()


# -- the mask brush and the extension (issue 16) -------------------------------------------

YELLOW = (230, 220, 40)


def _choose_reference(page, size=(64, 64)):
    page.set_input_files("#file", files=[{"name": "in.png", "mimeType": "image/png",
                                          "buffer": png_bytes(size, YELLOW)}])
    sync_api.expect(page.locator("#mask-row")).to_be_visible()
    sync_api.expect(page.locator("#extend-row")).to_be_visible()


def _stroke(page, points):
    """A mouse stroke through image-pixel points of the mask canvas (the page scales it up)."""
    page.locator("#mask-canvas").scroll_into_view_if_needed()  # the mouse reaches only what is on screen
    box = page.locator("#mask-canvas").bounding_box()
    width, height = page.evaluate("() => [document.getElementById('mask-canvas').width,"
                                  " document.getElementById('mask-canvas').height]")
    to_page = [(box["x"] + x * box["width"] / width, box["y"] + y * box["height"] / height) for x, y in points]
    page.mouse.move(*to_page[0])
    page.mouse.down()
    for point in to_page[1:]:
        page.mouse.move(*point, steps=4)
    page.mouse.up()


def _posted_job(page, action):
    """The JSON body the page POSTs to /jobs while ``action`` runs."""
    import json

    with page.expect_request(lambda request: request.url.endswith("/jobs") and request.method == "POST") as posted:
        action()
    return json.loads(posted.value.post_data)


def _saved_image(server, page):
    import io
    import urllib.request

    from PIL import Image

    card = page.locator(".card").first
    sync_api.expect(card).to_be_visible(timeout=120_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    name = card.locator("a.download").get_attribute("download")
    with urllib.request.urlopen(f"{server.url}/images/{name}") as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB"), card


def _decoded(data_url: str):
    import base64
    import io

    from PIL import Image

    header, _, payload = data_url.partition(",")
    assert header == "data:image/png;base64", header
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def test_a_painted_mask_regenerates_only_the_painted_area(browser, server):
    import numpy as np

    from flux2cli.pipeline.inpaint import feathered

    page, requests, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    _choose_reference(page)
    page.click("#mask-row summary")
    page.locator("#brush").fill("50")  # half the image's side: 32 px
    sync_api.expect(page.locator("#brush-value")).to_have_text("32 px")
    # Down the left edge and past both ends (the canvas keeps the pointer): the left ~28 columns.
    _stroke(page, [(12, 2), (12, -40), (12, 110)])
    sync_api.expect(page.locator("#mask-state")).to_contain_text("painted")
    page.locator("#strength").fill("1")
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "8")
    page.fill("#seed", "3")
    _shot(page, "web-ui-mask.png")
    body = _posted_job(page, lambda: page.click("#generate"))
    assert "orientation" not in body and "size" not in body and "expand" not in body
    mask = _decoded(body["mask_image"])
    assert mask.size == (64, 64)  # at the reference's own size
    rgb = np.asarray(mask.convert("RGB"), np.int16)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()  # greyscale
    grey = np.asarray(mask.convert("L"))
    painted, kept = grey == 255, np.asarray(feathered(mask.convert("L"))) == 0
    assert painted[:, :20].all() and not painted[:, 36:].any(), grey[0]  # the stroke, not the rest

    out, card = _saved_image(server, page)
    sync_api.expect(card.locator(".size")).to_have_text("64 × 64")
    pixels = np.asarray(out, np.int16)
    assert pixels.shape == (64, 64, 3)
    assert kept.sum() > 64 * 24
    assert (pixels[kept] == YELLOW).all()  # beyond the feather: the input's own pixels, exactly
    repainted = pixels[painted].mean(axis=0)
    assert repainted[2] > repainted[0] + 40, repainted  # the prompt's blue, not the input's yellow
    assert not problems, problems
    assert all(url.startswith((server.url, "blob:", "data:")) for url in requests), requests  # offline
    page.context.close()


def test_extend_grows_the_image(browser, server):
    import numpy as np

    from flux2cli.pipeline.inpaint import FEATHER, OVERLAP

    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    _choose_reference(page)
    page.fill("#extend-all", "16")
    sync_api.expect(page.locator("#extend-size")).to_have_text("The image grows to 96 × 96.")
    assert [page.input_value(f"#extend-{side}") for side in ("left", "top", "right", "bottom")] == ["16"] * 4
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "2")
    body = _posted_job(page, lambda: page.click("#generate"))
    assert body["expand"] == [16, 16, 16, 16] and "mask_image" not in body  # nothing painted: no mask
    out, card = _saved_image(server, page)
    sync_api.expect(card.locator(".size")).to_have_text("96 × 96")
    assert out.size == (96, 96)
    inner = 16 + OVERLAP + 2 * FEATHER
    assert (np.asarray(out, np.int16)[inner:96 - inner, inner:96 - inner] == YELLOW).all()
    assert not problems, problems
    page.context.close()


def test_mask_tools_and_bad_extension(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    _choose_reference(page, (40, 30))
    page.click("#mask-row summary")

    def painted_share():
        return page.evaluate("""() => {
            const c = document.getElementById('mask-canvas');
            const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < a.length; i += 4) n += a[i] === 255;
            return n / (c.width * c.height);
        }""")

    assert page.evaluate("() => maskDataUrl()") is None  # nothing painted: nothing sent
    _stroke(page, [(5, 15), (35, 15)])
    painted = painted_share()
    assert 0.1 < painted < 0.9
    page.click("#mask-invert")
    assert abs(painted_share() - (1 - painted)) < 0.1
    page.click("#mask-erase")
    sync_api.expect(page.locator("#mask-erase")).to_have_attribute("aria-pressed", "true")
    before = painted_share()
    _stroke(page, [(20, 2), (20, 28)])
    assert painted_share() < before
    page.click("#mask-clear")
    assert painted_share() == 0 and page.evaluate("() => maskDataUrl()") is None

    page.fill("#prompt", TINY_PROMPT)
    page.fill("#extend-right", "-5")
    page.click("#generate")
    sync_api.expect(page.locator("#error")).to_contain_text("Extend right must be a whole number")
    page.fill("#extend-right", "4000")  # past the model's sizes: the server's own words
    page.click("#generate")
    sync_api.expect(page.locator("#error")).to_contain_text("expand")
    assert page.locator(".card").count() == 0
    page.click("#clear-image")
    assert page.locator("#mask-row").is_hidden() and page.locator("#extend-row").is_hidden()
    assert page.input_value("#extend-right") == ""
    assert all("status of 400" in problem for problem in problems), problems  # the refusal, logged
    page.context.close()


def test_the_mask_paints_by_touch_on_a_phone(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True, device_scale_factor=2)
    _choose_reference(page, (640, 480))
    page.click("#mask-row summary")
    page.locator("#mask-canvas").scroll_into_view_if_needed()
    box = page.locator("#mask-canvas").bounding_box()
    page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    sync_api.expect(page.locator("#mask-state")).to_contain_text("painted")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390  # nothing overflows
    _shot(page, "web-ui-mask-phone.png")
    assert not problems, problems
    page.context.close()


# -- the gallery remembers; queue places; phones; exact seeds (issue 19) --------------------

BIG_SEED = "338088639479980434"  # above 2**53: as a JavaScript number it would read ...400


def _card_names(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cards => cards.map(card => card.dataset.filename)")


def _pixels(server, name: str) -> bytes:
    import io
    import urllib.request

    from PIL import Image

    with urllib.request.urlopen(f"{server.url}/images/{name}") as response:
        return Image.open(io.BytesIO(response.read())).convert("RGB").tobytes()


def test_a_reload_or_a_restart_keeps_the_gallery(browser, tiny_engine, tmp_path):
    config = ServerConfig(output_dir=tmp_path / "out")
    # The prompt holds what a careless seed reader would rewrite: text is never touched.
    prompt = TINY_PROMPT + ' "seed": 12345678901234567890'
    with LiveServer(tiny_engine, config) as earlier:  # an earlier run of the server
        made = earlier.call("POST", "/generate", {"prompt": prompt, "steps": 2, "seed": int(BIG_SEED),
                                                  "orientation": "square"})
        assert made.status == 200, made.body
        earlier_name = made.json()["images"][0]["filename"]
    with LiveServer(tiny_engine, config) as live:
        page, requests, problems = _page(browser, live, viewport={"width": 1280, "height": 820})
        assert _card_names(page) == [earlier_name]
        card = page.locator(".card").first
        sync_api.expect(card.locator(".prompt")).to_have_text(prompt)
        sync_api.expect(card.locator(".seed")).to_have_text(BIG_SEED)
        sync_api.expect(card.locator(".size")).to_have_text("64 × 64")
        assert page.locator("#empty").is_hidden()
        page.fill("#prompt", TINY_PROMPT)
        page.fill("#steps", "1")
        page.click("#generate")
        sync_api.expect(page.locator(".card")).to_have_count(2, timeout=120_000)
        names = _card_names(page)
        assert names[1] == earlier_name  # the new image first
        page.reload()
        _history_loaded(page)
        assert _card_names(page) == names  # the same gallery, in the same order
        page.locator(".card").nth(1).locator(".reuse").click()  # the earlier run's settings
        assert page.input_value("#prompt") == prompt and page.input_value("#seed") == BIG_SEED
        assert (page.input_value("#orientation"), page.input_value("#steps")) == ("square", "2")
        assert not problems, problems
        assert all(url.startswith((live.url, "blob:", "data:")) for url in requests), requests  # offline
        _shot(page, "web-ui-history.png")
        page.context.close()


def test_older_images_come_a_page_at_a_time(browser, server):
    made = saved_images(server.config.output_dir, 30)
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    assert _card_names(page) == sorted(made, reverse=True)[:24]
    older = page.locator("#older")
    sync_api.expect(older).to_be_visible()
    older.click()
    sync_api.expect(page.locator(".card")).to_have_count(30)
    assert _card_names(page) == sorted(made, reverse=True)
    sync_api.expect(older).to_be_hidden()
    assert not problems, problems
    page.context.close()


def test_a_seed_above_2_53_is_shown_and_reused_exactly(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "2")
    page.fill("#seed", BIG_SEED)
    body = _posted_job(page, lambda: page.click("#generate"))
    assert body["seed"] == int(BIG_SEED)  # a JSON integer, digit for digit, as the original UI sends
    first = page.locator(".card").first
    sync_api.expect(first.locator(".seed")).to_have_text(BIG_SEED, timeout=120_000)
    page.fill("#seed", "")
    first.locator(".seed").click()  # "use this seed"
    assert page.input_value("#seed") == BIG_SEED
    page.click("#generate")
    sync_api.expect(page.locator(".card")).to_have_count(2, timeout=120_000)
    again, before = _card_names(page)
    sync_api.expect(page.locator(".card .seed").first).to_have_text(BIG_SEED)
    assert again != before and _pixels(server, again) == _pixels(server, before)  # the same image
    assert not problems, problems
    page.context.close()


def test_a_waiting_job_shows_its_place_in_line(browser, tmp_path):
    engine = FakeEngine(hold=True)  # every generation waits after its first step until released
    with LiveServer(engine, ServerConfig(output_dir=tmp_path / "out")) as live:
        try:
            running = live.call("POST", "/jobs", {"prompt": "first", "steps": 2}).json()
            live.wait_until(lambda: live.worker.running is not None, what="the first job to run")
            ahead = live.call("POST", "/jobs", {"prompt": "second", "steps": 2}).json()
            assert ahead["position"] == 1
            page, _, problems = _page(browser, live, viewport={"width": 1280, "height": 820})
            page.fill("#prompt", TINY_PROMPT)
            page.fill("#steps", "2")
            page.click("#generate")
            sync_api.expect(page.locator("#progress-text")).to_have_text("Waiting: 2nd in line")
            assert live.call("DELETE", f"/jobs/{ahead['id']}").status == 200  # the one ahead leaves
            sync_api.expect(page.locator("#progress-text")).to_have_text("Waiting: next in line")
            engine.release.set()
            sync_api.expect(page.locator(".card")).to_have_count(1, timeout=60_000)  # its own image
            sync_api.expect(page.locator(".card .prompt")).to_have_text(TINY_PROMPT)
            assert live.call("GET", f"/jobs/{running['id']}").json()["state"] == "done"
            assert not problems, problems
            page.context.close()
        finally:
            engine.release.set()


def test_on_a_phone_the_new_image_is_scrolled_into_view(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 390, "height": 844}, is_mobile=True,
                              has_touch=True, device_scale_factor=2)
    # The gallery starts below the form, at the screen's foot: without the scroll the card would stay there.
    assert page.evaluate("() => document.getElementById('gallery').getBoundingClientRect().top") > 844 / 2
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "1")
    page.click("#generate")
    sync_api.expect(page.locator(".card")).to_have_count(1, timeout=120_000)
    page.wait_for_function("""() => {
        const box = document.querySelector('.card').getBoundingClientRect();
        return box.top >= -1 && box.top < window.innerHeight / 2;
    }""", timeout=10_000)
    assert not problems, problems
    _shot(page, "web-ui-phone-result.png")
    page.context.close()


def test_use_these_settings_restores_the_batch(browser, server):
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "1")
    page.select_option("#batch", "3")
    page.select_option("#orientation", "square")
    page.click("#generate")
    sync_api.expect(page.locator(".card")).to_have_count(3, timeout=120_000)
    page.select_option("#batch", "1")
    page.select_option("#orientation", "landscape")
    page.fill("#steps", "")
    page.locator(".card").nth(2).locator(".reuse").click()
    sync_api.expect(page.locator("#batch")).to_have_value("3")
    assert (page.input_value("#orientation"), page.input_value("#steps")) == ("square", "1")
    assert not problems, problems
    page.context.close()


def test_prompt_alternatives_show_each_images_own_prompt(browser, server):
    """One card per alternative, each with the prompt it was made from; reusing one keeps its
    literal braces as text (escaped), so it makes that one image again."""
    page, _, problems = _page(browser, server, viewport={"width": 1280, "height": 820})
    page.fill("#prompt", r"a {red|blue} circle on a white background \{1\}")
    page.fill("#steps", "1")
    page.click("#generate")
    sync_api.expect(page.locator(".card")).to_have_count(2, timeout=120_000)
    prompts = page.locator(".card .prompt")
    sync_api.expect(prompts).to_have_text(["a red circle on a white background {1}",  # in the answer's order
                                           "a blue circle on a white background {1}"])
    page.locator(".card").nth(1).locator(".reuse").click()
    sync_api.expect(page.locator("#prompt")).to_have_value(r"a blue circle on a white background \{1\}")
    page.click("#generate")
    sync_api.expect(page.locator(".card")).to_have_count(3, timeout=120_000)
    sync_api.expect(prompts.first).to_have_text("a blue circle on a white background {1}")
    assert not problems, problems
    page.context.close()
