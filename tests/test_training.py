"""`upfusion train`: a short run writes loadable weights, resumes where it stopped, and keeps the prompt table."""

from __future__ import annotations

import json

import torch

from napari_upfusion.cli import main
from napari_upfusion.model import get_config, load_model
from napari_upfusion.model.text import DEFAULT_PROMPTS
from napari_upfusion.training.loop import prompt_table_codes


def _train(out, steps: int) -> int:
    return main(["train", str(out), "--steps", str(steps), "--batch-size", "2", "--crop", "64",
                 "--threads", "1", "--save-every", "2", "--log-every", "1"])  # fmt: skip


def test_short_run_writes_weights_that_load_and_resumes(tmp_path):
    assert _train(tmp_path, 2) == 0
    first = load_model(tmp_path / "upfusion_small.safetensors")
    assert _train(tmp_path, 3) == 0  # continues from last.pt at step 2
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in history)
    second = load_model(tmp_path / "upfusion_small.safetensors")
    changed = [n for n, p in second.state_dict().items() if not torch.equal(p, first.state_dict()[n])]
    assert changed and not any(n.startswith("scpm.backbone.") for n in changed)  # the backbone stays frozen
    codes = prompt_table_codes(get_config("small").prompts, 512, 2026)
    assert torch.allclose(second.prompt_codes, codes.half().float())


def test_authors_prompt_shares_the_generic_code():
    """The authors' prompt is never shown in training, so it must select a channel order that was."""
    prompts = get_config("small").prompts
    codes = prompt_table_codes(prompts, 512, 2026)
    row = {p: i for i, p in enumerate(prompts)}
    assert torch.equal(codes[row[DEFAULT_PROMPTS["authors"]]], codes[row[DEFAULT_PROMPTS["generic"]]])
    trained = [DEFAULT_PROMPTS[k] for k in ("MRI-CT", "MRI-PET", "MRI-SPECT", "IR-VIS", "generic")]
    assert len({tuple(codes[row[p]].tolist()) for p in trained}) == len(trained)
    shipped = load_model("small").prompt_codes
    assert torch.equal(shipped[row[DEFAULT_PROMPTS["authors"]]], shipped[row[DEFAULT_PROMPTS["generic"]]])
