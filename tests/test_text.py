"""Prompt codes: CLIP ViT-B/32 text tower from a local file, cached so a known prompt never loads CLIP."""

from __future__ import annotations

import pytest
import torch

from napari_upfusion.errors import PromptError, WeightsNotFoundError
from napari_upfusion.model import create_model, get_config
from napari_upfusion.model.text.clip import OPENAI_IDENTITY, ClipTextEncoder, prompt_cache_key
from napari_upfusion.model.text.codes import PromptCodeCache, clip_prompt_code, encode_prompt, prompt_code
from napari_upfusion.model.text.prompts import (
    AUTHORS_PROMPT,
    DEFAULT_PROMPTS,
    default_prompt,
    is_trained_prompt,
    pair_key,
)


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
    from napari_upfusion.model.text import clip

    clip._ENCODERS.clear()
    again = encode_prompt(clip_model, "  MRI and PET   of the brain ", clip_weights=path)
    assert torch.equal(first, again)
    with pytest.raises(AssertionError, match="CLIP was loaded"):
        encode_prompt(clip_model, "a prompt never seen", clip_weights=path)


def test_cache_is_keyed_by_encoder_identity(random_clip, tmp_path):
    path, _ = random_clip
    cache = PromptCodeCache(tmp_path / "codes")
    identity = ClipTextEncoder(path).identity
    assert identity.startswith("clip-vit-b-32-sha256-") and identity.endswith("-cpu-fp16")
    assert ClipTextEncoder(path, precision="fp32").identity != identity
    assert ClipTextEncoder(path, device="cuda").identity == identity.replace("-cpu-", "-cuda-")  # no GPU needed
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


def test_clip_models_default_to_the_one_prompt_their_weights_were_trained_with():
    """The authors trained and tested with AUTHORS_PROMPT alone; small was trained with each of its table prompts."""
    paper, small = get_config("paper"), get_config("small")
    for pair in [("MRI", "CT"), ("VIS", "IR"), ("MRI", "SPECT")]:
        assert default_prompt(*pair, text_encoder="clip-vit-b-32") == AUTHORS_PROMPT
        assert default_prompt(*pair, text_encoder="prompt-table") == DEFAULT_PROMPTS[pair_key(*pair)] != AUTHORS_PROMPT
    assert is_trained_prompt(paper, "  " + AUTHORS_PROMPT.replace(" ", "\n ", 3))  # whitespace aside
    assert not any(is_trained_prompt(paper, p) for k, p in DEFAULT_PROMPTS.items() if k != "authors")
    assert all(is_trained_prompt(small, p) for p in DEFAULT_PROMPTS.values())
    assert not is_trained_prompt(small, "my own words")


def test_cached_codes_are_keyed_by_device_and_dtype_and_the_authors_way_wins(clip_model):
    """A code computed on CUDA (as the authors did) is preferred to one computed on the CPU; codes cached before
    the device was part of the key count as CPU codes; the record says which was used."""
    cache = PromptCodeCache.default()
    cpu, cuda = torch.full((512,), 1.0), torch.full((512,), 2.0)
    cache.put(f"{OPENAI_IDENTITY}-fp16", "legacy", cpu)  # the key before this change
    legacy = prompt_code(clip_model, "legacy")
    assert torch.equal(legacy.code[0], cpu) and (legacy.device, legacy.dtype, legacy.cached) == ("cpu", "fp16", True)
    cache.put(prompt_cache_key(OPENAI_IDENTITY, "cpu", "fp16"), "p", cpu)
    assert prompt_code(clip_model, "p").describe() == {"encoder": OPENAI_IDENTITY, "device": "cpu", "dtype": "fp16"}
    cache.put(prompt_cache_key(OPENAI_IDENTITY, "cuda", "fp16"), "p", cuda)
    found = prompt_code(clip_model, "p")
    assert torch.equal(found.code[0], cuda) and found.device == "cuda"
    assert torch.equal(clip_prompt_code("p", device="cpu").code[0], cpu)  # a pinned device reads only its own
    with pytest.raises(WeightsNotFoundError):
        clip_prompt_code("p", precision="fp32")  # another dtype is another key


def test_a_new_code_is_computed_where_the_authors_computed_theirs_if_possible(random_clip, clip_model):
    path, _ = random_clip
    first = prompt_code(clip_model, AUTHORS_PROMPT, clip_weights=path)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert (first.device, first.dtype, first.cached) == (expected, "fp16", False)
    again = prompt_code(clip_model, AUTHORS_PROMPT, clip_weights=path)
    assert again.cached and again.device == expected and torch.equal(again.code, first.code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_codes_without_a_gpu_is_one_sentence(random_clip):
    path, _ = random_clip
    with pytest.raises(WeightsNotFoundError, match="asked for on cuda, which this machine does not have"):
        clip_prompt_code("x", clip_weights=path, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_and_cpu_codes_differ_only_in_the_last_bits(random_clip):
    """The authors' fp16 CUDA code and the CPU's fp16 code of the same prompt agree to fp16 rounding."""
    path, _ = random_clip
    on_cuda = ClipTextEncoder(path, device="cuda").encode([AUTHORS_PROMPT])
    on_cpu = ClipTextEncoder(path, device="cpu").encode([AUTHORS_PROMPT])
    assert on_cuda.device.type == "cpu" and on_cuda.dtype == torch.float32
    assert float((on_cuda - on_cpu).norm() / on_cpu.norm()) < 1e-2
