"""`upfusion train`: a short run writes loadable weights, resumes where it stopped, and keeps the prompt table."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from napari_upfusion.cli import main
from napari_upfusion.model import bundled_weights, create_model, get_config, load_model
from napari_upfusion.model.checkpoint.io import read_checkpoint_file
from napari_upfusion.model.text.prompts import DEFAULT_PROMPTS
from napari_upfusion.training.loop import TrainSettings, _learning_rate, initialise_from, prompt_table_codes
from napari_upfusion.training.loss import edges_loss, edges_targets, fusion_loss, sobel


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


def test_a_run_stopped_early_on_a_longer_schedule_follows_that_schedule():
    """``schedule_steps`` lets a run stop at ``steps`` with the learning rates of a longer run (resumes continue it)."""
    long_run, stopped, short_run = (
        TrainSettings(steps=1000),
        TrainSettings(steps=300, schedule_steps=1000),
        TrainSettings(steps=300),
    )
    for step in (0, 199, 250, 299):
        assert _learning_rate(step, stopped) == _learning_rate(step, long_run)
    assert _learning_rate(299, short_run) == pytest.approx(short_run.min_lr, rel=1e-2)
    assert _learning_rate(299, stopped) > 10 * short_run.min_lr


def test_schedule_steps_reach_the_recorded_settings(tmp_path):
    argv = ["train", str(tmp_path), "--steps", "1", "--schedule-steps", "40", "--batch-size", "1", "--crop", "32",
            "--threads", "1", "--log-every", "1"]  # fmt: skip
    assert main(argv) == 0
    _, metadata = read_checkpoint_file(tmp_path / "upfusion_small.safetensors")
    recorded = json.loads(metadata["training"])
    assert (recorded["steps"], recorded["schedule_steps"], recorded["crop"]) == (1, 40, 32)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--steps", "0", "--steps must be a whole number of at least 1, not '0'"),
        ("--schedule-steps", "-5", "--schedule-steps must be a whole number of at least 0"),
        ("--crop", "100", "--crop must be a whole number of at least 32 and a multiple of 8, not '100'"),
        ("--batch-size", "two", "--batch-size must be a whole number of at least 1"),
    ],
)
def test_bad_training_numbers_are_one_sentence(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(tmp_path / "run"), flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _activity_pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` textured on the left half and flat on the right, ``b`` the other way round."""
    generator = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 1, size, size, generator=generator)
    left = torch.zeros(1, 1, size, size)
    left[..., : size // 2] = 1
    a = 0.3 + 0.4 * texture * left
    b = 0.5 + 0.4 * texture.flip(-1) * (1 - left)
    return a, b


def test_edges_targets_take_each_region_from_the_more_active_source():
    a, b = _activity_pair(48)
    target, gx, gy = edges_targets(a, b, sigma=1.0, sigma_weight=1.0)
    left, right = (..., slice(3, -3), slice(3, 18)), (..., slice(3, -3), slice(30, 45))  # off the seam and border
    (ax, ay), (bx, by) = sobel(a), sobel(b)
    assert torch.equal(gx[left], ax[left]) and torch.equal(gy[left], ay[left])
    assert torch.equal(gx[right], bx[right]) and torch.equal(gy[right], by[right])
    # intensity: half the maximum, half the texture of the active source (a on the left, b on the right)
    torch.testing.assert_close(target[left], (torch.maximum(a, b)[left] + a[left]) / 2, atol=1e-2, rtol=0)
    torch.testing.assert_close(target[right], (torch.maximum(a, b)[right] + b[right]) / 2, atol=1e-2, rtol=0)
    assert (target[left] - torch.maximum(a, b)[left]).abs().mean() > 0.02  # not the maximum's patchwork


def test_edges_loss_sees_the_direction_of_edges_that_the_authors_loss_does_not():
    """Edges of the right strength but the opposite sign cost the authors' gradient term only at the zero-padded
    border; the direction-aware term sees every one of them."""
    x = torch.linspace(0, math.pi, 64)
    a = (0.5 + 0.3 * torch.sin(3 * x)[None, :] * torch.sin(x)[:, None]).expand(1, 1, 64, 64).contiguous()
    b = torch.full_like(a, 0.5)
    right, flipped = a, 1 - a  # 1 - a: the same gradient magnitudes everywhere inside, opposite directions
    authors = float(fusion_loss(a, b, flipped)["gradient"])
    edges = [float(edges_loss(a, b, f)["gradient"]) for f in (right, flipped)]
    assert edges[1] > 10 * authors and edges[0] < 0.05 * edges[1]
    assert float(edges_loss(a, b, flipped)["ssim"]) == pytest.approx(float(fusion_loss(a, b, flipped)["ssim"]))


def test_warm_start_copies_fitting_tensors_and_a_random_backbone_is_stored(tmp_path):
    """--init-from takes every tensor that fits except the backbone; --random-backbone keeps it in the file."""
    argv = ["train", str(tmp_path), "--steps", "1", "--batch-size", "1", "--crop", "32", "--threads", "1",
            "--loss", "edges", "--init-from", "bundled", "--random-backbone", "--anatomies", "mni152"]  # fmt: skip
    assert main(argv) == 0
    content, metadata = read_checkpoint_file(tmp_path / "upfusion_small.safetensors")
    recorded = json.loads(metadata["training"])
    assert recorded["loss"] == "edges" and recorded["random_backbone"] and recorded["anatomies"] == ["mni152"]
    assert any(k.startswith("scpm.backbone.") for k in content)  # random: part of the weights
    model = create_model(dataclasses.replace(get_config("small"), backbone_weights=None))
    copied, skipped = initialise_from(model, bundled_weights("small"))
    assert "embed_a.weight" in copied and not any(k.startswith("scpm.backbone.") for k in copied)
    assert any(k.startswith("scpm.backbone.") for k in skipped)
    own = load_model("small").state_dict()
    assert torch.equal(model.state_dict()["embed_a.weight"], own["embed_a.weight"])


def test_a_clip_conditioned_config_trains_with_the_clip_code_of_the_authors_prompt(tmp_path, tiny_config, random_clip):
    """As the authors' Train.py: one CLIP code, of AUTHORS_PROMPT, for every pair; the weights then fuse with it."""

    from napari_upfusion import FusionEngine
    from napari_upfusion.model.text.prompts import AUTHORS_PROMPT

    clip_path, _ = random_clip
    config = tmp_path / "tiny_clip.json"
    fields = {k: v for k, v in dataclasses.asdict(tiny_config).items() if k != "name"}
    config.write_text(json.dumps(fields))
    argv = ["train", str(tmp_path / "run"), "--config", str(config), "--steps", "1", "--batch-size", "2",
            "--crop", "32", "--threads", "1", "--log-every", "1", "--clip-weights", str(clip_path)]  # fmt: skip
    assert main(argv) == 0
    weights = tmp_path / "run" / "upfusion_tiny_clip.safetensors"
    _, metadata = read_checkpoint_file(weights)
    code = json.loads(metadata["text_code"])
    assert code["prompt"] == AUTHORS_PROMPT and code["dtype"] == "fp16"
    assert code["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert json.loads(metadata["config"])["text_encoder"] == "clip-vit-b-32"
    # the trained weights fuse with their own prompt by default, and say so
    engine = FusionEngine(str(weights), device="cpu", clip_weights=clip_path)
    image = torch.rand(40, 48).numpy()
    info = engine.fuse(image, image[::-1].copy(), modalities=("VIS", "IR")).info
    assert info["prompt"] == AUTHORS_PROMPT and info["prompt_trained"] is True


def test_training_the_paper_config_without_clip_is_one_sentence(tmp_path, capsys):
    """No CLIP weights and no cached code: exit 2 with one sentence, before any model is built or file written."""
    assert main(["train", str(tmp_path / "run"), "--config", "paper", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("upfusion: error: Training the CLIP-conditioned 'paper' config needs the CLIP code")
    assert "upfusion download clip" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert main(["train", str(tmp_path / "run"), "--config", "nope"]) == 2
    assert "no model config named 'nope'" in capsys.readouterr().err


def test_data_workers_give_the_same_stream_and_weights(tmp_path):
    """--workers generates pairs in other processes; batch k is the same pairs, so training is identical."""
    def run(out, workers):
        assert main(["train", str(out), "--steps", "2", "--batch-size", "2", "--crop", "32", "--threads", "1",
                     "--log-every", "1", "--workers", str(workers), "--anatomies", "mni152"]) == 0  # fmt: skip
        return [json.loads(line)["total"] for line in (out / "history.jsonl").read_text().splitlines()]

    assert run(tmp_path / "inline", 0) == run(tmp_path / "workers", 2)
    first, second = (read_checkpoint_file(tmp_path / n / "upfusion_small.safetensors")[0] for n in ("inline", "workers"))
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_training_on_a_missing_gpu_is_one_sentence(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert main(["train", str(tmp_path / "run"), "--steps", "1", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA was requested but no CUDA GPU is available" in err and "Traceback" not in err


def test_a_time_limit_ends_the_run_early_with_loadable_weights(tmp_path):
    assert main(["train", str(tmp_path), "--steps", "50", "--batch-size", "1", "--crop", "32", "--threads", "1",
                 "--log-every", "10", "--time-limit", "1", "--anatomies", "mni152"]) == 0  # fmt: skip
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    _, metadata = read_checkpoint_file(tmp_path / "upfusion_small.safetensors")
    assert 1 <= history[-1]["step"] < 50 and int(metadata["steps"]) == history[-1]["step"]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == history[-1]["step"]
