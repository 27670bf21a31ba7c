"""Registry entries resolved through a Hugging Face cache, and hub failures as one line.

The stand-ins sit in a hub cache exactly as huggingface_hub lays out a download
(``models--org--name/{blobs,snapshots/<commit>,refs/main}``), with ``HF_HUB_OFFLINE=1``: the
registry names resolve through the real hub code path, as for a user. The loader gets the
cache folder in ``LoadOptions.hub_cache`` (the front ends pass ``$HF_HUB_CACHE``).
"""

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from flux2cli.commands.info import cache_status, model_row
from flux2cli.api import load_options
from flux2cli.errors import ModelLoadError
from flux2cli.pipeline.loading import LoadOptions, hub_error_message
from flux2cli.pipeline.registry import get_model
from flux2cli.pipeline.request import GenerationRequest

import standins
from standins import run_flux2

PROMPT = "a red circle on a blue background"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _hub_errors():
    # Imported when a test runs, not at collection: the first import fixes the hub's offline mode.
    import huggingface_hub.errors as errors

    return errors


def _hub_error(cls_name: str, message: str = "boom", status: int = 403):
    response = SimpleNamespace(headers={}, request=None, status_code=status)
    return getattr(_hub_errors(), cls_name)(message, response=response)


# --------------------------------------------------------------------------- resolution


def test_hub_snapshots_are_found_offline_and_only_what_is_needed_is_asked(si, monkeypatch):
    import huggingface_hub

    from flux2cli.pipeline.loading import _model_folder

    si.use_cache(monkeypatch)
    asked = []
    real = huggingface_hub.snapshot_download
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, **kw: asked.append((repo, kw)) or real(repo, **kw))
    folder = _model_folder(get_model("dev-gguf-q8"), include_transformer=False, include_encoder=False,
                           hub_cache=si.cache)
    assert folder.parent.parent.name == "models--black-forest-labs--FLUX.2-dev"
    assert folder.name == standins.commit_hash(standins.DEV_REPO)
    repo, kwargs = asked[0]
    patterns = kwargs["allow_patterns"]
    assert repo == "black-forest-labs/FLUX.2-dev" and kwargs["cache_dir"] == si.cache
    assert "transformer/config.json" in patterns and "transformer/*" not in patterns
    assert not any(p.startswith(("text_encoder", "tokenizer")) for p in patterns)


def test_klein_4b_loads_from_the_cache_with_its_own_encoder(si, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    engine = Engine.load("klein-4b", load_options())  # the front end passes $HF_HUB_CACHE
    assert type(engine.pipe).__name__ == "Flux2KleinPipeline"
    assert engine.describe()["description"] == "FLUX.2-klein-4B with local encoder"
    request = GenerationRequest.create(PROMPT, model="klein-4b", seed=3, width=64, height=64, guidance=3.0)
    assert request.steps == 4 and request.guidance is None  # distilled: 4 steps, guidance ignored
    assert engine.generate(request)[0].image.size == (64, 64)


def test_info_reports_what_is_cached(si, monkeypatch):
    si.use_cache(monkeypatch)
    status = {name: cache_status(get_model(name)) for name in
              ("dev-bnb4", "dev", "dev-gguf-q8", "dev-gguf-q4", "dev-gguf-bf16", "klein-4b", "klein-9b", "tiny")}
    assert status == {"dev-bnb4": "yes", "dev": "yes", "dev-gguf-q8": "yes", "dev-gguf-q4": "yes",
                      "dev-gguf-bf16": "no", "klein-4b": "yes", "klein-9b": "no", "tiny": "yes"}
    row = model_row(get_model("dev-bnb4"), {"type": "cuda", "memory_gb": 48.0}, 64 * 1024**3)
    assert row["cached"] and row["fits"] == "yes" and row["encoder_memory_gb"] == 14.0 and row["download_gb"]
    assert model_row(get_model("dev-gguf-q8"), {}, 0)["gguf"] == "city96/FLUX.2-dev-gguf/flux2-dev-Q8_0.gguf"


# --------------------------------------------------------------------------- failures


def test_nothing_cached_offline_names_the_repo_and_the_variable(monkeypatch, tmp_path):
    from flux2cli.pipeline.engine import Engine

    with pytest.raises(ModelLoadError) as info:
        Engine.load("klein-9b", LoadOptions(hub_cache=tmp_path / "empty"))
    assert str(info.value) == ("black-forest-labs/FLUX.2-klein-9B is not in the local Hugging Face cache and "
                               "HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to download it"
                               " (or try things with --model tiny: embedded, it runs on a CPU)")


def test_a_gguf_file_missing_from_the_cache_is_named(si, monkeypatch):
    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)
    with pytest.raises(ModelLoadError, match="^flux2-dev-BF16.gguf from city96/FLUX.2-dev-gguf is not in the local"):
        Engine.load("dev-gguf-bf16", LoadOptions(hub_cache=si.cache))


def test_a_cache_without_the_text_encoder_says_so(si, monkeypatch, tmp_path):
    from flux2cli.pipeline.engine import Engine

    files = {p.relative_to(si.dev).as_posix(): p for p in si.dev.rglob("*")
             if p.is_file() and p.relative_to(si.dev).parts[0] not in ("text_encoder", "tokenizer")}
    standins.install_in_hf_cache(tmp_path / "hub", standins.DEV_REPO, files)
    with pytest.raises(ModelLoadError) as info:
        Engine.load("dev", LoadOptions(local_encoder=True, hub_cache=tmp_path / "hub"))
    assert str(info.value) == ("the cached copy of black-forest-labs/FLUX.2-dev lacks text_encoder, tokenizer "
                               "(earlier runs used a remote encoder); unset HF_HUB_OFFLINE to download it")


def test_dev_pixtral_tokenizer_loads_without_torchvision(si, monkeypatch, tmp_path):
    """The real repo declares its tokenizer as a PixtralProcessor (torchvision-only in
    transformers 5); the loader reads its tokenizer and chat template without torchvision."""
    import importlib.util

    from flux2cli.pipeline.engine import Engine

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the PixtralProcessor loads as it is")
    index = json.loads((si.dev / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "PixtralProcessor"]
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    files = {p.relative_to(si.dev).as_posix(): p for p in si.dev.rglob("*") if p.is_file()}
    files["model_index.json"] = tmp_path / "model_index.json"
    standins.install_in_hf_cache(tmp_path / "hub", standins.DEV_REPO, files)
    engine = Engine.load("dev", LoadOptions(local_encoder=True, hub_cache=tmp_path / "hub"))
    embeds, _ = engine.encoder.encode(engine.embedding_key(PROMPT))
    assert embeds.shape == (1, 512, standins.JOINT_ATTENTION_DIM)
    reference = Engine.load("dev", LoadOptions(local_encoder=True, hub_cache=si.cache))
    assert torch.equal(embeds, reference.encoder.encode(reference.embedding_key(PROMPT))[0])


@pytest.mark.parametrize("error,token,expected", [
    (("GatedRepoError", "Access to model is restricted", 401), None,
     "black-forest-labs/FLUX.2-klein-9B is gated: accept its licence at "
     "https://huggingface.co/black-forest-labs/FLUX.2-klein-9B, then log in with `hf auth login` (or set HF_TOKEN)"),
    (("GatedRepoError", "not in the authorized list", 403), "hf_x",
     "black-forest-labs/FLUX.2-klein-9B is gated and your token has no access yet: accept its licence at "
     "https://huggingface.co/black-forest-labs/FLUX.2-klein-9B"),
    (("RepositoryNotFoundError", "404", 404), "hf_x",
     "black-forest-labs/FLUX.2-klein-9B was not found on the Hugging Face hub, or your token cannot see it "
     "(`hf auth login`)"),
    (("HfHubHTTPError", "401 Client Error: Invalid credentials", 401), "hf_bad",
     "your Hugging Face token was refused for black-forest-labs/FLUX.2-klein-9B; run `hf auth login` or set HF_TOKEN"),
])
def test_hub_errors_through_the_loader(monkeypatch, error, token, expected):
    import huggingface_hub

    from flux2cli.pipeline.engine import Engine

    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")  # no stored token either
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)

    def refuse(repo, **kwargs):
        raise _hub_error(*error)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(ModelLoadError) as info:
        Engine.load("klein-9b")
    assert str(info.value) == expected


def _unreachable_error():
    wrapped = RuntimeError("download failed")  # an HTTP client's error around the socket's
    wrapped.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return wrapped


@pytest.mark.parametrize("make,offline,expected", [
    (lambda: _hub_error("RevisionNotFoundError", "Invalid rev id: main", 404), True,
     "black-forest-labs/FLUX.2-klein-9B has no such revision on the Hugging Face hub"),
    (lambda: _hub_errors().LocalEntryNotFoundError("Cannot find the requested files in the disk cache"), True,
     "black-forest-labs/FLUX.2-klein-9B is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
     "unset HF_HUB_OFFLINE to download it"
     " (or try things with --model tiny: embedded, it runs on a CPU)"),
    (lambda: _hub_errors().LocalEntryNotFoundError("Cannot find the requested files in the disk cache"), False,
     "black-forest-labs/FLUX.2-klein-9B is not in the local Hugging Face cache and the hub cannot be reached; "
     "check the network, or download it once while online"
     " (or try things with --model tiny: embedded, it runs on a CPU)"),
    (lambda: _hub_errors().OfflineModeIsEnabled("offline"), True,
     "black-forest-labs/FLUX.2-klein-9B is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
     "unset HF_HUB_OFFLINE to download it"
     " (or try things with --model tiny: embedded, it runs on a CPU)"),
    (_unreachable_error, False,
     "the Hugging Face hub cannot be reached to download black-forest-labs/FLUX.2-klein-9B; check the network"
     " (or try things with --model tiny: embedded, it runs on a CPU)"),
])
def test_hub_errors_are_told_apart_by_their_type(monkeypatch, make, offline, expected):
    import huggingface_hub

    from flux2cli.pipeline.engine import Engine

    if not offline:
        monkeypatch.delenv("HF_HUB_OFFLINE")

    def refuse(repo, **kwargs):
        raise make()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(ModelLoadError) as info:
        Engine.load("klein-9b")
    assert str(info.value) == expected


def test_hub_errors_are_matched_by_class_not_by_name(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    response = SimpleNamespace(headers={}, request=None, status_code=403)

    class LicenceNotAccepted(_hub_errors().GatedRepoError):  # a subclass, by another name
        pass

    class GatedRepoError(Exception):  # the name, but not huggingface_hub's type
        pass

    assert hub_error_message("org/repo", LicenceNotAccepted("no", response=response)).startswith(
        "org/repo is gated and your token has no access yet")
    assert hub_error_message("org/repo", GatedRepoError("Access to model org/repo is restricted and gated")) == (
        "could not load org/repo: GatedRepoError; run with FLUX2_DEBUG=1 for details")


def test_a_gguf_file_missing_from_its_repo_is_named(si, monkeypatch):
    import huggingface_hub

    from flux2cli.pipeline.engine import Engine

    si.use_cache(monkeypatch)

    def missing(repo, filename, **kwargs):
        raise _hub_error("RemoteEntryNotFoundError", "404 Client Error: Entry Not Found", 404)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing)
    with pytest.raises(ModelLoadError) as info:
        Engine.load("dev-gguf-q8", LoadOptions(hub_cache=si.cache))
    assert str(info.value) == ("flux2-dev-Q8_0.gguf is not in city96/FLUX.2-dev-gguf (renamed or removed?); "
                               "pass a downloaded file with --gguf PATH.gguf, or another quant")


def test_disk_full_and_unknown_gguf_file_messages():
    disk = OSError(errno.ENOSPC, "No space left on device")
    wrapped = RuntimeError("download failed")
    wrapped.__cause__ = disk
    assert hub_error_message("city96/FLUX.2-dev-gguf", wrapped, size_gb=34.5) == (
        "not enough disk space to download city96/FLUX.2-dev-gguf (~34.5 GB); free space, or point "
        "HF_HUB_CACHE (or HF_HOME) at a larger disk")
    missing = _hub_error("RemoteEntryNotFoundError", "404 Client Error: Entry Not Found", 404)
    assert hub_error_message("city96/FLUX.2-dev-gguf", missing, filename="flux2-dev-Q4_K_S.gguf") == (
        "flux2-dev-Q4_K_S.gguf is not in city96/FLUX.2-dev-gguf (renamed or removed?); pass a downloaded "
        "file with --gguf PATH.gguf, or another quant")
    assert "FLUX2_DEBUG=1" in hub_error_message("org/repo", ValueError("odd"))


def test_flux2_generate_hub_failure_is_one_line(tmp_path):
    result = run_flux2("generate", PROMPT, "--model", "klein-4b", "--output-dir", str(tmp_path),
                       env={"HF_HUB_CACHE": str(tmp_path / "empty-cache")})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: black-forest-labs/FLUX.2-klein-4B is not in the local Hugging Face cache and HF_HUB_OFFLINE "
        "is set; unset HF_HUB_OFFLINE to download it"
        " (or try things with --model tiny: embedded, it runs on a CPU)")
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.png"))


# --------------------------------------------------------------------------- through the CLI


def test_flux2_generate_full_model_and_klein_from_the_cache(si, tmp_path, monkeypatch):
    si.use_cache(monkeypatch)
    for args, name in ((["--full-model", "--steps", "10"], "FLUX.2-dev (full)"),
                       (["--model", "klein-4b"], "FLUX.2-klein-4B")):
        out = tmp_path / name.replace(" ", "_")
        result = run_flux2("generate", PROMPT, *args, "--seed", "5", "--width", "64", "--height", "48",
                           "--output-dir", str(out), "--json")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        path = Path(json.loads(result.stdout)["images"][0]["path"])
        with Image.open(path) as png:
            assert png.size == (64, 48) and name in json.dumps(dict(png.text))
