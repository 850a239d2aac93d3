"""The authors' weights run as the authors ran them: their trained prompt, fp32 (TF32 off), and a clear
record of both; reduced precisions only when asked for, with a warning."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from conftest import DATA, rel_l2

import napari_upfusion as nu
from napari_upfusion.engine.api import FusionEngine
from napari_upfusion.engine.intensity import normalize
from napari_upfusion.engine.runner import SliceRunner, resolve_precision, tf32, validated_precision
from napari_upfusion.errors import PrecisionWarning, UPFusionError
from napari_upfusion.model import RuntimeHints, bundled_weights, config_runtime, create_model, load_model
from napari_upfusion.model.checkpoint.io import read_checkpoint_file
from napari_upfusion.model.text.prompts import AUTHORS_PROMPT, DEFAULT_PROMPTS

CHECKPOINT = DATA / "upfusion_paper_patterned.pth.gz"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _images(golden):
    vis = nu.ImageData.from_array(golden["gray_vi"][0, 0].copy(), metadata={"modality": "VIS"})
    ir = nu.ImageData.from_array(golden["gray_ir"][0, 0].copy(), metadata={"modality": "IR"})
    return vis, ir


def test_the_authors_checkpoint_runs_with_their_prompt_in_fp32_by_default(authors_prompt_code, golden):
    """The issue's bar: no prompt and no precision given -> AUTHORS_PROMPT and fp32, both recorded; the
    numbers are the network's own answer for that prompt's code."""
    vis, ir = _images(golden)
    fused = nu.fuse(vis, ir, modalities=("VIS", "IR"), model=str(CHECKPOINT))
    info = fused.metadata["upfusion"]
    assert info["prompt"] == AUTHORS_PROMPT and info["prompt_trained"] is True
    assert info["precision"] == "fp32" and info["config"] == "paper"
    assert info["prompt_code"] == {"encoder": "openai-clip-vit-b-32", "device": "cpu", "dtype": "fp16"}
    device = torch.device(info["device"])
    network = load_model(CHECKPOINT, device)
    runner = SliceRunner(network, device, "fp32", batch_size=1)
    a, b = normalize(vis.array, "VIS")[None], normalize(ir.array, "IR")[None]
    expected = runner.run(a, b, authors_prompt_code)[0]
    assert rel_l2(fused.array, expected) < 1e-5


def test_another_prompt_is_recorded_as_untrained(authors_prompt_code, golden, paper_model):
    from napari_upfusion.model.text.clip import OPENAI_IDENTITY, prompt_cache_key
    from napari_upfusion.model.text.codes import PromptCodeCache

    experiment = DEFAULT_PROMPTS["IR-VIS"]
    PromptCodeCache.default().put(prompt_cache_key(OPENAI_IDENTITY, "cuda", "fp16"), experiment, torch.ones(512))
    engine = FusionEngine(paper_model, device="cpu")
    vis, ir = _images(golden)
    info = engine.fuse(vis, ir, modalities=("VIS", "IR"), prompt=experiment).info
    assert info["prompt"] == experiment and info["prompt_trained"] is False
    assert info["prompt_code"]["device"] == "cuda"  # a code the authors' way, cached on a GPU machine, comes first
    trained = engine.fuse(vis, ir, modalities=("VIS", "IR")).info
    assert trained["prompt"] == AUTHORS_PROMPT and trained["prompt_trained"] is True


def test_small_keeps_its_pair_prompts():
    engine = FusionEngine("small", device="cpu")
    a = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    info = engine.fuse(a, a[::-1].copy(), modalities=("MRI", "SPECT")).info
    assert info["prompt"] == DEFAULT_PROMPTS["MRI-SPECT"] and info["prompt_trained"] is True
    for blank in ("", "   ", "\n\t"):  # an empty prompt box means the default, whatever whitespace it holds
        assert engine.fuse(a, a[::-1].copy(), modalities=("MRI", "SPECT"), prompt=blank).info["prompt"] == info["prompt"]
    assert info["prompt_code"] == {"encoder": "prompt-table", "device": None, "dtype": None}
    classical = FusionEngine("average", device="cpu").fuse(a, a[::-1].copy()).info
    assert classical["prompt"] is None and classical["prompt_trained"] is None and classical["prompt_code"] is None


def test_auto_is_fp32_for_the_paper_network_on_every_device():
    """Resolved without a GPU: what "auto" means on CUDA is read from the runtime hints alone."""
    paper, small = config_runtime("paper"), config_runtime("small")
    for device in (CPU, CUDA):
        assert resolve_precision("auto", device, validated_precision(paper, device)) == "fp32"
    assert validated_precision(small, CPU) == "bf16" and validated_precision(small, CUDA) == "fp32"
    assert validated_precision(None, CUDA) == "fp32"  # fusers without runtime hints
    # the bundled small weights carry a config written before gpu_precision existed: it reads as fp32
    _, metadata = read_checkpoint_file(bundled_weights("small"))
    assert "gpu_precision" not in json.loads(metadata["config"]) and load_model("small").runtime.gpu_precision == "fp32"
    with pytest.raises(ValueError, match="gpu_precision must be"):
        RuntimeHints(gpu_precision="int8")


def test_reduced_precision_only_when_asked_and_then_with_a_warning(tiny_config):
    model = create_model(tiny_config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert FusionEngine(model, device="cpu").precision == "fp32"
        assert FusionEngine(model, device="cpu", precision="fp32").precision == "fp32"
        assert FusionEngine("small", device="cpu", precision="bf16").precision == "bf16"  # validated: silent
    with pytest.warns(PrecisionWarning) as record:
        assert FusionEngine(model, device="cpu", precision="bf16").precision == "bf16"
    message = str(record[0].message)
    assert "checked only at fp32" in message and "ranks channels" in message and message.count(". ") == 0
    for precision in ("tf32", "fp16"):
        with pytest.raises(UPFusionError, match=f"{precision} needs a CUDA GPU"):
            FusionEngine(model, device="cpu", precision=precision)


def test_tf32_setting_is_applied_and_restored_through_either_torch_interface():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    for enabled in (False, True):
        with tf32(enabled):
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (enabled, enabled)
        assert (matmul.allow_tf32, cudnn.allow_tf32) == before
    # torch refuses to mix its legacy and newer TF32 interfaces, so the newer one is tried in a fresh process
    script = (
        "import torch; from napari_upfusion.engine.runner import tf32\n"
        "m, c = torch.backends.cuda.matmul, torch.backends.cudnn.conv\n"
        "m.fp32_precision = c.fp32_precision = 'tf32'\n"
        "with tf32(False): inside = (m.fp32_precision, c.fp32_precision)\n"
        "print(inside, (m.fp32_precision, c.fp32_precision))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "('ieee', 'ieee') ('tf32', 'tf32')"


class _Flags(torch.nn.Module):
    """A real (trivial) fuser that records torch's TF32 settings while it runs."""

    uses_text = False

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, a, b, code):
        self.seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return torch.maximum(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp32_on_cuda_runs_without_tf32_and_tf32_with_it():
    a = np.random.default_rng(0).random((2, 16, 16), dtype=np.float32)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    for precision, expected in (("fp32", (False, False)), ("tf32", (True, True))):
        fuser = _Flags()
        SliceRunner(fuser, CUDA, precision, batch_size=1).run(a, a, None)
        assert set(fuser.seen) == {expected}
    assert torch.backends.cudnn.allow_tf32 is True  # put back


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_paper_network_on_cuda_in_fp32_matches_the_reference(golden):
    """Full float32 on the GPU reproduces the authors' reference outputs like the CPU does."""
    model = load_model(CHECKPOINT, CUDA)
    runner = SliceRunner(model, CUDA, "fp32", batch_size=2)
    out = runner.fuse_batch(*(torch.from_numpy(golden[f"gray_{k}"]).to(CUDA) for k in ("vi", "ir", "text")))
    reference = np.clip(golden["gray_out"], 0, 1)
    assert rel_l2(out.cpu().numpy(), reference) <= 1e-4
