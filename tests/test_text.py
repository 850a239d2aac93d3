"""Prompt codes: CLIP ViT-B/32 text tower from a local file, cached so a known prompt never loads CLIP."""

from __future__ import annotations

import pytest
import torch

from napari_upfusion.errors import PromptError, WeightsNotFoundError
from napari_upfusion.model import create_model, get_config
from napari_upfusion.model.text import (
    AUTHORS_PROMPT,
    DEFAULT_PROMPTS,
    ClipTextEncoder,
    PromptCodeCache,
    default_prompt,
    encode_prompt,
    pair_key,
)


@pytest.fixture(scope="module")
def random_clip(tmp_path_factory):
    """A randomly initialised open_clip ViT-B-32 saved as a state dict in OpenAI's layout."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).eval()
    with torch.no_grad():  # OpenAI's file holds fp16 weights; make the random ones fp16-representable too
        for p in model.parameters():
            p.copy_(p.half().float())
    path = tmp_path_factory.mktemp("clip") / "ViT-B-32.pt"
    torch.save(model.state_dict(), path)
    return path, model


@pytest.fixture()
def clip_model(tiny_config):
    return create_model(tiny_config).eval()


def test_codes_equal_open_clip_quickgelu(random_clip):
    import open_clip

    path, reference = random_clip
    tokens = open_clip.get_tokenizer("ViT-B-32-quickgelu")([AUTHORS_PROMPT])
    with torch.no_grad():
        expected = reference.encode_text(tokens)
    ours32 = ClipTextEncoder(path, precision="fp32").encode([AUTHORS_PROMPT])
    ours16 = ClipTextEncoder(path, precision="fp16").encode([AUTHORS_PROMPT])
    assert ours32.shape == ours16.shape == (1, 512) and ours16.dtype == torch.float32
    torch.testing.assert_close(ours32, expected, rtol=1e-4, atol=1e-4)
    # the authors' fp16 codes differ from fp32 only by half-precision rounding
    assert 0 < float((ours16 - ours32).norm() / ours32.norm()) < 1e-2
    # QuickGELU matters: the plain-GELU config gives another code
    gelu = open_clip.create_model("ViT-B-32", pretrained=None)
    gelu.load_state_dict(reference.state_dict())
    with torch.no_grad():
        assert float((gelu.eval().encode_text(tokens) - expected).norm() / expected.norm()) > 1e-3


def test_cached_code_skips_loading_clip(random_clip, clip_model, monkeypatch):
    path, _ = random_clip
    first = encode_prompt(clip_model, "MRI and PET of the brain", clip_weights=path)
    assert first.shape == (1, 512)

    def refuse(self):
        raise AssertionError("CLIP was loaded although the code is cached")

    monkeypatch.setattr(ClipTextEncoder, "_load", refuse)
    from napari_upfusion.model import text

    text._ENCODERS.clear()
    again = encode_prompt(clip_model, "  MRI and PET   of the brain ", clip_weights=path)
    assert torch.equal(first, again)
    with pytest.raises(AssertionError, match="CLIP was loaded"):
        encode_prompt(clip_model, "a prompt never seen", clip_weights=path)


def test_cache_is_keyed_by_encoder_identity(random_clip, tmp_path):
    path, _ = random_clip
    cache = PromptCodeCache(tmp_path / "codes")
    identity = ClipTextEncoder(path).identity
    assert identity.startswith("clip-vit-b-32-sha256-") and identity.endswith("-fp16")
    assert ClipTextEncoder(path, precision="fp32").identity != identity
    cache.put(identity, "p", torch.ones(512))
    assert torch.equal(cache.get(identity, "p"), torch.ones(512))
    assert cache.get("another-encoder", "p") is None
    assert cache.get(identity, "q") is None


def test_no_weights_and_no_cache_says_what_to_do(clip_model):
    with pytest.raises(WeightsNotFoundError, match="upfusion download clip"):
        encode_prompt(clip_model, "anything")


def test_weights_from_environment_and_bad_file(random_clip, clip_model, monkeypatch, tmp_path):
    path, _ = random_clip
    monkeypatch.setenv("UPFUSION_CLIP_WEIGHTS", str(path))
    assert encode_prompt(clip_model, "from the environment").shape == (1, 512)
    junk = tmp_path / "junk.pt"
    torch.save({"not": torch.zeros(1)}, junk)
    with pytest.raises(WeightsNotFoundError, match="could not be read as CLIP ViT-B/32 weights"):
        encode_prompt(clip_model, "x", clip_weights=junk)


def test_too_long_and_empty_prompts(random_clip, clip_model):
    path, _ = random_clip
    with pytest.raises(PromptError, match="at most 77"):
        encode_prompt(clip_model, "word " * 100, clip_weights=path)
    with pytest.raises(PromptError, match="empty"):
        encode_prompt(clip_model, "   ", clip_weights=path)


def test_default_prompts_per_pair():
    assert pair_key("MRI", "CT") == pair_key("ct", "mri") == "MRI-CT"
    assert pair_key("VIS", "IR") == "IR-VIS"
    assert pair_key("MRI", "MRI") == "generic"
    assert default_prompt("MRI", "SPECT") == DEFAULT_PROMPTS["MRI-SPECT"]
    assert DEFAULT_PROMPTS["authors"].startswith("The image contains multiple views of the same scene")
    assert len(set(DEFAULT_PROMPTS.values())) == len(DEFAULT_PROMPTS)


def test_small_model_prompt_table():
    """The bundled config knows every built-in prompt, gives each its own code, and refuses free text."""
    config = get_config("small")
    model = create_model(config)
    model.prompt_codes.copy_(torch.randn_like(model.prompt_codes))
    codes = [encode_prompt(model, p) for p in DEFAULT_PROMPTS.values()]
    assert len({tuple(c[0].tolist()) for c in codes}) == len(DEFAULT_PROMPTS)
    with pytest.raises(PromptError, match="fixed set of prompts"):
        encode_prompt(model, "my own words")
