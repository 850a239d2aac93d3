"""Issue 17, classes 3 and 4: a checkpoint's metadata is untrusted input.  Its config is checked against one schema
before anything is built, its tensors must be finite floats, nothing in it can make timm or huggingface_hub reach
the network, and a network whose results are not finite is named."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from hostile import no_network, pair, refused
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from napari_upfusion.errors import CheckpointError
from napari_upfusion.model import UPFusion, UPFusionConfig, create_model, load_model, save_checkpoint
from napari_upfusion.model.backbones import SUPPORTED_BACKBONES, build_backbone
from napari_upfusion.model.upfusion import CONFIG_LIMITS, check_config


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny_config) -> tuple[dict, dict]:
    """The tensors and metadata of a real tiny checkpoint, to be tampered with."""
    torch.manual_seed(0)
    path = save_checkpoint(create_model(tiny_config).eval(), tmp_path_factory.mktemp("tiny") / "tiny.safetensors")
    with safe_open(str(path), "pt") as handle:
        meta = dict(handle.metadata())
    return load_file(str(path)), meta


def _tampered(folder: Path, tiny_file, state=None, config: str | None = None, **changes) -> Path:
    tensors, meta = tiny_file
    meta = dict(meta)
    if config is None:
        fields = json.loads(meta["config"])
        fields.update(changes)
        config = json.dumps(fields)
    meta["config"] = config
    path = folder / "hostile.safetensors"
    save_file(state if state is not None else tensors, str(path), metadata=meta)
    return path


@pytest.fixture()
def nothing_built(monkeypatch):
    """Building a network fails loudly: a refusal that comes first came before any work."""

    def built(*args, **kwargs):
        raise AssertionError("a network was built from an unchecked config")

    monkeypatch.setattr(UPFusion, "__init__", built)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"backbone": "hf-hub:someone/model"}, r"backbone 'hf-hub:someone/model' is not one this tool builds"),
        ({"backbone": "timm/convnext_atto.d2_in1k"}, r"backbone 'timm/convnext_atto\.d2_in1k' is not one this tool"),
        ({"backbone": "no_such_network"}, r"backbone 'no_such_network' is not one this tool builds; use one of "),
        ({"num_blocks": [100000, 1, 1, 1]}, r"num_blocks must be whole numbers from 0 to 32, not \(100000, 1, 1, 1\)"),
        ({"num_blocks": [1, 1, 1]}, r"num_blocks needs one entry for each of the 4 levels"),
        ({"num_blocks": 5}, r"num_blocks must be a list, not 5"),
        ({"heads": [0, 1, 2, 2]}, r"heads must be whole numbers from 1 to 64"),
        ({"heads": [3, 1, 2, 2]}, r"level 1 has 8 channels, not divisible by 3 heads"),
        ({"dim": -8}, r"dim must be a whole number from 2 to 512, not -8"),
        ({"dim": 0}, r"dim must be a whole number from 2 to 512"),
        ({"dim": "8"}, r"dim must be a whole number from 2 to 512, not '8'"),
        ({"dim": 8.0}, r"dim must be a whole number"),
        ({"dim": True}, r"dim must be a whole number"),
        ({"dim": 10**6}, r"dim must be a whole number from 2 to 512"),
        ({"num_refinement_blocks": 10**5}, r"num_refinement_blocks must be a whole number from 0 to 32"),
        ({"ffn_expansion_factor": 0}, r"ffn_expansion_factor must be a number in \(0, 8\]"),
        ({"ffn_expansion_factor": 1e9}, r"ffn_expansion_factor must be a number in \(0, 8\]"),
        ({"scpm_keep_ratio": 2.0}, r"scpm_keep_ratio must be a number in \(0, 1\]"),
        ({"attn_topk_ratio": 0.01}, r"level 1 would have attention's top-k of 0"),
        ({"backbone_input_size": 10**6}, r"backbone_input_size must be a whole number from 32 to 1024"),
        ({"text_dim": 10**7}, r"text_dim must be a whole number from 1 to 4096"),
        ({"text_dim": 256}, r"text_dim must be 512 for CLIP ViT-B/32 codes"),
        ({"text_encoder": "gpt-4"}, r"unknown text_encoder 'gpt-4'"),
        ({"backbone_weights": "/etc/passwd"}, r"backbone_weights '/etc/passwd' is not a known source"),
        ({"prompts": ["x"] * 5000}, r"prompts must be at most 1024 texts"),
        ({"pad_multiple": 12}, r"pad_multiple must be a whole number from 8 to 64|multiple of 8"),
        ({"name": "../../outside"}, r"name must be a plain name"),
        ({"bias": "yes"}, r"bias must be true or false"),
        ({"exec": "import os"}, r"unknown UP-Fusion config fields: exec"),
        ({"dim": 512, "num_blocks": [32, 32, 32, 32]}, r"about .* parameters, more than the 1e\+09 this tool builds"),
    ],
)
def test_hostile_configs_are_refused_before_anything_is_built(tmp_path, tiny_file, monkeypatch, nothing_built,
                                                              changes, message):  # fmt: skip
    path = _tampered(tmp_path, tiny_file, **changes)
    with no_network(monkeypatch) as attempts, pytest.raises(CheckpointError) as caught:
        load_model(path)
    text = str(caught.value)
    assert text.startswith(f"'{path}' has an unusable UP-Fusion config in its metadata (")
    assert re.search(message, text), text
    assert text.endswith("so nothing was built or loaded; use a checkpoint written by this tool or the authors' Fuse.pth.")
    assert attempts == []


@pytest.mark.parametrize("config", ["[1, 2, 3]", "not json at all", '"a string"', "[" * 100000 + "]" * 100000])
def test_config_metadata_that_is_not_a_mapping_is_refused(tmp_path, tiny_file, nothing_built, config):
    with pytest.raises(CheckpointError, match="has an unusable UP-Fusion config in its metadata"):
        load_model(_tampered(tmp_path, tiny_file, config=config))


def test_a_checkpoint_of_ours_without_its_config_entry_says_so(tmp_path, tiny_file, nothing_built):
    tensors, meta = tiny_file
    path = tmp_path / "no_config.safetensors"
    save_file(tensors, str(path), metadata={k: v for k, v in meta.items() if k != "config"})
    with pytest.raises(CheckpointError, match=r"metadata \(it has no 'config' entry\), so nothing was built"):
        load_model(path)


def test_the_issues_hub_backbone_never_reaches_the_network_on_the_command_line(tmp_path, tiny_file, monkeypatch,
                                                                              capsys):  # fmt: skip
    hostile = _tampered(tmp_path, tiny_file, backbone="hf-hub:someone/model")
    a, b = pair(tmp_path / "in")
    with no_network(monkeypatch) as attempts:
        refused(["fuse", a, b, "-o", tmp_path / "f.nii.gz", "--checkpoint", hostile], capsys,
                r"not one this tool builds", tmp_path)  # fmt: skip
        with pytest.raises(CheckpointError, match="not one this tool builds"):
            build_backbone("hf-hub:timm/convnext_atto.d2_in1k")
    assert attempts == []


def test_every_supported_backbone_is_built_offline(monkeypatch):
    with no_network(monkeypatch) as attempts:
        for name in SUPPORTED_BACKBONES:
            assert build_backbone(name).num_features > 0
        assert load_model("small") is not None  # its pretrained backbone comes from an installed package
    assert attempts == []


def test_integer_tensors_and_nan_weights_are_refused(tmp_path, tiny_file):
    tensors, _ = tiny_file
    quantised = {k: (v * 100).to(torch.int8) if k.endswith("weight") else v for k, v in tensors.items()}
    with pytest.raises(CheckpointError, match=r"holds tensors of type int8 \(.*\), but UP-Fusion weights are "
                       r"floating-point numbers, so nothing was loaded"):
        load_model(_tampered(tmp_path, tiny_file, state=quantised))
    damaged = dict(tensors)
    damaged["output.weight"] = torch.full_like(tensors["output.weight"], float("nan"))
    with pytest.raises(CheckpointError, match=rf"holds {tensors['output.weight'].numel()} non-finite weights \(NaN "
                       r"or infinite\) in output\.weight, so nothing was loaded; the file is damaged"):
        load_model(_tampered(tmp_path, tiny_file, state=damaged))


def test_nan_weights_on_the_command_line_name_the_checkpoint(tmp_path, tiny_file, capsys):
    tensors, _ = tiny_file
    damaged = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    hostile = _tampered(tmp_path, tiny_file, state=damaged)
    a, b = pair(tmp_path / "in")
    refused(["fuse", a, b, "-o", tmp_path / "f.nii.gz", "--checkpoint", hostile], capsys,
            rf"'{hostile}' holds \d+ non-finite weights", tmp_path)  # fmt: skip


def test_runtime_hints_are_bounded(tmp_path, tiny_file):
    tensors, meta = tiny_file
    path = tmp_path / "hints.safetensors"
    save_file(tensors, str(path), metadata={**meta, "runtime": json.dumps({"cpu_streams": 100000})})
    with pytest.raises(CheckpointError, match=r"unreadable runtime hints .*cpu_streams must be a whole number from 1 "
                       r"to 64"):
        load_model(path)


# ---------------------------------------------------------------------- the schema, generated
#: Values past a bound or a constraint of the schema, by field.
_HOSTILE = {
    "name": ["", "a b", "../x", 7],
    "dim": [-4, 0, 3, 513, 700, 8.0, "8", True],
    "num_blocks": [[1, 1, 1], [-1, 1, 1, 1], [33, 1, 1, 1], [100000, 1, 1, 1], "1111", 4],
    "num_refinement_blocks": [-2, 33, 1.5],
    "heads": [[0, 1, 1, 1], [3, 1, 1, 1], [65, 1, 1, 1], [1, 1, 1]],
    "ffn_expansion_factor": [0.0, -1.0, 9.0, float("nan"), float("inf"), "2"],
    "backbone": ["hf-hub:x/y", "timm/convnext_atto", "resnet18", ""],
    "backbone_input_size": [0, 16, 31, 1025, 5000],
    "scpm_keep_ratio": [0.0, 1.5, -0.1],
    "scpm_reduction": [0, 10**6],
    "tcpm_reduction": [0, 10**6],
    "attn_topk_ratio": [0.0, 0.001, 2.0],
    "text_dim": [0, 10**5, 16],
    "text_encoder": ["bert", None],
    "prompts": [["x"] * 2000, ["y" * 5000], "abc"],
    "pad_multiple": [0, 4, 12, 128],
}


@st.composite
def configs(draw) -> dict:
    """A config the schema should accept (small enough to build and run), or, half of the time, the same with one
    field made hostile."""
    dim = draw(st.sampled_from([2, 4, 6, 8, 12, 16]))
    heads = [draw(st.sampled_from([h for h in (1, 2, 4) if (dim * 2**level) % h == 0])) for level in range(4)]
    prompt_table = draw(st.booleans())
    fields = {
        "name": draw(st.sampled_from(["t", "tiny-2", "x.1"])),
        "dim": dim,
        "num_blocks": draw(st.lists(st.integers(0, 2), min_size=4, max_size=4)),
        "num_refinement_blocks": draw(st.integers(0, 1)),
        "heads": heads,
        "ffn_expansion_factor": draw(st.floats(0.5, 3)),
        "backbone": "convnext_atto",
        "backbone_input_size": draw(st.sampled_from([32, 40])),
        "scpm_keep_ratio": draw(st.floats(0.5, 1)),
        "scpm_reduction": draw(st.integers(1, dim)),
        "tcpm_keep_ratio": draw(st.floats(0.25, 1)),
        "tcpm_reduction": draw(st.integers(1, 2 * dim)),
        "attn_topk_ratio": draw(st.floats(0.5, 1)),
        "text_dim": draw(st.sampled_from([8, 32])) if prompt_table else 512,
        "text_encoder": "prompt-table" if prompt_table else "clip-vit-b-32",
        "prompts": draw(st.lists(st.text(max_size=8), min_size=1, max_size=3)) if prompt_table else [],
    }
    if draw(st.booleans()):
        field = draw(st.sampled_from(sorted(_HOSTILE)))
        fields[field] = draw(st.sampled_from(_HOSTILE[field]))
    return fields


@settings(max_examples=15, deadline=None)
@given(fields=configs())
def test_a_config_the_schema_accepts_builds_and_runs(fields):
    """The schema is sufficient: whatever it accepts builds and fuses a 16 x 16 pair with finite output; whatever
    it refuses is refused with ValueError or TypeError (one clause), never another exception."""
    try:
        config = UPFusionConfig.from_dict(fields)
    except (ValueError, TypeError) as error:
        assert str(error) and "\n" not in str(error)
        event("refused")
        return
    event("built")
    for name, (low, high) in CONFIG_LIMITS.items():
        values = getattr(config, name)
        assert all(low <= v <= high for v in (values if isinstance(values, tuple) else (values,)))
    torch.manual_seed(0)
    model = UPFusion(config).eval()
    code = torch.rand(1, config.text_dim)
    with torch.no_grad():
        out = model(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16), code)
    assert out.shape == (1, 1, 16, 16) and torch.isfinite(out).all()


def test_the_named_configs_pass_the_schema():
    from napari_upfusion.model.factory import get_config, list_configs

    for name in list_configs():
        check_config(get_config(name))
    with pytest.raises(ValueError, match="dim must be even"):
        dataclasses.replace(get_config("small"), dim=18 + 1)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_JSON, field=st.sampled_from([f.name for f in dataclasses.fields(UPFusionConfig)]))
def test_any_json_value_in_any_field_is_one_clause(tiny_config, value, field):
    fields = {**dataclasses.asdict(tiny_config), field: value}
    try:
        UPFusionConfig.from_dict(fields)
    except (ValueError, TypeError) as error:
        assert str(error)
