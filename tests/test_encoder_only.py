"""`flux2 serve --encoder-only`: a model's text encoder alone, used by `--remote-encoder` elsewhere."""

from __future__ import annotations

import json
import signal

import pytest
from PIL import Image

from console_script import run
from serve_process import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PROMPT = "a red circle on a blue background"
KEY = "encoder-key"


def test_served_embeddings_give_the_local_encoders_pixels_and_the_server_keeps_its_defaults(tiny_engine, tmp_path):
    from flux2cli.pipeline.request import GenerationRequest

    server = ServeProcess(["--encoder-only", "--model", "tiny", "--port", "0", "--api-key", KEY])
    try:
        server.wait_ready()
        assert "the text encoder of flux2-tiny on http://127.0.0.1:" in "".join(server.stdout)
        result = run("generate", PROMPT, "--model", "tiny", "--local", "--seed", "11", "--steps", "4",
                     "--remote-encoder", server.url, "--output-dir", str(tmp_path), "--json",
                     env={"FLUX2_ENCODER_TOKEN": KEY})
        assert result.returncode == 0, result.stderr
        assert "local text encoder" not in result.stderr  # the served encoder answered; no fallback
        local = tiny_engine.generate(GenerationRequest.create(PROMPT, model="tiny", seed=11, steps=4))[0].image
        with Image.open(json.loads(result.stdout)["images"][0]["path"]) as served:
            assert served.size == local.size and served.convert("RGB").tobytes() == local.convert("RGB").tobytes()

        assert server.call("POST", "/predict", {"prompt": PROMPT})[0] == 401
        status, body = server.call("POST", "/predict", {"prompt": PROMPT}, headers={"X-API-Key": KEY})
        assert status == 200 and body[8:].startswith(b'{"prompt_embeds"')  # safetensors: length, then header
        status, body = server.call("GET", "/health", headers={"X-API-Key": KEY, "Host": "evil.example"})
        assert status == 403  # loopback Host names only, as the main server
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
    assert "Traceback" not in "".join(server.stderr)


@pytest.mark.parametrize("extra", [["--lora", "tiny-colours"], ["--remote-encoder", "http://127.0.0.1:9"],
                                   ["--cache", "taylorseer"], ["--compile"], ["--replicas", "2"]])
def test_options_that_only_generation_uses_are_refused_in_one_line(extra):
    result = run("serve", "--encoder-only", "--model", "tiny", "--port", "0", *extra)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--encoder-only" in lines[0] and extra[0] in lines[0], result.stderr


def test_only_the_text_encoder_is_loaded(si, monkeypatch):
    """On a hub layout ([dev] stand-in in its real folders) as on the embedded model."""
    from flux2cli.encoder.cache import EmbeddingKey
    from flux2cli.pipeline.loading import LoadOptions, load_text_encoder
    from flux2cli.pipeline.registry import resolve_model

    si.use_cache(monkeypatch)
    for name in ("dev", "klein-4b", "tiny"):
        spec = resolve_model(name)
        encoder = load_text_encoder(spec, LoadOptions(hub_cache=si.cache))
        pipe = encoder._pipe
        assert pipe.transformer is None and pipe.vae is None and pipe.text_encoder is not None, name
        embeds = encoder.encode(EmbeddingKey(spec.name, PROMPT, spec.max_sequence_length,
                                             spec.text_encoder_out_layers))
        assert embeds.shape[:2] == (1, spec.max_sequence_length), name
