"""The web UI's LoRA control (issue 21.4) in headless Chromium: it lists the LoRAs GET /loras
offers with the server's defaults chosen, sends exactly the chosen list ([] for none), restores
an image's LoRAs with "Use these settings", and is absent on a server that offers none."""

from __future__ import annotations

import pytest

import lora_fixtures as lf
from flux2cli.lora.files import LoraCatalog
from flux2cli.server.config import ServerConfig
from server_fixtures import TINY_PROMPT, FakeEngine, LiveServer
import test_web_ui as web_ui
from test_web_ui import _page, _posted_job, _shot, sync_api

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
browser = web_ui.browser  # the same headless Chromium fixture

DESKTOP = {"viewport": {"width": 1280, "height": 820}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


@pytest.fixture(scope="module")
def engine():
    from flux2cli.pipeline.engine import Engine

    return Engine.load("tiny")  # its own: LoRA state (catalog, defaults, loaded adapters) is per engine


@pytest.fixture(scope="module")
def lora_dir(engine, tmp_path_factory):
    return lf.warm_and_cold(engine.pipe.transformer, tmp_path_factory.mktemp("loras"))


@pytest.fixture
def server(engine, lora_dir, tmp_path):
    """A server of its own with warm and cold offered and `--lora warm:0.5` as the default."""
    catalog = LoraCatalog(lora_dir)
    engine.loras.configure(catalog, defaults=catalog.add_refs(["warm:0.5"]))
    with LiveServer(engine, ServerConfig(output_dir=tmp_path / "out")) as live:
        yield live


def _rows(page):
    """(name, scale) of each chosen LoRA, in order."""
    return page.evaluate("""() => [...document.querySelectorAll('#lora-list .lora')]
        .map((row) => [row.dataset.name, row.querySelector('.scale').value])""")


def _generate(page):
    count = page.locator(".card").count()
    body = _posted_job(page, lambda: page.click("#generate"))
    sync_api.expect(page.locator(".card")).to_have_count(count + 1, timeout=120_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    return body


def test_the_form_offers_the_loras_and_sends_exactly_the_chosen_list(browser, server):
    page, _, problems = _page(browser, server, **DESKTOP)
    sync_api.expect(page.locator("#lora-row")).to_be_visible()
    options = page.locator("#lora-pick option")
    texts = options.all_inner_texts()
    assert any(text.startswith("warm · ") and text.endswith("rank 4") for text in texts), texts
    assert any(text.startswith("cold · ") and text.endswith("rank 2") for text in texts), texts
    assert _rows(page) == [["warm", "0.5"]]  # the server's default, preselected
    assert page.locator("#lora-pick option[value=warm]").is_disabled()  # chosen once at most
    sync_api.expect(page.get_by_label("Scale of warm")).to_have_value("0.5")

    # By keyboard: pick cold, Enter on Add puts the focus on its scale.
    page.select_option("#lora-pick", "cold")
    page.focus("#lora-add")
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Scale of cold"
    page.keyboard.press("Control+A")
    page.keyboard.type("-0.7")
    page.fill("#prompt", TINY_PROMPT)
    page.fill("#steps", "1")
    page.fill("#seed", "3")
    body = _generate(page)
    assert body["loras"] == [{"name": "warm", "scale": 0.5}, {"name": "cold", "scale": -0.7}]
    # The card shows what the image records (its stored settings), not what the form said.
    sync_api.expect(page.locator(".card").first.locator(".loras-used")).to_have_text("warm:0.5 · cold:-0.7")

    # Removing every LoRA (the default too) by keyboard: focus stays in the control.
    page.get_by_role("button", name="Remove warm").focus()
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Remove cold"
    page.keyboard.press("Space")
    assert _rows(page) == []
    assert page.evaluate("() => document.activeElement.id") == "lora-pick"
    sync_api.expect(page.locator("#lora-none")).to_be_visible()

    # "Use these settings" brings the image's LoRA set back.
    page.locator(".card").first.locator(".reuse").click()
    sync_api.expect(page.locator("#lora-list .lora")).to_have_count(2)
    assert _rows(page) == [["warm", "0.5"], ["cold", "-0.7"]]
    assert page.locator("#lora-note").is_hidden()
    for name in ("warm", "cold"):  # chosen once at most (the shipped tiny-colours is still offered)
        assert page.locator(f"#lora-pick option[value={name}]").is_disabled()

    # An emptied list asks for none: [] is sent, not the defaults. (The POST is answered here,
    # in the browser: what the server makes of [] is tested in test_server_loras.py.)
    for name in ("warm", "cold"):
        page.get_by_role("button", name=f"Remove {name}").click()
    assert not problems, problems  # (the refused POST below logs one)
    _shot(page, "web-ui-loras.png")
    posted = []
    page.route("**/jobs", lambda route: (posted.append(route.request.post_data_json), route.abort()))
    page.click("#generate")
    sync_api.expect(page.locator("#generate")).to_be_enabled()
    assert [body["loras"] for body in posted] == [[]]
    page.context.close()


def _saved_with(out, loras):
    """An image in ``out`` that records ``loras``, saved as the engine saves one (no generation)."""
    from types import SimpleNamespace

    from PIL import Image

    from flux2cli.pipeline.output import save_images
    from flux2cli.pipeline.request import GenerationRequest

    request = GenerationRequest.create(TINY_PROMPT, model="tiny", steps=1, seed=4, loras=loras)
    image = Image.new("RGB", (request.width, request.height), (40, 40, 200))
    save_images([SimpleNamespace(image=image, seed=4, timings={"encoding": 0.0, "diffusion": 0.0})], request,
                output_dir=out, model_name="flux2-tiny")


def test_a_lora_no_longer_offered_is_left_out_with_a_note(browser, engine, lora_dir, tmp_path):
    out = tmp_path / "out"
    _saved_with(out, [{"name": "warm", "scale": 1.5}, {"name": "cold"}])
    # A server that offers only warm now (cold's file is gone).
    only_warm = tmp_path / "only-warm"
    only_warm.mkdir()
    (only_warm / "warm.safetensors").write_bytes((lora_dir / "warm.safetensors").read_bytes())
    engine.loras.configure(LoraCatalog(only_warm), defaults=[])
    with LiveServer(engine, ServerConfig(output_dir=out)) as live:
        page, _, problems = _page(browser, live, **PHONE)
        sync_api.expect(page.locator("#lora-row")).to_be_visible()
        assert _rows(page) == []  # no defaults on this server
        card = page.locator(".card").first
        sync_api.expect(card.locator(".loras-used")).to_have_text("warm:1.5 · cold:1")
        card.locator(".reuse").click()
        sync_api.expect(page.locator("#lora-note")).to_have_text("Left out, not offered by this server: cold.")
        assert _rows(page) == [["warm", "1.5"]]
        # The rows fit a phone's width, their buttons big enough for a finger.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        assert page.get_by_role("button", name="Remove warm").bounding_box()["height"] >= 44
        assert not problems, problems
        _shot(page, "web-ui-loras-phone.png")
        page.context.close()


def test_a_server_without_loras_shows_no_control(browser, tmp_path):
    engine = FakeEngine()  # no LoRA support at all: GET /loras offers none
    with LiveServer(engine, ServerConfig(output_dir=tmp_path / "out")) as live:
        context = browser.new_context(**DESKTOP)
        page = context.new_page()
        with page.expect_response(lambda response: response.url.endswith("/loras")) as answered:
            page.goto(live.url + "/")
        assert answered.value.json() == {"loras": [], "defaults": []}
        page.fill("#prompt", TINY_PROMPT)
        page.fill("#steps", "1")
        body = _generate(page)
        assert "loras" not in body  # naming none: the server's (empty) defaults
        assert page.locator("#lora-row").is_hidden()
        assert page.locator(".card .lora-fact").is_hidden()
        context.close()
