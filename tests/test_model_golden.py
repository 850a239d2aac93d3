"""The network is the authors' network, number for number (see tests/data and ../shared/golden)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DATA, rel_l2

from napari_upfusion.engine.runner import SliceRunner
from napari_upfusion.model import get_config

TOL = 1e-4


def test_patterned_checkpoint_accounts_for_every_tensor(paper_model):
    manifest = json.loads((DATA / "official_state_dict_manifest.json").read_text())
    keys = [k for k, _ in manifest["tensors"]]
    report = paper_model.load_report
    assert report.layout == "authors" and report.config == "paper"
    assert report.total == len(keys) == 1486
    assert sorted(report.ignored) == sorted(k for k in keys if "_gt." in k)
    assert len(report.loaded) == len(paper_model.state_dict())


def test_paper_config_matches_manifest_shapes(paper_model):
    """Every mapped tensor has the shape the released checkpoint lists."""
    from napari_upfusion.model import convert_authors_state_dict

    manifest = json.loads((DATA / "official_state_dict_manifest.json").read_text())
    fake = {k: torch.empty(shape) for k, shape in manifest["tensors"]}
    mapped, _, unknown = convert_authors_state_dict(fake)
    assert not unknown
    ours = paper_model.state_dict()
    assert set(mapped) == set(ours)
    assert all(tuple(mapped[k].shape) == tuple(ours[k].shape) for k in ours)


@pytest.mark.parametrize("case", ["gray", "rgb"])
def test_forward_matches_reference(paper_model, golden, case):
    with torch.no_grad():
        out = paper_model(
            torch.from_numpy(golden[f"{case}_vi"]),
            torch.from_numpy(golden[f"{case}_ir"]),
            torch.from_numpy(golden[f"{case}_text"]),
        )
    assert out.shape == golden[f"{case}_out"].shape
    assert rel_l2(out.numpy(), golden[f"{case}_out"]) <= TOL
    assert rel_l2(out.numpy(), golden[f"{case}_out_fp64"]) <= TOL


def test_pipeline_semantics_match_reference(paper_model, golden):
    """Reflect-pad bottom/right to a multiple of 8, forward, clamp to [0, 1], crop back."""
    runner = SliceRunner(paper_model, torch.device("cpu"), "fp32")
    out = runner.fuse_batch(
        torch.from_numpy(golden["pipe_vi"]), torch.from_numpy(golden["pipe_ir"]), torch.from_numpy(golden["pipe_text"])
    )
    assert out.shape == golden["pipe_out"].shape == (1, 1, 61, 75)
    assert rel_l2(out.numpy(), golden["pipe_out"]) <= TOL


# authors' module name -> ours
STAGES = {
    "channel_select": "scpm",
    "GEO_vi": "gam_a",
    "GEO_ir": "gam_b",
    "encoder_level1_vi": "encoder_a.0",
    "latent_shuffle_channel": "tcpm.3",
    "encoder_shuffle_channel3": "tcpm.2",
    "encoder_shuffle_channel1": "tcpm.0",
    "decoder_level1": "decoder.2",
}


def test_every_stage_matches_reference(paper_model, golden):
    captured = {}
    modules = dict(paper_model.named_modules())
    hooks = [
        modules[ours].register_forward_hook(lambda m, i, o, name=theirs: captured.setdefault(name, o.detach()))
        for theirs, ours in STAGES.items()
    ]
    try:
        with torch.no_grad():
            paper_model(
                torch.from_numpy(golden["gray_vi"][:1]),
                torch.from_numpy(golden["gray_ir"][:1]),
                torch.from_numpy(golden["gray_text"][:1]),
            )
    finally:
        for hook in hooks:
            hook.remove()
    for theirs in STAGES:
        assert rel_l2(captured[theirs].numpy(), golden[f"gray_inter_{theirs}"]) <= TOL, theirs


def test_unused_branches_are_not_built(paper_model):
    names = [n for n, _ in paper_model.named_modules()]
    assert not any("gt" in n.split(".")[-1] for n in names)
    assert get_config("paper").num_blocks == (4, 6, 6, 8)


def test_forward_passes_no_gradient_into_frozen_backbone(paper_model):
    assert not any(p.requires_grad for p in paper_model.scpm.backbone.parameters())
    assert not paper_model.scpm.backbone.training
