"""--decoder small: BFL's FLUX.2-small-decoder (a stand-in in its hub layout) replaces the VAE."""

from __future__ import annotations

import pytest

from flux2cli.errors import InvalidRequest
from flux2cli.pipeline.engine import Engine
from flux2cli.pipeline.loading import LoadOptions
from flux2cli.pipeline.request import GenerationRequest
from standins import SMALL_DECODER_CHANNELS, mean_abs_diff

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _draw(engine):
    request = GenerationRequest.create("a red circle on a blue background", model=engine.spec, steps=2, seed=4,
                                       width=64, height=64)
    return engine.generate(request)[0].image


def test_the_small_decoder_replaces_the_decoder_and_keeps_the_encoder(si, monkeypatch):
    si.use_cache(monkeypatch)
    full = Engine.load("klein-4b", LoadOptions(hub_cache=si.cache))
    small = Engine.load("klein-4b", LoadOptions(hub_cache=si.cache, decoder="small"))
    assert tuple(small.pipe.vae.config.decoder_block_out_channels) == SMALL_DECODER_CHANNELS
    assert full.pipe.vae.config.decoder_block_out_channels is None
    own, other = full.pipe.vae.state_dict(), small.pipe.vae.state_dict()
    assert all((own[k] == other[k]).all() for k in own if k.startswith("encoder."))  # img2img encodes alike
    a, b = _draw(full), _draw(small)
    assert a.size == b.size and mean_abs_diff(a, b) > 1  # same latents, another decoder


def test_a_model_with_another_vae_refuses_it_in_one_line(si, monkeypatch):
    si.use_cache(monkeypatch)
    with pytest.raises(InvalidRequest, match="--decoder small decodes FLUX.2's latents; flux2-tiny's VAE is another"):
        Engine.load("tiny", LoadOptions(hub_cache=si.cache, decoder="small"))


def test_an_unknown_decoder_is_refused():
    with pytest.raises(InvalidRequest, match="--decoder takes one of full, small"):
        LoadOptions(decoder="tiny").validate()
